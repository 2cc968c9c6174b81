"""The privacy schema of a dataset: who a row belongs to, and what each column may hold.

Differential privacy needs *declared* facts: the privacy unit (whose
contribution must be bounded), and bounds for every numeric column and the set
of categories for every categorical one, because the sensitivity of a query is
derived from them. Reading these from the data would itself leak the extreme
records, so Veil never does it silently: :func:`suggest_bounds` exists for
exploration and warns loudly with :class:`~veil.errors.PrivacyLeakWarning`.

This module holds the schema itself; reading declarations from the command
line and codebooks is :mod:`veil.data._declare`, and suggesting them from the
data is :mod:`veil.data._suggest`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from veil._validate import whole_number
from veil.errors import SchemaError

__all__ = [
    "COLUMN_KINDS",
    "SCHEMA_VERSION",
    "ColumnKind",
    "ColumnSpec",
    "DeclaredBy",
    "PrivacySchema",
    "check_bounds",
    "check_columns_exist",
]


SCHEMA_VERSION = 1
ColumnKind = Literal["numeric", "categorical", "identifier", "array"]
COLUMN_KINDS: tuple[ColumnKind, ...] = ("numeric", "categorical", "identifier", "array")
DeclaredBy = Literal["user", "format"]
_SHOWN = 20


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a dataset.

    Attributes:
        name: Column name.
        kind: ``numeric``, ``categorical``, ``identifier`` (the privacy-unit
            column) or ``array`` (a fixed-shape tensor per row, e.g. an image).
        bounds: Declared ``(lower, upper)`` for numeric and array columns.
        categories: Declared categories of a categorical column.
        shape: Shape of each value of an array column.
        declared_by: ``"user"`` when the bounds or categories were given by the
            person registering the data, ``"format"`` when they follow from the
            file format's published definition (for example the UCI Adult codebook).
    """

    name: str
    kind: ColumnKind
    bounds: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None
    shape: tuple[int, ...] | None = None
    declared_by: DeclaredBy | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise SchemaError("a column name is empty", expected="a non-empty name", got="''")
        if self.kind not in COLUMN_KINDS:
            raise SchemaError(
                f"column '{self.name}' has an unknown kind",
                expected=" or ".join(COLUMN_KINDS),
                got=repr(self.kind),
            )
        if self.bounds is not None:
            if self.kind not in ("numeric", "array"):
                raise SchemaError(
                    f"bounds were declared for {self.kind} column '{self.name}'",
                    expected="bounds only on numeric or array columns",
                    got=f"bounds {self.bounds}",
                    fix=f"declare categories for '{self.name}' instead, or drop its bounds",
                )
            check_bounds(self.name, *self.bounds)
        if self.categories is not None:
            if self.kind != "categorical":
                raise SchemaError(
                    f"categories were declared for {self.kind} column '{self.name}'",
                    expected="categories only on categorical columns",
                    got=f"{len(self.categories)} categories",
                )
            if not self.categories:
                raise SchemaError(
                    f"column '{self.name}' declares an empty set of categories",
                    expected="at least one category",
                    got="none",
                )
            duplicates = sorted({c for c in self.categories if self.categories.count(c) > 1})
            if duplicates:
                raise SchemaError(
                    f"column '{self.name}' declares a category twice",
                    expected="distinct categories",
                    got=f"repeated {duplicates}",
                )
        if (self.shape is not None) != (self.kind == "array"):
            raise SchemaError(
                f"column '{self.name}': a shape goes with array columns and only with them",
                expected="shape set if and only if kind is 'array'",
                got=f"kind {self.kind!r}, shape {self.shape}",
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the stored and printed representation)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "bounds": list(self.bounds) if self.bounds is not None else None,
            "categories": list(self.categories) if self.categories is not None else None,
            "shape": list(self.shape) if self.shape is not None else None,
            "declared_by": self.declared_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        """Inverse of :meth:`to_dict`."""
        bounds = data.get("bounds")
        categories = data.get("categories")
        shape = data.get("shape")
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            bounds=(float(bounds[0]), float(bounds[1])) if bounds is not None else None,
            categories=tuple(str(c) for c in categories) if categories is not None else None,
            shape=tuple(int(s) for s in shape) if shape is not None else None,
            declared_by=data.get("declared_by"),
        )


