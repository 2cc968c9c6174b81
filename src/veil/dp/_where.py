"""Row-level filters for DP queries: SQL conditions compiled to Polars expressions.

Only what this module builds can filter a DP query: comparisons of a column
with a literal, IN, BETWEEN, IS [NOT] NULL, AND, OR, NOT. Each decides a row
from that row alone, so a filter never changes another person's rows and the
sensitivity derived from the contribution bounds still holds. An arbitrary
Polars expression could look across rows (``x > x.mean()``) and is therefore
not accepted.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import sqlglot
from sqlglot import exp

from veil.errors import InvalidInputError

__all__ = ["SUPPORTED_SQL", "compile_where", "unsupported"]

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


def compile_where(text: str) -> pl.Expr:
    """Compile a SQL condition (the body of a WHERE clause) to a row-level Polars filter."""
    try:
        node = sqlglot.parse_one(text)
    except sqlglot.errors.ParseError as exc:
        raise InvalidInputError(
            "the WHERE condition does not parse", expected=SUPPORTED_SQL, got=text
        ) from exc
    if not isinstance(node, exp.Expression):  # pragma: no cover - sqlglot returns expressions
        raise InvalidInputError("the WHERE condition does not parse", got=text)
    return predicate(node)


def _literal(node: exp.Expression) -> Any:
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        try:
            return int(text)
        except ValueError:
            return float(text)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return -_literal(node.this)
    raise unsupported("a comparison with a non-literal", node.sql())


_COMPARISONS = {
    exp.EQ: lambda c, v: c == v,
    exp.NEQ: lambda c, v: c != v,
    exp.LT: lambda c, v: c < v,
    exp.LTE: lambda c, v: c <= v,
    exp.GT: lambda c, v: c > v,
    exp.GTE: lambda c, v: c >= v,
}


def predicate(node: exp.Expression) -> pl.Expr:  # noqa: C901, PLR0911 - one branch per SQL operator
    if isinstance(node, exp.Paren):
        return predicate(node.this)
    if isinstance(node, exp.And):
        return predicate(node.this) & predicate(node.expression)
    if isinstance(node, exp.Or):
        return predicate(node.this) | predicate(node.expression)
    if isinstance(node, exp.Not):
        return ~predicate(node.this)
    for cls, make in _COMPARISONS.items():
        if isinstance(node, cls):
            left, right = node.this, node.expression
            if isinstance(left, exp.Column):
                result: pl.Expr = make(pl.col(left.name), _literal(right))  # type: ignore[no-untyped-call]
                return result
            if isinstance(right, exp.Column):
                flipped = {exp.LT: exp.GT, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.GTE: exp.LTE}
                mirrored: pl.Expr = _COMPARISONS[flipped.get(cls, cls)](
                    pl.col(right.name), _literal(left)
                )  # type: ignore[no-untyped-call]
                return mirrored
            raise unsupported("a comparison without a column", node.sql())
    if isinstance(node, exp.In):
        if node.args.get("query"):
            raise unsupported("IN (subquery)", node.sql()[:80])
        col = column_of(node.this, "IN")
        return pl.col(col).is_in([_literal(v) for v in node.expressions])
    if isinstance(node, exp.Between):
        col = column_of(node.this, "BETWEEN")
        return pl.col(col).is_between(_literal(node.args["low"]), _literal(node.args["high"]))
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        return pl.col(column_of(node.this, "IS NULL")).is_null()
    raise unsupported(f"the condition {type(node).__name__.upper()}", node.sql()[:80])
