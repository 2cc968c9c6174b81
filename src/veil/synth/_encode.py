"""From a registered table to cells of a finite domain, and back, using only the declared schema.

A marginal-based generator works on a finite domain: every column becomes a
set of cells. Where those cells come from is a privacy question. Bins chosen
from the data (its minimum, its quantiles, the categories that happen to
occur) would publish facts about the rows without noise. Here they come from
what the person registering the data *declared*:

* a categorical column: its declared categories, in declared order;
* a numeric column: equal-width bins over its declared bounds (unit bins when
  the bounds are whole numbers and the range fits in ``bins`` cells), values
  outside the bounds clamped into the end bins;
* every column gets one more cell, last, for a missing value: whether a
  column has missing values is itself a fact about the data, so the cell is
  always there (the generator learns its frequency under noise).

A column without declared categories or bounds is refused, named, with the
fix; so is an array column (an image has no marginals). The privacy-unit
column is not synthesised (a synthetic row belongs to nobody).

Decoding draws a number uniformly within its bin (rounded for integer
columns): post-processing of the synthetic cells, with its own seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from veil.data import PrivacySchema
from veil.errors import InvalidInputError, SchemaError

__all__ = ["DEFAULT_BINS", "MAX_BINS", "ColumnCoding", "Encoder"]

DEFAULT_BINS = 16
MAX_BINS = 1_000


@dataclass(frozen=True)
class ColumnCoding:
    """How one column maps to cells: ``size`` cells, the last one for a missing value."""

    name: str
    kind: str  # "categorical" or "numeric"
    categories: tuple[str, ...] | None = None
    edges: tuple[float, ...] | None = None
    integer: bool = False

    @property
    def size(self) -> int:
        if self.categories is not None:
            return len(self.categories) + 1
        assert self.edges is not None  # noqa: S101 - a numeric coding has edges
        return len(self.edges)  # len(edges) - 1 bins, plus the missing cell

    @property
    def missing(self) -> int:
        """The index of the missing-value cell."""
        return self.size - 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "cells": self.size}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.edges is not None:
            out["edges"] = [float(e) for e in self.edges]
            out["integer"] = self.integer
        return out

    def encode(self, values: pd.Series) -> np.ndarray:
        if self.categories is not None:
            lookup = {c: i for i, c in enumerate(self.categories)}
            text = values.astype("string")
            codes = text.map(lookup)
            # Undeclared values cannot be registered (the catalogue checks categories); a
            # frame handed to the API directly may still hold one: it is treated as missing.
            return np.asarray(codes.fillna(self.missing), dtype=np.int64)
        assert self.edges is not None  # noqa: S101 - a numeric coding has edges
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        edges = np.asarray(self.edges)
        clamped = np.clip(x, edges[0], edges[-1])
        idx = np.searchsorted(edges, clamped, side="right") - 1
        idx = np.clip(idx, 0, len(edges) - 2)
        return np.where(np.isnan(x), self.missing, idx).astype(np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pd.Series:
        codes = np.asarray(codes, dtype=np.int64)
        missing = codes == self.missing
        if self.categories is not None:
            cats = np.asarray(self.categories, dtype=object)
            out = np.where(missing, None, cats[np.minimum(codes, len(cats) - 1)])
            return pd.Series(out, name=self.name, dtype="string")
        assert self.edges is not None  # noqa: S101 - a numeric coding has edges
        edges = np.asarray(self.edges)
        safe = np.minimum(codes, len(edges) - 2)
        low, high = edges[safe], edges[safe + 1]
        if self.integer:
            # Unit bins over whole numbers: a bin is one value; wider bins draw a whole number inside.
            lo_int = np.ceil(low)
            hi_int = np.maximum(np.floor(np.nextafter(high, -np.inf)), lo_int)
            hi_int = np.where(safe == len(edges) - 2, np.floor(high), hi_int)
            values = rng.integers(lo_int.astype(np.int64), hi_int.astype(np.int64) + 1)
            series = pd.Series(values, name=self.name, dtype="Int64")
            series[missing] = pd.NA
            return series
        values = rng.uniform(low, high)
        return pd.Series(np.where(missing, np.nan, values), name=self.name, dtype="float64")


@dataclass(frozen=True)
class Encoder:
    """The finite domain of a table, from its declared schema (see the module docstring)."""

    codings: tuple[ColumnCoding, ...]
    bins: int = DEFAULT_BINS

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.codings)

    @property
    def sizes(self) -> dict[str, int]:
        return {c.name: c.size for c in self.codings}

    def coding(self, name: str) -> ColumnCoding:
        for c in self.codings:
            if c.name == name:
                return c
        raise InvalidInputError(
            f"column '{name}' is not part of the synthetic domain",
            expected=f"one of {list(self.columns)}",
            got=repr(name),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"bins": self.bins, "columns": [c.to_dict() for c in self.codings]}

    @classmethod
    def from_schema(
        cls,
        schema: PrivacySchema,
        *,
        bins: int = DEFAULT_BINS,
        columns: Sequence[str] | None = None,
        integer: Mapping[str, bool] | None = None,
    ) -> Encoder:
        """The domain of ``schema``'s columns (or ``columns``), refusing what was not declared.

        Args:
            schema: The registered schema.
            bins: Equal-width bins per bounded numeric column (2..1000).
            columns: Only these columns (default: every column but the privacy unit).
            integer: Numeric columns whose values are whole numbers (decoded as such);
                taken from the column's type, never its values.
        """
        if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= MAX_BINS:  # noqa: PLR2004
            raise InvalidInputError(
                "the number of bins per numeric column is out of range",
                expected=f"a whole number from 2 to {MAX_BINS}",
                got=repr(bins),
                fix="pass --bins 16 (the default), or fewer for a smaller domain",
            )
        names = (
            list(columns)
            if columns is not None
            else [c.name for c in schema.columns if c.kind != "identifier"]
        )
        if not names:
            raise InvalidInputError(
                "there are no columns to synthesise",
                expected="at least one categorical or numeric column",
                got="none",
            )
        integer = dict(integer or {})
        codings = []
        undeclared: list[str] = []
        for name in names:
            spec = schema.column(name)
            if spec.kind == "categorical":
                if not spec.categories:
                    undeclared.append(f"{name} (categorical: no declared categories)")
                    continue
                codings.append(ColumnCoding(name, "categorical", categories=spec.categories))
            elif spec.kind == "numeric":
                if spec.bounds is None:
                    undeclared.append(f"{name} (numeric: no declared bounds)")
                    continue
                codings.append(_numeric(name, spec.bounds, bins, integer.get(name, False)))
            else:
                raise SchemaError(
                    f"column '{name}' is a{'n' if spec.kind[0] in 'aeiou' else ''} {spec.kind} "
                    "column, which a marginal-based generator cannot synthesise",
                    expected="categorical or numeric columns",
                    got=f"{name}: {spec.kind}",
                    fix="leave it out with --columns (the privacy unit is never synthesised)",
                )
        if undeclared:
            raise SchemaError(
                "synthetic data needs every column's domain declared, not read from the rows",
                expected="declared categories for categorical columns, bounds for numeric ones",
                got="; ".join(undeclared),
                fix=(
                    "declare them (veil datasets update NAME --bounds col=low:high "
                    "--categories 'col=a|b|c'), or leave the columns out with --columns"
                ),
            )
        return cls(tuple(codings), bins=bins)

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The cell of every value (a frame of int64 codes with the same column names)."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise InvalidInputError(
                "the frame lacks columns of the synthetic domain",
                expected=f"columns {list(self.columns)}",
                got=f"missing {missing}",
            )
        return pd.DataFrame(
            {c.name: c.encode(frame[c.name]) for c in self.codings}, index=range(len(frame))
        )

    def decode(self, codes: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
        """Values back from cells (numbers drawn uniformly within their bin)."""
        rng = np.random.default_rng(seed)
        return pd.DataFrame({c.name: c.decode(codes[c.name].to_numpy(), rng) for c in self.codings})

    def domain_size(self, clique: Sequence[str]) -> int:
        sizes = self.sizes
        return math.prod(sizes[c] for c in clique)


def _numeric(name: str, bounds: tuple[float, float], bins: int, integer: bool) -> ColumnCoding:
    """Equal-width bins over the bounds; for whole numbers, bins of whole numbers.

    An integer column's bins are aligned on whole numbers (edges at ``k - 0.5``),
    each holding the same count of them (the last may hold fewer): a bin never
    falls between two whole numbers, so a decoded value always encodes back to
    its own cell. When the range fits in ``bins`` cells, every value is its own bin.
    """
    low, high = float(bounds[0]), float(bounds[1])
    if integer:
        first, last = math.ceil(low), math.floor(high)
        if first <= last:
            span = last - first + 1
            width = max(1, math.ceil(span / bins))
            count = math.ceil(span / width)
            edges = first - 0.5 + width * np.arange(count + 1, dtype=np.float64)
            edges[-1] = min(edges[-1], last + 0.5)
            return ColumnCoding(name, "numeric", edges=tuple(float(e) for e in edges), integer=True)
    edges = np.linspace(low, high, bins + 1)
    return ColumnCoding(name, "numeric", edges=tuple(float(e) for e in edges), integer=False)
