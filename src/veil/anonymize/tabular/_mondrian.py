"""Multidimensional Mondrian (LeFevre, DeWitt and Ramakrishnan, 2006): fine local recoding.

The table is split recursively, always along the quasi-identifier whose
values in the partition are most spread out (widest normalised range), until
no split leaves every part valid. A part is valid when it has at least ``k``
records, at least ``l`` distinct sensitive values, and a sensitive
distribution within Earth mover's distance ``t`` of the whole table's (each
constraint only if asked for). Every final partition is one equivalence
class; its cells are the tightest generalisation of its values: ``[min,
max]`` for numbers and dates, the lowest common ancestor for tree domains.

- Numbers and dates split at the median. **Strict** Mondrian keeps equal
  values on one side, so partitions never overlap; **relaxed** Mondrian cuts
  the sorted records in half and may send equal values to both sides, which
  allows more splits and loses less, at the price of overlapping cells.
- Tree domains split along the hierarchy: one part per child of the
  partition's lowest common ancestor. Children too small to stand alone are
  pooled (the pool keeps the parent's generalisation), so one rare value
  does not block the split of all the others.

Nothing is suppressed: Mondrian always finds a valid table when the whole
table is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from veil.anonymize.tabular._constraints import Constraints
from veil.anonymize.tabular._domain import Domain, TreeDomain
from veil.anonymize.tabular._recoding import Recoding
from veil.progress import ProgressCallback, emit

__all__ = ["mondrian"]

IntArray = npt.NDArray[np.int64]


def _split_ordered(
    idx: IntArray, values: npt.NDArray[np.float64], check: Constraints, *, relaxed: bool
) -> list[IntArray] | None:
    order = np.argsort(values, kind="stable")
    n = idx.size
    if relaxed:
        cuts = [n // 2]
    else:
        ranked = values[order]
        median = ranked[(n - 1) // 2]
        right = int(np.searchsorted(ranked, median, side="right"))
        left = int(np.searchsorted(ranked, median, side="left"))
        # Prefer the cut nearer the middle; both keep equal values together.
        cuts = sorted({right, left}, key=lambda c: abs(c - n / 2))
    for cut in cuts:
        if cut <= 0 or cut >= n:
            continue
        parts = [idx[order[:cut]], idx[order[cut:]]]
        if all(check.valid(p) for p in parts):
            return parts
    return None


def _split_tree(
    idx: IntArray,
    values: npt.NDArray[np.float64],
    domain: TreeDomain,
    check: Constraints,
) -> list[IntArray] | None:
    node = domain.lca(int(values.min()), int(values.max()))
    children = domain.children(*node)
    if len(children) < 2:  # noqa: PLR2004 - a split needs two parts
        return None
    starts = np.array([c[0] for c in children], dtype=np.float64)
    group = np.searchsorted(starts, values, side="right") - 1
    parts: list[IntArray] = []
    pool: list[IntArray] = []
    for g in np.unique(group):
        part = idx[group == g]
        (parts if check.valid(part) else pool).append(part)
    if pool:
        pooled = np.concatenate(pool)
        if check.valid(pooled):
            parts.append(pooled)
        elif parts:
            smallest = min(range(len(parts)), key=lambda i: parts[i].size)
            parts[smallest] = np.concatenate([parts[smallest], pooled])
            if not check.valid(parts[smallest]):
                return None
        else:
            return None
    return parts if len(parts) >= 2 else None  # noqa: PLR2004


def mondrian(  # noqa: C901, PLR0912 - the recursion, unrolled into one loop
    domains: Sequence[Domain],
    check: Constraints,
    *,
    relaxed: bool = False,
    progress: ProgressCallback | None = None,
) -> Recoding:
    """Partition the records (module docstring) and return their cells.

    Args:
        domains: The encoded quasi-identifiers.
        check: The k / l / t constraints every partition must meet.
        relaxed: Relaxed instead of strict splits of numbers and dates.
        progress: Called with ``(records placed, records)``.
    """
    codes = np.column_stack([d.codes for d in domains])
    n, width = codes.shape
    spans = np.array(
        [(d.hi_all - d.lo_all) if d.ordered else float(getattr(d, "size", 1)) for d in domains],
        dtype=np.float64,
    )
    spans[spans <= 0] = 1.0
    lo = np.empty_like(codes)
    hi = np.empty_like(codes)
    stack: list[IntArray] = [np.arange(n, dtype=np.int64)]
    placed = 0
    partitions = 0
    while stack:
        idx = stack.pop()
        sub = codes[idx]
        mins = sub.min(axis=0)
        maxs = sub.max(axis=0)
        spread = np.empty(width)
        for j, d in enumerate(domains):
            if d.ordered:
                spread[j] = (maxs[j] - mins[j]) / spans[j]
            elif mins[j] == maxs[j]:
                spread[j] = 0.0
            else:
                a, b = cast("TreeDomain", d).lca(int(mins[j]), int(maxs[j]))
                spread[j] = (b - a + 1) / spans[j]
        parts = None
        if idx.size >= 2 * check.k:
            for j in np.argsort(-spread, kind="stable"):
                if spread[j] <= 0:
                    break
                d = domains[j]
                if d.ordered:
                    parts = _split_ordered(idx, sub[:, j], check, relaxed=relaxed)
                else:
                    parts = _split_tree(idx, sub[:, j], cast("TreeDomain", d), check)
                if parts is not None:
                    break
        if parts is not None:
            stack.extend(parts)
            continue
        for j, d in enumerate(domains):
            if d.ordered:
                lo[idx, j], hi[idx, j] = mins[j], maxs[j]
            else:
                a, b = cast("TreeDomain", d).lca(int(mins[j]), int(maxs[j]))
                lo[idx, j], hi[idx, j] = a, b
        placed += idx.size
        partitions += 1
        if partitions % 256 == 0:
            emit(progress, "mondrian", placed, n, unit="records")
    emit(progress, "mondrian", n, n, unit="records", detail=f"{partitions} classes")
    return Recoding(
        domains,
        lo,
        hi,
        np.zeros(n, dtype=bool),
        "mondrian-relaxed" if relaxed else "mondrian-strict",
        {"partitions": partitions},
    )
