"""One streaming pass over a source: every check a registration makes, and the schema it infers.

The catalogue calls :func:`scan_source` when a dataset is registered and when
its declarations are updated. It reads the source chunk by chunk (so a file
larger than memory can be checked), refuses data that contradicts a declared
fact (a bounded column holding a value that is not a finite number, a
categorical value outside the declared categories, a privacy-unit column with
gaps), and returns the :class:`~veil.data.PrivacySchema`, the row count and
the registration report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from veil.data._schema import ColumnSpec, PrivacySchema, check_columns_exist
from veil.data.readers import Reader
from veil.errors import InvalidInputError, SchemaError
from veil.progress import ProgressCallback, ProgressEvent

__all__ = ["scan_source"]

_MAX_SHOWN = 5


@dataclass
class _ColumnStats:
    missing: int = 0
    numeric: bool = True
    seen_values: bool = False
    below: int = 0
    above: int = 0
    unexpected: set[str] = field(default_factory=set)

    def report(self, bounded: bool) -> dict[str, int]:
        out = {"missing": self.missing}
        if bounded:
            out |= {"below_lower": self.below, "above_upper": self.above}
        return out


def _category_strings(values: pd.Series) -> pd.Series:
    """Values as the strings categories are declared with (``1.0`` becomes ``"1"``)."""
    if pd.api.types.is_float_dtype(values):
        return values.map(lambda v: format(v, "g"))
    return values.astype(str)


def scan_source(  # noqa: C901, PLR0912, PLR0915 - one pass, one place: every check a registration makes
    reader: Reader,
    *,
    privacy_unit: str | None,
    quasi_identifiers: tuple[str, ...],
    sensitive: tuple[str, ...],
    bounds: dict[str, tuple[float, float]],
    categories: dict[str, tuple[str, ...]],
    progress: ProgressCallback | None,
    max_groups: int = 1,
    max_rows: int = 1,
) -> tuple[PrivacySchema, int, dict[str, Any]]:
    names = reader.columns()
    check_columns_exist([privacy_unit] if privacy_unit else [], names, role="privacy unit (--id)")
    check_columns_exist(quasi_identifiers, names, role="quasi-identifier (--qi)")
    check_columns_exist(sensitive, names, role="sensitive (--sensitive)")
    check_columns_exist(bounds, names, role="bounded (--bounds)")
    check_columns_exist(categories, names, role="categorical (--categories)")
    both = sorted(set(bounds) & set(categories))
    if both:
        raise SchemaError(
            "a column has both bounds and categories",
            expected="bounds for numeric columns, categories for categorical ones",
            got=f"both for {both}",
            fix="keep only the declaration that matches the column's meaning",
        )
    if privacy_unit is not None and (privacy_unit in bounds or privacy_unit in categories):
        raise SchemaError(
            f"the privacy-unit column '{privacy_unit}' has bounds or categories",
            expected="an identifier column without declarations",
            got="a declaration for it",
            fix=f"remove the --bounds/--categories entry for '{privacy_unit}'",
        )

    declared = reader.declarations()
    expected_categories = {c: d.categories for c, d in declared.items() if d.categories is not None}
    expected_categories.update(categories)
    expected_bounds = {
        c: d.bounds for c, d in declared.items() if d.bounds is not None and d.kind == "numeric"
    }
    expected_bounds.update(bounds)
    for column in categories:
        expected_bounds.pop(column, None)
    for column in bounds:
        expected_categories.pop(column, None)
    tabular = [n for n in names if declared.get(n) is None or declared[n].kind != "array"]

    stats = {column: _ColumnStats() for column in tabular}
    unit_counts: dict[Any, int] = {}
    # A reader that can count rows per person itself (Parquet, streaming in Polars) does;
    # otherwise the chunks are counted here, in a dict of every person.
    counted_by_reader = privacy_unit is not None and hasattr(reader, "unit_stats")
    n_rows = 0
    for chunk in reader.chunks():
        if [str(c) for c in chunk.columns] != tabular:
            raise InvalidInputError(
                "rows do not have the header's columns",
                expected=f"columns {tabular}",
                got=f"columns {[str(c) for c in chunk.columns]}",
                fix="check the file for a second header or a changed layout",
            )
        for column in tabular:
            values = chunk[column]
            missing = values.isna()
            stat = stats[column]
            stat.missing += int(missing.sum())
            present = values[~missing]
            if present.empty:
                continue
            stat.seen_values = True
            is_numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(
                present
            )
            stat.numeric = stat.numeric and is_numeric
            if column in expected_bounds:
                numbers = present if is_numeric else pd.to_numeric(present, errors="coerce")
                bad = numbers.isna() | ~np.isfinite(numbers.astype(float))
                if bad.any():
                    position = int(np.flatnonzero(bad.to_numpy())[0])
                    row_number = n_rows + int(np.flatnonzero((~missing).to_numpy())[position]) + 1
                    raise SchemaError(
                        f"column '{column}' has declared bounds but holds a value that is not a finite number",
                        expected=f"numbers (bounds {expected_bounds[column][0]:g}:{expected_bounds[column][1]:g})",
                        got=f"{present.iloc[position]!r} in data row {row_number}",
                        fix=f"clean the column, or declare it categorical with --categories {column}=...",
                        details={"column": column, "row": row_number},
                    )
                lower, upper = expected_bounds[column]
                stat.below += int((numbers < lower).sum())
                stat.above += int((numbers > upper).sum())
            if column in expected_categories:
                allowed = set(expected_categories[column])
                observed = set(_category_strings(present).unique())
                stat.unexpected |= observed - allowed
            if column == privacy_unit and not counted_by_reader:
                for unit, count in present.value_counts().items():
                    unit_counts[unit] = unit_counts.get(unit, 0) + int(count)
        n_rows += len(chunk)
        if progress is not None:
            progress(ProgressEvent(f"validate {Path(reader.source).name}", n_rows, None, "rows"))

    if n_rows == 0:
        raise InvalidInputError(
            f"{Path(reader.source).name} has no data rows",
            expected="at least one row after the header",
            got="a header only",
            fix="check that the export that wrote it finished",
        )
    for column, stat in stats.items():
        if stat.unexpected:
            shown = sorted(stat.unexpected)[:_MAX_SHOWN]
            origin = (
                "--categories" if column in categories else f"the {reader.format} format's codebook"
            )
            raise SchemaError(
                f"column '{column}' holds values outside its declared categories",
                expected=f"one of {len(expected_categories[column])} categories declared by {origin}",
                got=f"{len(stat.unexpected)} other value(s), e.g. {shown}",
                fix=f"add them to --categories {column}=..., or clean the column",
                details={"column": column, "unexpected": shown},
            )
    if privacy_unit is not None and stats[privacy_unit].missing:
        raise SchemaError(
            f"the privacy-unit column '{privacy_unit}' has missing values",
            expected="every row to name the person it belongs to",
            got=f"{stats[privacy_unit].missing} row(s) without an identifier",
            fix="fill or drop those rows; contributions cannot be bounded for unknown people",
        )

    columns: list[ColumnSpec] = []
    for column in names:
        if column == privacy_unit:
            columns.append(ColumnSpec(column, "identifier"))
        elif column in bounds:
            columns.append(ColumnSpec(column, "numeric", bounds=bounds[column], declared_by="user"))
        elif column in categories:
            columns.append(
                ColumnSpec(column, "categorical", categories=categories[column], declared_by="user")
            )
        elif column in declared:
            d = declared[column]
            has_declaration = d.bounds is not None or d.categories is not None
            columns.append(
                ColumnSpec(
                    column,
                    d.kind,
                    bounds=d.bounds,
                    categories=d.categories,
                    shape=d.shape,
                    declared_by="format" if has_declaration else None,
                )
            )
        else:
            numeric = stats[column].numeric and stats[column].seen_values
            columns.append(ColumnSpec(column, "numeric" if numeric else "categorical"))
    schema = PrivacySchema(
        columns=tuple(columns),
        privacy_unit=privacy_unit,
        quasi_identifiers=quasi_identifiers,
        sensitive=sensitive,
        max_groups=max_groups,
        max_rows=max_rows,
    )
    if privacy_unit is None:
        n_units, max_per_unit = n_rows, 1
    elif counted_by_reader:
        n_units, max_per_unit = reader.unit_stats(privacy_unit)  # type: ignore[attr-defined]
    else:
        n_units, max_per_unit = len(unit_counts), max(unit_counts.values())
    report: dict[str, Any] = {
        "rows": n_rows,
        "privacy_units": n_units,
        "max_rows_per_unit": max_per_unit,
        "columns": {
            column: stats[column].report(bounded=schema.column(column).bounds is not None)
            for column in tabular
        },
        "unbounded_numeric": list(schema.unbounded_numeric()),
        "undeclared_categorical": [
            c.name for c in schema.columns if c.kind == "categorical" and c.categories is None
        ],
    }
    return schema, n_rows, report
