"""Shared pieces of the veil.synth core tests: small Adult frames, a tiny table, fast settings.

The Adult schema is declared here, never read from the rows: categories from
the codebook (veil.data's ADULT_CATEGORIES), numeric bounds as in
``tests/synth/_evalkit.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.synth._evalkit import BOUNDS

from veil.data import ColumnSpec, PrivacySchema, load_table
from veil.data._adult import ADULT_CATEGORIES
from veil.synth import SynthSettings

# Few rounds and iterations: each fit costs seconds of JAX compilation, not of estimation.
FAST = SynthSettings(rounds=2, iters=10, final_iters=20, sample_rows=2000)
# A few Adult columns, mixed kinds: two bounded integer columns, two categorical ones.
ADULT_SUBSET = ("age", "education_num", "sex", "race", "income")


def adult_schema(columns: tuple[str, ...] = ADULT_SUBSET) -> PrivacySchema:
    """Adult's declared schema for ``columns`` (codebook categories, declared bounds)."""
    return PrivacySchema(
        columns=tuple(
            ColumnSpec(c, "categorical", categories=ADULT_CATEGORIES[c])
            if c in ADULT_CATEGORIES
            else ColumnSpec(c, "numeric", bounds=BOUNDS[c])
            for c in columns
        )
    )


TINY_SCHEMA = PrivacySchema(
    columns=(
        ColumnSpec("x", "numeric", bounds=(0.0, 4.0)),
        ColumnSpec("c", "categorical", categories=("a", "b", "c")),
        ColumnSpec("y", "numeric", bounds=(0.0, 10.0)),
    )
)


def tiny_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A 3-column table of ``TINY_SCHEMA``: x whole numbers 0..4, c in a/b/c, y real in [0, 10]."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, n)
    # c depends on x, so that a 2-way marginal carries something one-ways do not.
    c = np.where(x >= 3, "a", rng.choice(["b", "c"], n))
    return pd.DataFrame({"x": x, "c": c, "y": rng.uniform(0.0, 10.0, n)})


@pytest.fixture(scope="session")
def adult_rows(shared_data: Path) -> pd.DataFrame:
    """2,000 rows of adult.data (a fixed random choice), the subset's columns."""
    frame = load_table(shared_data / "adult" / "adult.data", "adult")
    order = np.random.default_rng(26).permutation(len(frame))[:2000]
    return frame.iloc[np.sort(order)][list(ADULT_SUBSET)].reset_index(drop=True)
