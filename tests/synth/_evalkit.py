"""A small stand-in for ``veil.synth.Encoder`` on UCI Adult, for the evaluation's tests.

Categories come from the Adult codebook (veil.data's ADULT_CATEGORIES), numeric
columns are cut into equal-width bins over bounds declared here (not read from
the data); every column has a last "missing" cell, as the contract's encoder has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from veil.data import load_table
from veil.data._adult import ADULT_CATEGORIES, ADULT_COLUMNS

BOUNDS = {
    "age": (17.0, 91.0),
    "fnlwgt": (0.0, 1_500_000.0),
    "education_num": (1.0, 17.0),
    "capital_gain": (0.0, 100_000.0),
    "capital_loss": (0.0, 4_500.0),
    "hours_per_week": (1.0, 100.0),
}


@dataclass(frozen=True)
class AdultCodes:
    bins: int = 16
    columns: tuple[str, ...] = ADULT_COLUMNS

    @property
    def sizes(self) -> dict[str, int]:
        return {
            c: (len(ADULT_CATEGORIES[c]) if c in ADULT_CATEGORIES else self.bins) + 1
            for c in self.columns
        }

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for c in self.columns:
            if c in ADULT_CATEGORIES:
                cats = ADULT_CATEGORIES[c]
                codes = pd.Categorical(frame[c], categories=cats).codes.astype(np.int64)
                out[c] = np.where(codes < 0, len(cats), codes)
            else:
                lo, hi = BOUNDS[c]
                values = frame[c].to_numpy(dtype=np.float64)
                cut = np.clip(
                    ((values - lo) / (hi - lo) * self.bins).astype(np.int64), 0, self.bins - 1
                )
                out[c] = np.where(np.isnan(values), self.bins, cut)
        return pd.DataFrame(out, index=frame.index)


def load_adult(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """adult.data and adult.test as frames (index reset)."""
    train = load_table(shared_data / "adult" / "adult.data", "adult").reset_index(drop=True)
    test = load_table(shared_data / "adult" / "adult.test", "adult").reset_index(drop=True)
    return train, test


def two_way(columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [(a, b) for i, a in enumerate(columns) for b in columns[i + 1 :]]
