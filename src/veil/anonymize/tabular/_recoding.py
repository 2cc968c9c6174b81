"""The output of an anonymisation algorithm: one generalised cell per record and quasi-identifier.

A :class:`Recoding` holds, for every record and quasi-identifier, the closed
code interval ``[lo, hi]`` the record was generalised to, and which records
were suppressed. Every algorithm returns one, so the metrics, the released
table and the linkage attack are computed in one place for all of them.

Utility metrics:

- **GCP** (global certainty penalty, Ghinita et al. 2007): the mean NCP over
  every cell of the table, suppressed records counting 1 in every column;
- **discernibility** (Bayardo and Agrawal, 2005): the sum of squared class
  sizes, each suppressed record charged the table size;
- **normalised average class size** (LeFevre et al., 2006):
  ``(kept records / classes) / k``;
- **suppression**: the share of records suppressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.anonymize.tabular._domain import SUPPRESSED, Domain

__all__ = ["Recoding", "Utility"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Utility:
    """How much a recoding lost (module docstring).

    Attributes:
        gcp: Global certainty penalty, 0 (nothing lost) to 1 (everything).
        ncp_by_column: Mean NCP of each quasi-identifier.
        discernibility: Discernibility metric.
        normalised_average_class_size: ``C_avg``; 1 is ideal.
        suppression: Share of records suppressed.
        classes: Equivalence classes of the kept records.
        average_class_size: Kept records per class.
    """

    gcp: float
    ncp_by_column: dict[str, float]
    discernibility: float
    normalised_average_class_size: float
    suppression: float
    classes: int
    average_class_size: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "gcp": self.gcp,
            "ncp_by_column": self.ncp_by_column,
            "discernibility": self.discernibility,
            "normalised_average_class_size": self.normalised_average_class_size,
            "suppression": self.suppression,
            "classes": self.classes,
            "average_class_size": self.average_class_size,
        }


@dataclass
class Recoding:
    """Generalised cells of every record (module docstring).

    Attributes:
        domains: The quasi-identifiers' domains, in column order.
        lo: ``(records, QIs)`` lower ends of the cells.
        hi: ``(records, QIs)`` upper ends.
        suppressed: Which records are suppressed (all their QIs become ``*``).
        algorithm: Name of the algorithm that made it.
        details: Algorithm-specific facts (chosen levels, partitions...).
    """

    domains: Sequence[Domain]
    lo: FloatArray
    hi: FloatArray
    suppressed: npt.NDArray[np.bool_]
    algorithm: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def identity(cls, domains: Sequence[Domain]) -> Recoding:
        """The original table, as a recoding that generalises nothing."""
        codes = np.column_stack([d.codes for d in domains]) if domains else np.zeros((0, 0))
        return cls(domains, codes.copy(), codes.copy(), np.zeros(len(codes), dtype=bool), "none")

    @property
    def records(self) -> int:
        """Number of records."""
        return int(self.lo.shape[0])

    def class_ids(self) -> npt.NDArray[np.int64]:
        """Equivalence class of every record; ``-1`` for suppressed records."""
        cells = np.concatenate([self.lo, self.hi], axis=1)
        if cells.shape[1] == 0:
            return np.zeros(self.records, dtype=np.int64)
        _, inverse = np.unique(cells, axis=0, return_inverse=True)
        ids = inverse.reshape(-1).astype(np.int64)
        ids[self.suppressed] = -1
        return ids

    def ncp(self) -> FloatArray:
        """``(records, QIs)`` NCP of every cell, 1 for suppressed records."""
        out = np.column_stack(
            [d.ncp(self.lo[:, j], self.hi[:, j]) for j, d in enumerate(self.domains)]
        )
        out[self.suppressed] = 1.0
        return out

    def utility(self, k: int | None = None) -> Utility:
        """Utility metrics (module docstring); ``k`` for the normalised class size."""
        n = self.records
        ncp = self.ncp()
        ids = self.class_ids()
        kept = ids[ids >= 0]
        counts = np.unique(kept, return_counts=True)[1] if kept.size else np.zeros(0)
        suppressed = int(self.suppressed.sum())
        classes = int(counts.size)
        average = float(kept.size / classes) if classes else 0.0
        return Utility(
            gcp=float(ncp.mean()) if ncp.size else 0.0,
            ncp_by_column={
                d.column: float(ncp[:, j].mean()) if n else 0.0 for j, d in enumerate(self.domains)
            },
            discernibility=float(np.sum(counts.astype(np.float64) ** 2) + suppressed * n),
            normalised_average_class_size=average / k if k else average,
            suppression=suppressed / n if n else 0.0,
            classes=classes,
            average_class_size=average,
        )

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with its quasi-identifiers replaced by the cells' labels."""
        out = frame.copy()
        for j, d in enumerate(self.domains):
            lo, hi = self.lo[:, j], self.hi[:, j]
            # label each distinct cell once
            cells, inverse = np.unique(np.column_stack([lo, hi]), axis=0, return_inverse=True)
            names = np.asarray(d.labels(cells[:, 0], cells[:, 1]), dtype=object)
            column = names[inverse.reshape(-1)]
            column[self.suppressed] = SUPPRESSED
            out[d.column] = pd.array(column, dtype="string")
        return out
