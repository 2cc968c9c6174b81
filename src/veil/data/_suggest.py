"""Declarations read from the data itself, for exploration only: they **leak** what they read.

The bounds are the most extreme values present and the categories every
distinct value, so each call warns with :class:`~veil.errors.PrivacyLeakWarning`;
declare bounds from domain knowledge and categories from a published codebook.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pandas as pd

from veil.data._schema import check_columns_exist
from veil.errors import PrivacyLeakWarning

__all__ = ["suggest_bounds", "suggest_categories"]

_NUMERIC_CODES = 10  # a numeric column with at most this many values may be a code
_NEARLY_UNIQUE = 0.9  # share of distinct values beyond which a column names people or is prose


def suggest_categories(
    frame: pd.DataFrame, columns: Sequence[str] | None = None, *, max_categories: int = 50
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Read the distinct values of categorical-looking columns from the data, **leaking them**.

    For exploration only, like :func:`suggest_bounds`: a category that occurs
    once names the one person who has it, and declaring categories read from
    the data makes that visible in every release. Prefer the data's published
    codebook. Always warns with :class:`~veil.errors.PrivacyLeakWarning`.

    A column is left out (with the reason in the second dict) when it holds
    more than ``max_categories`` values, when it has a different value in
    (nearly) every row (an identifier or free text), or when it is numeric
    with more than ten values (declare bounds instead).

    Returns:
        ``(codebook, left_out)``: sorted categories by column (strings as
        registration compares them), and why each other column was left out.
    """
    chosen = list(columns) if columns is not None else [str(c) for c in frame.columns]
    check_columns_exist(chosen, [str(c) for c in frame.columns], role="requested")
    warnings.warn(
        "suggest_categories reads the distinct values from the data: a rare category reveals "
        "the few people who have it, and declaring it makes that visible in every release. "
        "Declare categories from the data's published codebook instead.",
        PrivacyLeakWarning,
        stacklevel=2,
    )
    codebook: dict[str, tuple[str, ...]] = {}
    left_out: dict[str, str] = {}
    for column in chosen:
        present = frame[column].dropna()
        if present.empty:
            left_out[column] = "no values"
            continue
        numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
        strings = (
            present.map(lambda v: format(v, "g"))
            if pd.api.types.is_float_dtype(present)
            else present.astype(str)
        )
        distinct = strings.nunique()
        if numeric and distinct > _NUMERIC_CODES:
            left_out[column] = f"numeric with {distinct:,} values: declare bounds (suggest-bounds)"
        elif distinct > _NUMERIC_CODES and distinct >= _NEARLY_UNIQUE * len(present):
            left_out[column] = "a different value in nearly every row: an identifier or free text"
        elif distinct > max_categories:
            left_out[column] = f"{distinct:,} values, more than {max_categories}"
        else:
            codebook[column] = tuple(sorted(strings.unique()))
    return codebook, left_out


def suggest_bounds(
    frame: pd.DataFrame, columns: Sequence[str] | None = None
) -> dict[str, tuple[float, float]]:
    """Read min/max of numeric columns from the data, **leaking them**.

    For exploration only: the returned bounds are the most extreme values
    present, so they reveal facts about the most unusual individuals, and any
    DP guarantee computed with them is void. Prefer bounds from domain
    knowledge or a public codebook. Always warns with
    :class:`~veil.errors.PrivacyLeakWarning`.
    """
    chosen = (
        list(columns)
        if columns is not None
        else [
            c
            for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        ]
    )
    check_columns_exist(chosen, [str(c) for c in frame.columns], role="requested")
    warnings.warn(
        "suggest_bounds reads the minimum and maximum from the data: these bounds reveal "
        "the most extreme records and void any differential-privacy guarantee that uses them. "
        "Declare bounds from domain knowledge instead.",
        PrivacyLeakWarning,
        stacklevel=2,
    )
    result: dict[str, tuple[float, float]] = {}
    for column in chosen:
        values = pd.to_numeric(frame[column], errors="coerce").dropna()
        if values.empty:
            continue
        lower, upper = float(values.min()), float(values.max())
        result[column] = (lower, upper if upper > lower else lower + 1.0)
    return result
