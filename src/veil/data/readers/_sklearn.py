"""The data sets bundled inside scikit-learn (no download), with a fixed train/test split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.data.readers._base import Declaration, Reader
from veil.errors import InvalidInputError, NotFoundError
from veil.progress import ProgressCallback

__all__ = [
    "SKLEARN_DATASETS",
    "SKLEARN_SPLITS",
    "SKLEARN_TARGETS",
    "SKLEARN_TEST_SHARE",
    "SklearnReader",
    "sklearn_split_rows",
]

SKLEARN_DATASETS = ("breast_cancer", "diabetes", "digits", "iris", "wine")
SKLEARN_TARGETS = {
    "breast_cancer": "diagnosis",
    "diabetes": "progression",
    "digits": "digit",
    "iris": "species",
    "wine": "cultivar",
}


SKLEARN_SPLITS = ("all", "train", "test")
SKLEARN_TEST_SHARE = 1 / 3


def sklearn_split_rows(n_rows: int, split: str) -> npt.NDArray[np.int64]:
    """The rows of a fixed, documented split of a bundled set.

    A permutation from ``numpy.random.default_rng(0)``; the first two thirds are
    ``train``, the rest ``test``; each split keeps the original row order. The
    seed makes the split reproducible: it is a partition, not a privacy mechanism.
    """
    if split == "all":
        return np.arange(n_rows)
    order = np.random.default_rng(0).permutation(n_rows)
    cut = n_rows - round(n_rows * SKLEARN_TEST_SHARE)
    return np.sort(order[:cut] if split == "train" else order[cut:])


class SklearnReader(Reader):
    """A data set bundled inside scikit-learn (no download): ``sklearn:NAME``.

    ``split`` is ``all`` (default), or ``train`` / ``test``: a fixed two-thirds /
    one-third partition (:func:`sklearn_split_rows`), so that a model can be
    trained on one part and tested or audited on the other.
    """

    format = "sklearn"

    def __init__(self, name: str, *, split: str = "all") -> None:
        if split not in SKLEARN_SPLITS:
            raise InvalidInputError(
                "unknown split of a bundled scikit-learn set",
                expected=" | ".join(SKLEARN_SPLITS),
                got=repr(split),
                fix="pass --split all, train or test",
            )
        self.split = split
        if name not in SKLEARN_DATASETS:
            raise NotFoundError(
                f"no bundled scikit-learn data set named '{name}'",
                expected="sklearn:" + " | sklearn:".join(SKLEARN_DATASETS),
                got=f"sklearn:{name}",
                fix="pick one of the names above",
            )
        self.name = name
        self._frame: pd.DataFrame | None = None

    @property
    def source(self) -> str:
        return f"sklearn:{self.name}"

    def _load(self) -> pd.DataFrame:
        if self._frame is None:
            from sklearn import datasets  # noqa: PLC0415 - heavy import, only when needed

            loader = getattr(datasets, f"load_{self.name}")
            # Diabetes: the raw (unscaled) values, so age and sex mean what they say.
            bunch = (
                loader(as_frame=True, scaled=False)
                if self.name == "diabetes"
                else loader(as_frame=True)
            )
            frame = bunch.frame.copy()
            target = SKLEARN_TARGETS[self.name]
            frame = frame.rename(columns={"target": target})
            if self.name == "digits":
                frame[target] = frame[target].astype(str)
            elif self.name != "diabetes":
                names = [str(n) for n in bunch.target_names]
                frame[target] = [names[int(i)] for i in frame[target]]
            rows = sklearn_split_rows(len(frame), self.split)
            self._frame = frame.iloc[rows].reset_index(drop=True)
        return self._frame

    def load_options(self) -> dict[str, Any]:
        return {} if self.split == "all" else {"split": self.split}

    def columns(self) -> list[str]:
        return [str(c) for c in self._load().columns]

    def declarations(self) -> dict[str, Declaration]:
        target = SKLEARN_TARGETS[self.name]
        declared: dict[str, Declaration] = {}
        if self.name == "digits":
            # By construction: 8x8 images of counts of set pixels in 4x4 blocks, so 0..16.
            declared = {
                c: Declaration("numeric", bounds=(0.0, 16.0)) for c in self.columns() if c != target
            }
            declared[target] = Declaration(
                "categorical", categories=tuple(str(d) for d in range(10))
            )
        elif self.name != "diabetes":
            from sklearn import datasets  # noqa: PLC0415 - heavy import, only when needed

            names = getattr(datasets, f"load_{self.name}")().target_names
            declared[target] = Declaration("categorical", categories=tuple(str(n) for n in names))
        return declared

    def chunks(self) -> Iterator[pd.DataFrame]:
        yield self._load()

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        frame = self._load()
        return frame[list(columns)].copy() if columns else frame.copy()

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        del progress
        payload = self._load().to_csv(index=False).encode()
        return hashlib.sha256(payload).hexdigest(), len(payload)

    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        return 16 * n_rows * (len(columns) if columns else n_columns)