@dataclass(frozen=True)
class PrivacySchema:
    """Who the rows belong to, and what every column may hold.

    Attributes:
        columns: Every column, in file order.
        privacy_unit: The column identifying a person, or ``None`` when each
            row is one distinct person.
        quasi_identifiers: Columns that, combined, may single a person out.
        sensitive: Columns whose values must not be linked to a person.
        max_groups: Declared bound on the number of groups (of any grouping)
            one person's rows fall into; DP queries enforce it by dropping rows.
        max_rows: Declared bound on one person's rows within a group.
    """

    columns: tuple[ColumnSpec, ...]
    privacy_unit: str | None = None
    quasi_identifiers: tuple[str, ...] = ()
    sensitive: tuple[str, ...] = ()
    version: int = field(default=SCHEMA_VERSION)
    max_groups: int = 1
    max_rows: int = 1

    def __post_init__(self) -> None:
        self._check_contribution()
        self._check_roles()

    def _check_contribution(self) -> None:
        for bound in ("max_groups", "max_rows"):
            value = whole_number(
                getattr(self, bound),
                bound,
                error=SchemaError,
                fix=f"pass --{bound.replace('_', '-')} with the most a person contributes",
            )
            if value != 1 and self.privacy_unit is None:
                raise SchemaError(
                    f"{bound} needs a privacy-unit column",
                    expected=f"{bound} = 1 when each row is a distinct person",
                    got=f"{bound} = {value} without --id",
                    fix="declare the column that identifies a person with --id",
                )

    def _check_roles(self) -> None:
        names = [c.name for c in self.columns]
        if not names:
            raise SchemaError("a schema needs at least one column", expected=">= 1", got="0")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SchemaError(
                "column names repeat",
                expected="distinct column names",
                got=f"repeated {repeated}",
                fix="rename the columns in the file so that each name is unique",
            )
        if self.privacy_unit is not None:
            check_columns_exist([self.privacy_unit], names, role="privacy unit (--id)")
            if self.column(self.privacy_unit).kind != "identifier":
                raise SchemaError(
                    f"privacy-unit column '{self.privacy_unit}' must have kind 'identifier'",
                    expected="kind 'identifier'",
                    got=repr(self.column(self.privacy_unit).kind),
                )
        for role, members in (
            ("quasi-identifier (--qi)", self.quasi_identifiers),
            ("sensitive (--sensitive)", self.sensitive),
        ):
            check_columns_exist(members, names, role=role)
            repeated = sorted({m for m in members if members.count(m) > 1})
            if repeated:
                raise SchemaError(
                    f"a {role} column is listed twice",
                    expected="each column once",
                    got=f"repeated {repeated}",
                )
            if self.privacy_unit in members:
                raise SchemaError(
                    f"the privacy-unit column '{self.privacy_unit}' is also listed as {role}",
                    expected="the identifier kept apart from quasi-identifiers and sensitive columns",
                    got=f"'{self.privacy_unit}' in both",
                    fix=f"remove '{self.privacy_unit}' from the {role.split()[-1]} list",
                )
        both = sorted(set(self.quasi_identifiers) & set(self.sensitive))
        if both:
            raise SchemaError(
                "a column is both quasi-identifying and sensitive",
                expected="each column in at most one of --qi and --sensitive",
                got=f"{both} in both",
                fix="decide which role each column plays; a sensitive value is what must stay unlinked",
            )

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of all columns, in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        """The spec of column ``name``."""
        for spec in self.columns:
            if spec.name == name:
                return spec
        check_columns_exist([name], self.column_names, role="requested")
        raise AssertionError  # pragma: no cover - check_columns_exist raised

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Declared bounds of every bounded column."""
        return {c.name: c.bounds for c in self.columns if c.bounds is not None}

    def unbounded_numeric(self) -> tuple[str, ...]:
        """Numeric columns without declared bounds (no DP query can use them yet)."""
        return tuple(c.name for c in self.columns if c.kind == "numeric" and c.bounds is None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the record an auditor reads."""
        return {
            "version": self.version,
            "privacy_unit": self.privacy_unit,
            "one_row_per_person": self.privacy_unit is None,
            "quasi_identifiers": list(self.quasi_identifiers),
            "sensitive": list(self.sensitive),
            "max_groups": self.max_groups,
            "max_rows": self.max_rows,
            "columns": [c.to_dict() for c in self.columns],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacySchema:
        """Inverse of :meth:`to_dict`."""
        version = int(data.get("version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise SchemaError(
                "the stored privacy schema is newer than this Veil understands",
                expected=f"schema version <= {SCHEMA_VERSION}",
                got=f"version {version}",
                fix="upgrade Veil",
            )
        return cls(
            columns=tuple(ColumnSpec.from_dict(c) for c in data["columns"]),
            privacy_unit=data.get("privacy_unit"),
            quasi_identifiers=tuple(data.get("quasi_identifiers", ())),
            sensitive=tuple(data.get("sensitive", ())),
            version=version,
            max_groups=int(data.get("max_groups", 1)),
            max_rows=int(data.get("max_rows", 1)),
        )


def check_columns_exist(wanted: Iterable[str], available: Sequence[str], *, role: str) -> None:
    """Raise :class:`SchemaError` naming the closest match for each unknown column."""
    missing = [w for w in wanted if w not in available]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
        hints.append(f"'{name}' (did you mean '{close[0]}'?)" if close else f"'{name}'")
    shown = ", ".join(available[:_SHOWN]) + (", ..." if len(available) > _SHOWN else "")
    raise SchemaError(
        f"unknown {role} column {', '.join(hints)}",
        expected=f"one of the dataset's columns: {shown}",
        got=", ".join(repr(m) for m in missing),
        fix="spell the column as it appears in the file (names are case-sensitive)",
        details={"unknown": missing, "available": list(available)},
    )


def check_bounds(column: str, lower: float, upper: float) -> None:
    """Refuse bounds that are not finite, reversed or empty, naming the column."""
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise SchemaError(
            f"bounds of '{column}' are not finite",
            expected="finite numbers lo:hi",
            got=f"{lower}:{upper}",
            fix=f"declare real limits, for example --bounds {column}=0:100",
        )
    if lower >= upper:
        raise SchemaError(
            f"bounds of '{column}' are reversed or empty",
            expected="lo < hi",
            got=f"{lower:g}:{upper:g}",
            fix=f"write the smaller number first: --bounds {column}={min(lower, upper):g}:{max(lower, upper):g}"
            if lower != upper
            else f"widen the interval, for example --bounds {column}={lower:g}:{lower + 1:g}",
        )
