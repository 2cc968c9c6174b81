"""A SQL front end for the common subset of DP queries.

Supported, exactly::

    SELECT [g1, g2, ...,] AGG(...) [AS name], ...
    FROM <table>
    [WHERE <predicate>]
    [GROUP BY g1, g2, ...]

with ``AGG`` one of ``COUNT(*)``, ``COUNT(col)``, ``SUM(col)``, ``AVG(col)``,
``VARIANCE(col)`` / ``VAR_POP(col)`` / ``VAR_SAMP(col)``, ``MEDIAN(col)``,
``QUANTILE(col, q)`` and ``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)``,
and predicates built from comparisons with literals (``= <> < <= > >=``),
``IN (...)``, ``BETWEEN``, ``IS [NOT] NULL``, ``AND``, ``OR``, ``NOT``.
Anything else (joins, subqueries, HAVING, ORDER BY, LIMIT, DISTINCT,
expressions inside aggregates, window functions) is refused with a message
naming this subset. Parsing is done by ``sqlglot``; this module only maps its
syntax tree onto a :class:`~veil.dp.QuerySpec`.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import sqlglot
from sqlglot import exp

from veil.dp._query import Aggregate, QuerySpec
from veil.errors import InvalidInputError

__all__ = ["SUPPORTED_SQL", "parse_sql"]

SUPPORTED_SQL = (
    "SELECT [group columns,] COUNT(*) | COUNT(col) | SUM(col) | AVG(col) | VARIANCE(col) | "
    "MEDIAN(col) | QUANTILE(col, q) | PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col) [AS name], ... "
    "FROM table [WHERE comparisons with literals, IN, BETWEEN, IS NULL, AND/OR/NOT] "
    "[GROUP BY columns]"
)


def _unsupported(what: str, got: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} is outside the SQL subset Veil answers with differential privacy",
        expected=SUPPORTED_SQL,
        got=got,
        fix="rewrite the query in the supported subset (one table, aggregates of plain columns)",
    )


def parse_sql(sql: str, *, table_names: tuple[str, ...] = ()) -> QuerySpec:  # noqa: C901, PLR0912 - one check per refused clause
    """Parse ``sql`` into a :class:`QuerySpec` (refusing anything outside the subset)."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInputError("empty SQL", expected=SUPPORTED_SQL, got=repr(sql))
    try:
        statements = sqlglot.parse(sql)
    except sqlglot.errors.ParseError as exc:
        raise InvalidInputError(
            "the SQL does not parse", expected=SUPPORTED_SQL, got=str(exc).splitlines()[0]
        ) from exc
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise _unsupported("more than one statement", f"{len(statements)} statements")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        raise _unsupported(f"a {type(tree).__name__.upper()} statement", sql.strip()[:80])
    for key in (
        "joins",
        "having",
        "order",
        "limit",
        "offset",
        "distinct",
        "with_",
        "qualify",
        "windows",
    ):
        if tree.args.get(key):
            raise _unsupported(key.rstrip("_").upper().replace("_", " "), tree.args[key].sql()[:80])
    from_ = tree.args.get("from_") or tree.args.get("from")
    if from_ is None or not isinstance(from_.this, exp.Table):
        raise _unsupported("a query without one FROM table", sql.strip()[:80])
    table = from_.this.name
    if table_names and table not in table_names:
        raise InvalidInputError(
            f"unknown table '{table}'",
            expected=f"FROM {' or '.join(table_names)}",
            got=table,
            fix=f"query the dataset as FROM {table_names[0]}",
        )
    group_by: list[str] = []
    if tree.args.get("group"):
        for g in tree.args["group"].expressions:
            if not isinstance(g, exp.Column):
                raise _unsupported("grouping by an expression", g.sql())
            group_by.append(g.name)
    aggregates: list[Aggregate] = []
    for item in tree.expressions:
        alias = None
        node = item
        if isinstance(node, exp.Alias):
            alias, node = node.alias, node.this
        if isinstance(node, exp.Column):
            if node.name not in group_by:
                raise _unsupported(
                    f"a bare column '{node.name}' that is not in GROUP BY", node.sql()
                )
            continue
        aggregates.append(_aggregate(node, alias))
    if not aggregates:
        raise _unsupported("a query without aggregates", sql.strip()[:80])
    where_expr = where_text = None
    if tree.args.get("where"):
        where_node = tree.args["where"].this
        where_expr = _predicate(where_node)
        where_text = where_node.sql()
    return QuerySpec(
        aggregates=tuple(aggregates),
        group_by=tuple(group_by),
        where=where_expr,
        where_text=where_text,
        text=tree.sql(),
    )


