"""Dates of retention: a date column read as UTC timestamps, an expiry date as a UTC moment.

A date column may hold ISO dates, timestamps with or without a zone, or
native datetimes (Parquet). Every present value must parse: a policy whose
column holds something else is refused when it is set, with the first value
that did not parse, rather than failing later in an unattended run. Missing
values stay missing (``NaT``): a row with no date is kept, its age unknown.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd

from veil.errors import InvalidInputError

__all__ = ["as_utc", "parse_dates"]


def parse_dates(values: pd.Series, column: str) -> pd.Series:
    """``values`` as UTC timestamps without a zone (missing values stay ``NaT``).

    Raises:
        InvalidInputError: The column holds numbers, or a value that is not a date.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise InvalidInputError(
                f"'{column}' holds numbers, not dates",
                expected="a column of dates or timestamps (2024-05-01, 2024-05-01T09:30:00Z)",
                got=f"{values.dtype} values",
                fix="name the column that records when each row was collected",
            )
        present = values.notna()
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        bad = present & parsed.isna()
        if bad.any():
            example = str(values[bad].iloc[0])[:40]
            raise InvalidInputError(
                f"'{column}' has values that are not dates",
                expected="every present value a date or timestamp (ISO 8601 such as 2024-05-01)",
                got=f"{int(bad.sum()):,} values that do not parse, the first {example!r}",
                fix="clean the column (or name another one) and set the policy again",
            )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed


def as_utc(value: datetime | date | str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(
                "the expiry date is not a date",
                expected="an ISO date such as 2027-01-01",
                got=repr(value),
                fix="for example --expire-on 2027-01-01",
            ) from None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
