"""The privacy constraints an anonymisation must meet: k-anonymity, l-diversity, t-closeness.

One :class:`Constraints` object checks a set of records (a candidate
equivalence class) against all three at once, so that Mondrian and the
full-domain search enforce them identically. l is *distinct* l-diversity
(at least l different sensitive values per class); t is the Earth mover's
distance of the class's sensitive distribution to the whole table's, ordered
for numeric attributes and equal-distance for categorical ones, as
:func:`veil.anonymize.t_closeness` measures it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil._validate import whole_number
from veil.errors import InvalidInputError

__all__ = ["Constraints"]


class Constraints:
    """k, l and t for one table (module docstring).

    Args:
        k: Smallest class size (>= 1).
        records: Number of records of the table.
        l: Fewest distinct sensitive values per class, or ``None``.
        t: Largest EMD to the table's sensitive distribution, or ``None``.
        sensitive: The sensitive column (needed for ``l`` and ``t``).
    """

    def __init__(
        self,
        k: int,
        records: int,
        *,
        l: int | None = None,  # noqa: E741 - the name of the model
        t: float | None = None,
        sensitive: pd.Series | None = None,
    ) -> None:
        k = whole_number(
            k,
            "k",
            message="k must be at least 1",
            expected="k >= 1",
            fix="use --k 5 or more",
            numpy=True,
        )
        if k > records:
            raise InvalidInputError(
                "k is larger than the table",
                expected=f"k <= {records} (the number of records)",
                got=str(k),
                fix="lower k, or anonymise a larger table",
            )
        if (l is not None or t is not None) and sensitive is None:
            raise InvalidInputError(
                "l-diversity and t-closeness need a sensitive attribute",
                expected="--sensitive COLUMN",
                got="none",
                fix="name the sensitive column",
            )
        self.k = k
        self.l = l
        self.t = t
        self.codes: npt.NDArray[np.int64] = np.zeros(records, dtype=np.int64)
        self.m = 1
        self.ordered = False
        self.overall: npt.NDArray[np.float64] = np.ones(1)
        if sensitive is not None:
            if sensitive.isna().any():
                raise InvalidInputError(
                    "the sensitive attribute has missing values",
                    expected="a value in every row",
                    got=f"{int(sensitive.isna().sum())} missing",
                    fix="drop those rows first",
                )
            codes, uniques = pd.factorize(sensitive, sort=True)
            self.codes = codes.astype(np.int64)
            self.m = len(uniques)
            self.ordered = bool(pd.api.types.is_numeric_dtype(sensitive))
            self.overall = np.bincount(self.codes, minlength=self.m) / records
        if l is not None and (l < 1 or l > self.m):
            raise InvalidInputError(
                "l cannot be met",
                expected=f"1 <= l <= {self.m} (the distinct sensitive values)",
                got=str(l),
                fix="lower l",
            )
        if t is not None and not 0 <= t <= 1:
            raise InvalidInputError(
                "t must be between 0 and 1", expected="0 <= t <= 1", got=str(t), fix="e.g. --t 0.2"
            )

    def emd(self, idx: npt.NDArray[np.int64]) -> float:
        """EMD of the records' sensitive distribution to the table's."""
        if self.m < 2:  # noqa: PLR2004
            return 0.0
        p = np.bincount(self.codes[idx], minlength=self.m) / idx.size
        diff = p - self.overall
        if self.ordered:
            return float(np.abs(np.cumsum(diff)).sum() / (self.m - 1))
        return float(0.5 * np.abs(diff).sum())

    def valid(self, idx: npt.NDArray[np.int64]) -> bool:
        """Whether the records ``idx`` may form one equivalence class."""
        if idx.size < self.k:
            return False
        if self.l is not None and np.unique(self.codes[idx]).size < self.l:
            return False
        # a small tolerance: an EMD equal to t in exact arithmetic must pass
        return self.t is None or self.emd(idx) <= self.t + 1e-12

    def describe(self) -> dict[str, float | int | None]:
        """The constraints, for reports."""
        return {"k": self.k, "l": self.l, "t": self.t}
