"""Declarations as users write them: ``--bounds col=lo:hi``, ``--categories col=a|b``, codebooks.

Each parser refuses malformed input with a message that shows the expected
form; bounds are checked as the schema checks them (finite, lo < hi).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from veil.data._schema import check_bounds
from veil.errors import InvalidInputError

__all__ = ["parse_bounds", "parse_categories", "read_codebook"]

_MAX_LISTED = 5


def parse_bounds(items: Iterable[str]) -> dict[str, tuple[float, float]]:
    """Parse ``col=lo:hi`` strings (as given to ``--bounds``).

    Several may share one string, separated by commas: ``age=17:90,hours=1:99``.
    """
    result: dict[str, tuple[float, float]] = {}
    for item in _split_items(items):
        column, sep, interval = item.partition("=")
        lo_text, colon, hi_text = interval.partition(":")
        try:
            lower, upper = float(lo_text), float(hi_text)
        except ValueError:
            sep = ""
        if not (sep and colon and column.strip()):
            raise InvalidInputError(
                "a bound is not of the form column=lo:hi",
                expected="for example --bounds age=17:90",
                got=repr(item),
                fix="give the column name, '=', the lower bound, ':' and the upper bound",
            )
        name = column.strip()
        if name in result:
            raise InvalidInputError(
                f"bounds for '{name}' are given twice",
                expected="one interval per column",
                got=f"{result[name]} and {(lower, upper)}",
            )
        check_bounds(name, lower, upper)
        result[name] = (lower, upper)
    return result


def parse_categories(items: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Parse ``col=a|b|c`` strings (as given to ``--categories``)."""
    result: dict[str, tuple[str, ...]] = {}
    for item in items:
        column, sep, values = item.partition("=")
        if not (sep and column.strip() and values):
            raise InvalidInputError(
                "a category list is not of the form column=a|b|c",
                expected="for example --categories sex=Female|Male",
                got=repr(item),
                fix="give the column name, '=', then the categories separated by '|'",
            )
        result[column.strip()] = tuple(v.strip() for v in values.split("|"))
    return result


def _category_string(column: str, value: Any) -> str:
    if isinstance(value, str):
        return value  # exactly as written: a trailing space is part of the category
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(
            f"a category of {column!r} in the codebook is not a string or a number",
            expected="strings (quoted when they end in a space) or numbers",
            got=f"{value!r} ({type(value).__name__})",
            fix="quote the value in the codebook",
        )
    return format(value, "g") if isinstance(value, float) else str(value)


def read_codebook(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Read a codebook (``--categories-from``): YAML or JSON mapping each column to its categories.

    Strings are kept exactly (a trailing space included); numbers are written
    the way registration compares them (``1`` and ``1.0`` become ``"1"``).

    Raises:
        NotFoundError: No such file.
        InvalidInputError: Not a mapping of columns to non-empty lists of
            distinct strings or numbers.
    """
    import json  # noqa: PLC0415 - only --categories-from reads codebooks

    import yaml  # noqa: PLC0415

    from veil.errors import NotFoundError  # noqa: PLC0415

    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(
            "codebook not found",
            expected="a YAML or JSON file mapping each column to its list of categories",
            got=str(path),
            fix="check the path given to --categories-from",
        )
    shape = "a mapping of each column to its list of categories, e.g. sex: [Female, Male]"
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise InvalidInputError(
            f"{path.name} cannot be read as a codebook",
            expected=f"UTF-8 {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {shape}",
            got=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            fix="fix the line named above",
        ) from exc
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidInputError(
            f"{path.name} is not a codebook",
            expected=shape,
            got=type(raw).__name__ if raw else "an empty file",
            fix="write one 'column: [a, b, c]' entry per categorical column",
        )
    result: dict[str, tuple[str, ...]] = {}
    for column, values in raw.items():
        name = str(column)
        if not isinstance(values, list) or not values:
            raise InvalidInputError(
                f"the codebook entry of column {name!r} is not a list of categories",
                expected=shape,
                got=repr(values)[:80],
                fix=f"write {name}: [a, b, c]",
            )
        categories = tuple(_category_string(name, v) for v in values)
        repeated = sorted({c for c in categories if categories.count(c) > 1})
        if repeated:
            raise InvalidInputError(
                f"the codebook lists a category of column {name!r} twice",
                expected="each category once",
                got=repr(repeated[:_MAX_LISTED]),
                fix="remove the repeated entries",
            )
        result[name] = categories
    return result


def _split_items(items: Iterable[str]) -> list[str]:
    return [part.strip() for item in items for part in item.split(",") if part.strip()]