def _column_of(node: exp.Expression | None, func: str) -> str:
    if isinstance(node, exp.Column):
        return node.name
    shown = node.sql() if node is not None else "nothing"
    raise _unsupported(f"{func} of an expression", shown)


def _literal_number(node: exp.Expression | None, what: str) -> float:
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    raise _unsupported(f"a non-numeric {what}", node.sql() if node is not None else "nothing")


def _aggregate(node: exp.Expression, alias: str | None) -> Aggregate:  # noqa: C901, PLR0911 - one branch per SQL function
    if isinstance(node, exp.Count):
        if node.args.get("distinct") or isinstance(node.this, exp.Distinct):
            raise _unsupported("COUNT(DISTINCT ...)", node.sql())
        if isinstance(node.this, exp.Star) or node.this is None:
            return Aggregate("count", alias=alias)
        return Aggregate("count", _column_of(node.this, "COUNT"), alias=alias)
    if isinstance(node, exp.Sum):
        return Aggregate("sum", _column_of(node.this, "SUM"), alias=alias)
    if isinstance(node, exp.Avg):
        return Aggregate("mean", _column_of(node.this, "AVG"), alias=alias)
    if isinstance(node, (exp.Variance, exp.VariancePop)):
        return Aggregate("variance", _column_of(node.this, "VARIANCE"), alias=alias)
    if isinstance(node, exp.Median):
        return Aggregate("quantile", _column_of(node.this, "MEDIAN"), q=0.5, alias=alias)
    if isinstance(node, exp.Quantile):
        q = _literal_number(node.args.get("quantile"), "quantile level")
        return Aggregate("quantile", _column_of(node.this, "QUANTILE"), q=q, alias=alias)
    if isinstance(node, exp.WithinGroup) and isinstance(
        node.this, (exp.PercentileCont, exp.PercentileDisc)
    ):
        q = _literal_number(node.this.this, "percentile")
        order = node.expression
        cols = order.expressions if isinstance(order, exp.Order) else []
        if len(cols) != 1:
            raise _unsupported("a percentile without one ORDER BY column", node.sql())
        return Aggregate("quantile", _column_of(cols[0].this, "PERCENTILE_CONT"), q=q, alias=alias)
    if (
        isinstance(node, exp.Anonymous)
        and node.name.upper() == "QUANTILE"
        and len(node.expressions) == _QUANTILE_ARGS
    ):
        col, q_node = node.expressions
        q = _literal_number(q_node, "quantile level")
        return Aggregate("quantile", _column_of(col, "QUANTILE"), q=q, alias=alias)
    raise _unsupported(f"the expression {type(node).__name__.upper()}", node.sql()[:80])


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
    raise _unsupported("a comparison with a non-literal", node.sql())


_QUANTILE_ARGS = 2
_COMPARISONS = {
    exp.EQ: lambda c, v: c == v,
    exp.NEQ: lambda c, v: c != v,
    exp.LT: lambda c, v: c < v,
    exp.LTE: lambda c, v: c <= v,
    exp.GT: lambda c, v: c > v,
    exp.GTE: lambda c, v: c >= v,
}


def _predicate(node: exp.Expression) -> pl.Expr:  # noqa: C901, PLR0911 - one branch per SQL operator
    if isinstance(node, exp.Paren):
        return _predicate(node.this)
    if isinstance(node, exp.And):
        return _predicate(node.this) & _predicate(node.expression)
    if isinstance(node, exp.Or):
        return _predicate(node.this) | _predicate(node.expression)
    if isinstance(node, exp.Not):
        return ~_predicate(node.this)
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
            raise _unsupported("a comparison without a column", node.sql())
    if isinstance(node, exp.In):
        if node.args.get("query"):
            raise _unsupported("IN (subquery)", node.sql()[:80])
        col = _column_of(node.this, "IN")
        return pl.col(col).is_in([_literal(v) for v in node.expressions])
    if isinstance(node, exp.Between):
        col = _column_of(node.this, "BETWEEN")
        return pl.col(col).is_between(_literal(node.args["low"]), _literal(node.args["high"]))
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        return pl.col(_column_of(node.this, "IS NULL")).is_null()
    raise _unsupported(f"the condition {type(node).__name__.upper()}", node.sql()[:80])
