"""The ordered code space every algorithm works in, built from the declared hierarchies.

Each quasi-identifier is encoded once into a :class:`Domain`: every value gets
an ordered integer or real *code*, and every generalised cell, whatever the
algorithm that made it, is a closed interval ``[lo, hi]`` of codes.

- A **tree** domain (categorical columns with a declared taxonomy, ZIP and
  postcode truncation, and categorical columns with no declaration, which
  get the flat tree ``value -> *``) numbers its leaves in depth-first order,
  so that every node of the tree covers a contiguous range of leaf codes.
- An **interval** domain (numbers and dates) uses the value itself (dates as
  days since 1970-01-01); its levels are bins of growing width, automatic or
  declared, then ``*``.

Interval cells make the rest simple: a record is covered by a cell when its
code lies in the interval (the linkage attack), the information loss of a
cell is a function of the interval (NCP), and full-domain recoding at a
level maps each distinct code to an interval.

Information loss per cell is the normalised certainty penalty of Ghinita et
al. (2007): ``(hi - lo) / (max - min)`` for ordered domains and, for trees,
``0`` for a leaf and ``leaves(node) / leaves(root)`` for any other node (a
suppressed cell costs 1).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.anonymize.tabular._hierarchy import HierarchySpec, bad_spec
from veil.errors import InvalidInputError

__all__ = ["SUPPRESSED", "Domain", "IntervalDomain", "TreeDomain", "build_domains"]

SUPPRESSED = "*"
_SHOWN = 5  # uncovered values named in an error
_MOSTLY = 0.5  # a text column this much numeric is taken for a numeric column with typos
_DAY = np.timedelta64(1, "D")


class Domain(ABC):
    """One quasi-identifier, encoded: codes per record and generalisation by level.

    Attributes:
        column: Column name.
        codes: Code of each record (aligned with the table's rows).
        height: Number of generalisation levels above the original values;
            level ``height`` is ``*`` (the whole domain).
        lo_all: Smallest code of the domain.
        hi_all: Largest code of the domain.
        ordered: Whether the domain is split by value (numbers, dates) rather
            than along a tree.
    """

    def __init__(
        self,
        column: str,
        codes: npt.NDArray[np.float64],
        height: int,
        lo_all: float,
        hi_all: float,
        *,
        ordered: bool,
    ) -> None:
        self.column = column
        self.codes = codes
        self.height = height
        self.lo_all = lo_all
        self.hi_all = hi_all
        self.ordered = ordered

    @abstractmethod
    def level_bounds(
        self, level: int, codes: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The cell ``[lo, hi]`` of each code when generalised to ``level``."""

    @abstractmethod
    def ncp(
        self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Normalised certainty penalty of cells (see the module docstring)."""

    @abstractmethod
    def labels(self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]) -> list[str]:
        """How cells are written in the released table."""

    @abstractmethod
    def encode(self, values: pd.Series) -> npt.NDArray[np.float64]:
        """Codes of values from another table (e.g. the attacker's external data)."""

    def covering(
        self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The smallest cell of the hierarchy holding ``[lo, hi]`` (local recoding)."""
        return lo, hi


class TreeDomain(Domain):
    """A taxonomy whose leaves are the column's values (see the module docstring)."""

    def __init__(  # noqa: C901 - one pass builds the levels, ranges and children together
        self, column: str, values: pd.Series, paths: Mapping[str, Sequence[str]]
    ) -> None:
        self.column = column  # named in errors raised while encoding, before Domain.__init__
        # paths: leaf value -> names of its ancestors from just below the root down to
        # the leaf's parent. Leaves are ordered depth-first, so each node is a range.
        leaves = sorted(paths, key=lambda v: (*paths[v], v))
        self.leaf_index = {v: i for i, v in enumerate(leaves)}
        self.leaves = leaves
        depth = max((len(p) for p in paths.values()), default=0) + 1
        # node ranges: for each level above the leaves, each leaf's ancestor's range.
        n = len(leaves)
        self._node_names: dict[tuple[int, int], str] = {(0, n - 1): SUPPRESSED}
        ranges_by_level: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
        ancestors: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for level in range(1, depth + 1):
            keys = []
            for v in leaves:
                p = list(paths[v])
                cut = len(p) + 1 - level  # how many ancestor names remain
                keys.append(tuple(p[: max(cut, 0)]) if cut > 0 else ())
            lo = np.empty(n)
            hi = np.empty(n)
            start = 0
            for i in range(1, n + 1):
                if i == n or keys[i] != keys[start]:
                    lo[start:i] = start
                    hi[start:i] = i - 1
                    name = keys[start][-1] if keys[start] else SUPPRESSED
                    self._node_names.setdefault((start, i - 1), name)
                    start = i
            ranges_by_level.append((lo, hi))
        for level_lo, level_hi in ranges_by_level:
            for i in range(n):
                cell = (int(level_lo[i]), int(level_hi[i]))
                if not ancestors[i] or ancestors[i][-1] != cell:
                    ancestors[i].append(cell)
        self._ancestors = ancestors  # leaf -> its proper ancestors, nearest first
        self._levels = ranges_by_level
        self._children: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i in range(n):
            chain = [(i, i), *ancestors[i]]
            for child, parent in itertools.pairwise(chain):
                kids = self._children.setdefault(parent, [])
                if child not in kids:
                    kids.append(child)
        for kids in self._children.values():
            kids.sort()
        codes = self.encode(values)
        super().__init__(column, codes, depth, 0.0, float(n - 1), ordered=False)
        self._lca_cache: dict[tuple[int, int], tuple[int, int]] = {}

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.leaves)

    def encode(self, values: pd.Series) -> npt.NDArray[np.float64]:
        strings = values.astype("string")
        mapped = strings.map(self.leaf_index)
        missing = mapped.isna() & strings.notna()
        if missing.any():
            bad = sorted(set(strings[missing].astype(str)))
            raise InvalidInputError(
                f"the hierarchy of {self.column!r} does not cover every value",
                expected=f"each value of {self.column!r} to be a leaf of its hierarchy",
                got=f"{len(bad)} uncovered value(s): {', '.join(bad[:_SHOWN])}"
                + (" ..." if len(bad) > _SHOWN else ""),
                fix="add the values to the hierarchies file",
            )
        if strings.isna().any():
            raise InvalidInputError(
                f"column {self.column!r} has missing values",
                expected="a value in every row of a quasi-identifier",
                got=f"{int(strings.isna().sum())} missing",
                fix="drop or impute those rows first (an empty cell can itself identify)",
            )
        codes: npt.NDArray[np.float64] = np.asarray(mapped.to_numpy(), dtype=np.float64)
        return codes

    def level_bounds(
        self, level: int, codes: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        idx = codes.astype(np.int64)
        if level <= 0:
            return codes.copy(), codes.copy()
        lo, hi = self._levels[min(level, self.height) - 1]
        return lo[idx], hi[idx]

    def ncp(
        self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        width = hi - lo + 1
        out: npt.NDArray[np.float64] = np.where(width <= 1, 0.0, width / self.size)
        return out

    def lca(self, lo: int, hi: int) -> tuple[int, int]:
        """The smallest node holding leaves ``lo..hi``, as its leaf range."""
        key = (lo, hi)
        found = self._lca_cache.get(key)
        if found is None:
            if lo == hi:
                found = key
            else:
                found = (0, self.size - 1)
                for cell in self._ancestors[lo]:
                    if cell[1] >= hi:
                        found = cell
                        break
            self._lca_cache[key] = found
        return found

    def covering(
        self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        pairs = [self.lca(int(a), int(b)) for a, b in zip(lo, hi, strict=True)]
        arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def children(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The child nodes of node ``lo..hi`` (empty for a leaf)."""
        return self._children.get((lo, hi), [])

    def labels(self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]) -> list[str]:
        out = []
        for a, b in zip(lo.astype(np.int64), hi.astype(np.int64), strict=True):
            if a == b:
                out.append(self.leaves[a])
            else:
                name = self._node_names.get((int(a), int(b)))
                if name is None:  # a range that is not a node: the values it spans
                    name = "{" + ",".join(self.leaves[a : b + 1]) + "}"
                out.append(name)
        return out


class IntervalDomain(Domain):
    """Numbers or dates, generalised to bins of growing width (see the module docstring)."""

    def __init__(self, column: str, values: pd.Series, spec: HierarchySpec) -> None:
        self.is_date = spec.kind == "date"
        codes = self._to_codes(column, values)
        observed = (float(codes.min()), float(codes.max())) if codes.size else (0.0, 0.0)
        lo_all, hi_all = spec.bounds if spec.bounds is not None else observed
        if self.is_date and spec.bounds is None:
            lo_all, hi_all = observed
        if codes.size and (observed[0] < lo_all or observed[1] > hi_all):
            raise InvalidInputError(
                f"values of {column!r} fall outside its declared bounds",
                expected=f"values in [{lo_all:g}, {hi_all:g}]",
                got=f"[{observed[0]:g}, {observed[1]:g}]",
                fix="widen the bounds in the hierarchies file, or clip the column first",
            )
        self.bounds_declared = spec.bounds is not None
        self.integral = bool(np.all(np.mod(codes, 1) == 0))
        if self.is_date:
            self.widths: tuple[float, ...] = ()
        else:
            self.widths = spec.widths or _auto_widths(lo_all, hi_all, integral=self.integral)
        first = self.widths[0] if self.widths else 1.0
        self.origin = spec.origin if spec.origin is not None else math.floor(lo_all / first) * first
        height = (3 if self.is_date else len(self.widths)) + 1
        super().__init__(column, codes, height, lo_all, hi_all, ordered=True)

    def _to_codes(self, column: str, values: pd.Series) -> npt.NDArray[np.float64]:
        if values.isna().any():
            raise InvalidInputError(
                f"column {column!r} has missing values",
                expected="a value in every row of a quasi-identifier",
                got=f"{int(values.isna().sum())} missing",
                fix="drop or impute those rows first",
            )
        if self.is_date:
            try:
                dates = pd.to_datetime(values, errors="raise")
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(
                    f"column {column!r} is declared a date but holds other values",
                    expected="ISO dates such as 2024-03-15",
                    got=str(exc).splitlines()[0],
                    fix="clean the column, or declare another hierarchy type",
                ) from exc
            days = (dates.to_numpy(dtype="datetime64[D]") - np.datetime64("1970-01-01")) // _DAY
            return days.astype(np.float64)
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any():
            bad = values[numbers.isna()].astype(str).unique()[:3]
            raise InvalidInputError(
                f"column {column!r} mixes numbers and other values",
                expected="only numbers in an interval quasi-identifier",
                got=", ".join(repr(b) for b in bad),
                fix="clean the column, or declare a tree hierarchy for it",
            )
        return numbers.to_numpy(dtype=np.float64)

    def encode(self, values: pd.Series) -> npt.NDArray[np.float64]:
        return self._to_codes(self.column, values)

    def _date_bounds(
        self, level: int, codes: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        days = codes.astype("timedelta64[D]") + np.datetime64("1970-01-01")
        unit = {1: "M", 2: "Y", 3: "10Y"}[level]
        if unit == "10Y":
            years = days.astype("datetime64[Y]").astype(np.int64) + 1970
            start_y = (years // 10) * 10
            start = (start_y - 1970).astype("datetime64[Y]")
            end = (start_y + 10 - 1970).astype("datetime64[Y]")
        else:
            start = days.astype(f"datetime64[{unit}]")
            end = start + (np.timedelta64(1, "M") if unit == "M" else np.timedelta64(1, "Y"))
        lo = (start.astype("datetime64[D]") - np.datetime64("1970-01-01")) // _DAY
        hi = (end.astype("datetime64[D]") - np.datetime64("1970-01-01")) // _DAY - 1
        return lo.astype(np.float64), hi.astype(np.float64)

    def level_bounds(
        self, level: int, codes: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        if level <= 0:
            return codes.copy(), codes.copy()
        if level >= self.height:
            return np.full(codes.shape, self.lo_all), np.full(codes.shape, self.hi_all)
        if self.is_date:
            return self._date_bounds(level, codes)
        width = self.widths[level - 1]
        lo = np.floor((codes - self.origin) / width) * width + self.origin
        hi = lo + width - (1 if self.integral and float(width).is_integer() else 0)
        if not (self.integral and float(width).is_integer()):
            hi = np.nextafter(hi, -np.inf)
        return lo, hi

    def ncp(
        self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        span = self.hi_all - self.lo_all
        if span <= 0:
            return np.zeros(lo.shape)
        clipped = np.minimum(hi, self.hi_all) - np.maximum(lo, self.lo_all)
        out: npt.NDArray[np.float64] = np.clip(clipped / span, 0.0, 1.0)
        return out

    def _fmt(self, x: float) -> str:
        if self.is_date:
            return str(np.datetime64("1970-01-01") + np.timedelta64(int(x), "D"))
        if self.integral and float(x).is_integer():
            return str(int(x))
        return f"{x:.6g}"

    def labels(self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]) -> list[str]:
        out = []
        for a, b in zip(lo, hi, strict=True):
            if a <= self.lo_all and b >= self.hi_all and a != b:
                out.append(SUPPRESSED)
            elif a == b:
                out.append(self._fmt(float(a)))
            else:
                out.append(f"[{self._fmt(float(a))}, {self._fmt(float(b))}]")
        return out


def _auto_widths(lo: float, hi: float, *, integral: bool) -> tuple[float, ...]:
    """Four doubling bin widths, the first a round number near a sixteenth of the range."""
    span = max(hi - lo, 1e-12)
    raw = span / 16
    exponent = math.floor(math.log10(raw))
    base = min(
        (m * 10**exponent for m in (1, 2, 5, 10)),
        key=lambda w: abs(math.log(w / raw)),
    )
    if integral:
        base = max(1.0, round(base))
    return tuple(float(base * 2**i) for i in range(4))


def _tree_paths(column: str, tree: Mapping[str, Any]) -> dict[str, list[str]]:
    """Leaf -> ancestor names (below the root), from a nested mapping or lists."""
    paths: dict[str, list[str]] = {}

    def walk(node: Any, trail: list[str]) -> None:
        if isinstance(node, Mapping):
            for name, child in node.items():
                walk(child, [*trail, str(name)])
        elif isinstance(node, list | tuple):
            for leaf in node:
                if isinstance(leaf, Mapping):
                    walk(leaf, trail)
                else:
                    key = str(leaf)
                    if key in paths:
                        raise bad_spec(column, "each value once in the tree", f"{key!r} twice")
                    paths[key] = list(trail)
        else:
            key = str(node)
            if key in paths:
                raise bad_spec(column, "each value once in the tree", f"{key!r} twice")
            paths[key] = list(trail)

    # A single top-level key named like a root ("*", "Any", "root") is the root itself.
    if len(tree) == 1 and str(next(iter(tree))).lower() in {"*", "any", "all", "root"}:
        walk(next(iter(tree.values())), [])
        return paths
    walk(tree, [])
    return paths


def _check_mixed(column: str, values: pd.Series) -> None:
    """Refuse a text column whose values are mostly, but not all, numbers."""
    present = values.dropna()
    if present.empty or pd.api.types.is_numeric_dtype(present):
        return
    numeric = pd.to_numeric(present.astype(str), errors="coerce").notna()
    share = float(numeric.mean())
    if _MOSTLY <= share < 1.0:
        bad = present[~numeric].astype(str).unique()[:3]
        raise InvalidInputError(
            f"column {column!r} mixes numbers and text",
            expected="one type per quasi-identifier column",
            got=f"{int(numeric.sum()):,} of {len(present):,} values are numbers; the others are "
            f"text such as {', '.join(repr(b) for b in bad)}",
            fix="clean the column, or declare its hierarchy (type tree keeps it categorical)",
        )


def build_domains(
    frame: pd.DataFrame,
    quasi_identifiers: Sequence[str],
    hierarchies: Mapping[str, HierarchySpec] | None = None,
) -> list[Domain]:
    """Encode each quasi-identifier of ``frame`` with its hierarchy.

    A column with no declared hierarchy gets one from its type: numbers an
    automatic interval hierarchy, dates a day-month-year one, anything else
    the flat tree ``value -> *``.
    """
    hierarchies = dict(hierarchies or {})
    domains: list[Domain] = []
    for column in quasi_identifiers:
        values = frame[column]
        spec = hierarchies.get(column)
        if spec is None:
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                spec = HierarchySpec(kind="interval")
            elif pd.api.types.is_datetime64_any_dtype(values):
                spec = HierarchySpec(kind="date")
            else:
                _check_mixed(column, values)
                spec = HierarchySpec(kind="flat")
        if spec.kind in {"interval", "date"}:
            domains.append(IntervalDomain(column, values, spec))
            continue
        strings = values.astype("string")
        if spec.kind == "tree":
            paths = _tree_paths(column, spec.tree or {})
            present = set(strings.dropna().unique())
            paths = {v: p for v, p in paths.items() if v in present} or paths
        elif spec.kind == "prefix":
            distinct = sorted(set(strings.dropna().unique()))
            width = max((len(v) for v in distinct), default=0)
            paths = {v: [v[:i].ljust(width, "*") for i in range(len(v)) if i > 0] for v in distinct}
        else:
            paths = {v: [] for v in sorted(set(strings.dropna().unique()))}
        domains.append(TreeDomain(column, values, paths))
    return domains
