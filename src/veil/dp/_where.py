"""Row-level filters for DP queries: SQL conditions compiled to Polars expressions.

Only what this module builds can filter a DP query: comparisons of a column
with a literal, IN, BETWEEN, IS [NOT] NULL, AND, OR, NOT. Each decides a row
from that row alone, so a filter never changes another person's rows and the
sensitivity derived from the contribution bounds still holds. An arbitrary
Polars expression could look across rows (``x > x.mean()``) and is therefore
not accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
import sqlglot
from sqlglot import exp

from veil.errors import InvalidInputError

__all__ = ["SUPPORTED_SQL", "ExprBuilder", "compile_where", "parse_where", "unsupported"]

SUPPORTED_SQL = (
    "SELECT [group columns,] COUNT(*) | COUNT(col) | SUM(col) | AVG(col) | VARIANCE(col) | "
    "MEDIAN(col) | QUANTILE(col, q) | PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col) [AS name], ... "
    "FROM table [WHERE comparisons with literals, IN, BETWEEN, IS NULL, AND/OR/NOT] "
    "[GROUP BY columns]"
)


def unsupported(what: str, got: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} is outside the SQL subset Veil answers with differential privacy",
        expected=SUPPORTED_SQL,
        got=got,
        fix="rewrite the query in the supported subset (one table, aggregates of plain columns)",
    )


def column_of(node: exp.Expression | None, func: str) -> str:
    if isinstance(node, exp.Column):
        return node.name
    shown = node.sql() if node is not None else "nothing"
    raise unsupported(f"{func} of an expression", shown)


class ExprBuilder:
    """How a condition becomes an engine's expression: Polars here, Spark in ``_spark``.

    Both engines compile the same parsed tree through :func:`predicate`, so a
    condition one engine accepts the other accepts, and one refusal (the same
    error) covers both.
    """

    def col(self, name: str) -> Any:
        return pl.col(name)

    def lit(self, value: Any) -> Any:
        return pl.lit(value)

    def is_in(self, column: Any, values: list[Any]) -> Any:
        return column.is_in(values)

    def between(self, column: Any, low: Any, high: Any) -> Any:
        # Literals, not names: is_between reads a bare string as a column name.
        return column.is_between(self.lit(low), self.lit(high))

    def is_null(self, column: Any) -> Any:
        return column.is_null()


POLARS = ExprBuilder()


def compile_where(text: str, dtypes: Mapping[str, pl.DataType] | None = None) -> pl.Expr:
    """Compile a SQL condition (the body of a WHERE clause) to a row-level Polars filter.

    With ``dtypes`` (the frame's column types, never its values) every literal
    is also checked against the type of the column it is compared with, so a
    mismatch is refused before the query is charged rather than failing after.
    """
    result: pl.Expr = predicate(parse_where(text), dtypes)
    return result


def parse_where(text: str) -> exp.Expression:
    """The parsed condition (one parser for every engine)."""
    try:
        node = sqlglot.parse_one(text)
    except (sqlglot.errors.SqlglotError, RecursionError) as exc:
        raise InvalidInputError(
            "the WHERE condition does not parse", expected=SUPPORTED_SQL, got=text[:80]
        ) from exc
    if not isinstance(node, exp.Expression):  # pragma: no cover - sqlglot returns expressions
        raise InvalidInputError("the WHERE condition does not parse", got=text[:80])
    return node


def _literal(node: exp.Expression) -> Any:
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        try:
            number: float = int(text)
        except ValueError:
            return float(text)
        # Beyond 64 bits Polars has no integer literal: compare as a float instead.
        return number if _INT64_MIN <= number <= _INT64_MAX else float(number)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return -_literal(node.this)
    raise unsupported("a comparison with a non-literal", node.sql())


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TEXT_TYPES = (pl.String, pl.Categorical, pl.Enum)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _check_types(
    column: str, values: list[Any], dtypes: Mapping[str, pl.DataType] | None, sql: str
) -> None:
    """Refuse literals of another kind than ``column`` (from its type alone, before any charge)."""
    kinds = sorted({_kind(v) for v in values})
    if len(kinds) > 1:
        raise InvalidInputError(
            f"the condition {sql[:80]} mixes {' and '.join(kinds)}s",
            expected=f"literals of one kind, the kind of column '{column}'",
            got=", ".join(repr(v) for v in values[:5]),
            fix="compare a column with strings only or numbers only",
        )
    if dtypes is None or column not in dtypes or not kinds:
        return
    dtype = dtypes[column]
    if dtype == pl.Null:
        return
    if dtype.is_numeric():
        wanted = "a number"
    elif isinstance(dtype, _TEXT_TYPES):
        wanted = "a string"
    elif dtype == pl.Boolean:
        wanted = "a boolean"
    else:
        raise InvalidInputError(
            f"the condition {sql[:80]} filters on '{column}', a {dtype} column",
            expected="conditions on numeric, text or boolean columns",
            got=str(dtype),
            fix="filter on another column",
        )
    if kinds != [wanted]:
        example = "age >= 30" if wanted == "a number" else "sex = 'Female'"
        raise InvalidInputError(
            f"the condition {sql[:80]} compares '{column}' ({dtype}) with {kinds[0]}",
            expected=f"{wanted} for '{column}'",
            got=", ".join(repr(v) for v in values[:5]),
            fix=f"compare '{column}' with {wanted} (for example {example})",
        )


_COMPARISONS = {
    exp.EQ: lambda c, v: c == v,
    exp.NEQ: lambda c, v: c != v,
    exp.LT: lambda c, v: c < v,
    exp.LTE: lambda c, v: c <= v,
    exp.GT: lambda c, v: c > v,
    exp.GTE: lambda c, v: c >= v,
}


def predicate(  # noqa: C901, PLR0911 - one branch per SQL operator
    node: exp.Expression,
    dtypes: Mapping[str, pl.DataType] | None = None,
    build: ExprBuilder = POLARS,
) -> Any:
    """The row filter of a parsed condition, built by ``build`` (Polars by default)."""
    if isinstance(node, exp.Paren):
        return predicate(node.this, dtypes, build)
    if isinstance(node, exp.And):
        return predicate(node.this, dtypes, build) & predicate(node.expression, dtypes, build)
    if isinstance(node, exp.Or):
        return predicate(node.this, dtypes, build) | predicate(node.expression, dtypes, build)
    if isinstance(node, exp.Not):
        return ~predicate(node.this, dtypes, build)
    for cls, make in _COMPARISONS.items():
        if isinstance(node, cls):
            left, right = node.this, node.expression
            if isinstance(left, exp.Column):
                value = _literal(right)
                _check_types(left.name, [value], dtypes, node.sql())
                return make(build.col(left.name), build.lit(value))  # type: ignore[no-untyped-call]
            if isinstance(right, exp.Column):
                value = _literal(left)
                _check_types(right.name, [value], dtypes, node.sql())
                flipped = {exp.LT: exp.GT, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.GTE: exp.LTE}
                return _COMPARISONS[flipped.get(cls, cls)](  # type: ignore[no-untyped-call]
                    build.col(right.name), build.lit(value)
                )
            raise unsupported("a comparison without a column", node.sql()[:80])
    if isinstance(node, exp.In):
        if node.args.get("query"):
            raise unsupported("IN (subquery)", node.sql()[:80])
        col = column_of(node.this, "IN")
        values = [_literal(v) for v in node.expressions]
        _check_types(col, values, dtypes, node.sql())
        return build.is_in(build.col(col), values)
    if isinstance(node, exp.Between):
        col = column_of(node.this, "BETWEEN")
        low, high = _literal(node.args["low"]), _literal(node.args["high"])
        _check_types(col, [low, high], dtypes, node.sql())
        return build.between(build.col(col), low, high)
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        return build.is_null(build.col(column_of(node.this, "IS NULL")))
    raise unsupported(f"the condition {type(node).__name__.upper()}", node.sql()[:80])
