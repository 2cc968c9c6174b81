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

import re

import sqlglot
from sqlglot import exp

from veil.dp._spec import Aggregate, QuerySpec
from veil.dp._where import SUPPORTED_SQL, column_of, compile_where, unsupported
from veil.errors import InvalidInputError

__all__ = ["SUPPORTED_SQL", "parse_sql"]

_QUANTILE_ARGS = 2
MAX_SQL_CHARS = 10_000
# sqlglot parses parentheses recursively (about 20 stack frames a level: 50 levels exhaust
# Python's default limit); a tree without them (a OR b OR ...) is built iteratively.
MAX_SQL_PARENS = 24
MAX_SQL_DEPTH = 100
_SAMPLE_VARIANCE = re.compile(r"\bVAR_SAMP\s*\(", re.IGNORECASE)


def parse_sql(sql: str, *, table_names: tuple[str, ...] = ()) -> QuerySpec:
    """Parse ``sql`` into a :class:`QuerySpec` (refusing anything outside the subset).

    Every failure is an :class:`~veil.errors.InvalidInputError` (exit code 3):
    the text is bounded in length (``MAX_SQL_CHARS``) and nesting
    (``MAX_SQL_PARENS``) before sqlglot sees it, and the syntax tree in depth
    (``MAX_SQL_DEPTH``); any recursion that still runs out is refused too.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInputError("empty SQL", expected=SUPPORTED_SQL, got=repr(sql))
    if len(sql) > MAX_SQL_CHARS:
        raise InvalidInputError(
            "the query is too long",
            expected=f"at most {MAX_SQL_CHARS:,} characters",
            got=f"{len(sql):,} characters",
            fix="shorten the condition (a long OR chain is an IN list: x IN (1, 2, 3))",
        )
    depth = _paren_depth(sql)
    if depth > MAX_SQL_PARENS:
        raise InvalidInputError(
            "the query is nested too deeply",
            expected=f"at most {MAX_SQL_PARENS} levels of parentheses",
            got=f"{depth} levels",
            fix="remove redundant parentheses",
        )
    try:
        return _parse(sql, table_names)
    except RecursionError as exc:  # e.g. NOT NOT NOT ..., parsed recursively without parentheses
        raise InvalidInputError(
            "the query is nested too deeply",
            expected=f"a syntax tree at most {MAX_SQL_DEPTH} levels deep",
            got="a tree too deep to parse",
            fix="shorten the condition (a long OR chain is an IN list: x IN (1, 2, 3))",
        ) from exc


def _paren_depth(sql: str) -> int:
    """The deepest nesting of parentheses outside quoted strings and identifiers."""
    depth = deepest = 0
    quote = ""
    for char in sql:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _tree_depth(tree: exp.Expr) -> int:
    """The depth of a syntax tree, iteratively (the tree may be too deep to recurse over)."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_SQL_DEPTH:
            break
        stack.extend((child, depth + 1) for child in node.iter_expressions())
    return deepest


def _parse(sql: str, table_names: tuple[str, ...]) -> QuerySpec:  # noqa: C901, PLR0912 - one check per refused clause
    if _SAMPLE_VARIANCE.search(sql):
        raise unsupported(
            "the sample variance (VAR_SAMP)",
            "VAR_SAMP; VARIANCE and VAR_POP give the population variance (divided by n)",
        )
    try:
        parsed = sqlglot.parse(sql)
    except sqlglot.errors.SqlglotError as exc:  # ParseError, TokenError (an open quote), ...
        raise InvalidInputError(
            "the SQL does not parse",
            expected=SUPPORTED_SQL,
            got=(str(exc).splitlines() or [type(exc).__name__])[0][:200],
            fix="check the quotes and parentheses",
        ) from exc
    statements = [s for s in parsed if s is not None]
    for statement in statements:
        depth = _tree_depth(statement)
        if depth > MAX_SQL_DEPTH:
            raise InvalidInputError(
                "the query is nested too deeply",
                expected=f"a syntax tree at most {MAX_SQL_DEPTH} levels deep",
                got=f"more than {MAX_SQL_DEPTH} levels",
                fix="shorten the condition (a long OR chain is an IN list: x IN (1, 2, 3))",
            )
    if len(statements) != 1:
        raise unsupported("more than one statement", f"{len(statements)} statements")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        raise unsupported(f"a {type(tree).__name__.upper()} statement", sql.strip()[:80])
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
        value = tree.args.get(key)
        if value:
            parts = value if isinstance(value, list) else [value]
            shown = " ".join(p.sql() if isinstance(p, exp.Expression) else str(p) for p in parts)
            raise unsupported(key.rstrip("_").rstrip("s").upper().replace("_", " "), shown[:80])
    from_ = tree.args.get("from_") or tree.args.get("from")
    if from_ is None or not isinstance(from_.this, exp.Table):
        raise unsupported("a query without one FROM table", sql.strip()[:80])
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
                raise unsupported("grouping by an expression", g.sql())
            group_by.append(g.name)
    aggregates: list[Aggregate] = []
    for item in tree.expressions:
        alias = None
        node = item
        if isinstance(node, exp.Alias):
            alias, node = node.alias, node.this
        if isinstance(node, exp.Column):
            if node.name not in group_by:
                raise unsupported(
                    f"a bare column '{node.name}' that is not in GROUP BY", node.sql()
                )
            continue
        aggregates.append(_aggregate(node, alias))
    if not aggregates:
        raise unsupported("a query without aggregates", sql.strip()[:80])
    where_text = None
    if tree.args.get("where"):
        where_text = tree.args["where"].this.sql()
        compile_where(where_text)  # refuse an unsupported condition now
    return QuerySpec(
        aggregates=tuple(aggregates),
        group_by=tuple(group_by),
        where=where_text,
        text=tree.sql(),
    )


def _literal_number(node: exp.Expression | None, what: str) -> float:
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    raise unsupported(f"a non-numeric {what}", node.sql() if node is not None else "nothing")


def _aggregate(node: exp.Expression, alias: str | None) -> Aggregate:  # noqa: C901, PLR0911, PLR0912 - one branch per SQL function
    if isinstance(node, exp.Count):
        if node.args.get("distinct") or isinstance(node.this, exp.Distinct):
            raise unsupported("COUNT(DISTINCT ...)", node.sql())
        if isinstance(node.this, exp.Star) or node.this is None:
            return Aggregate("count", alias=alias)
        return Aggregate("count", column_of(node.this, "COUNT"), alias=alias)
    if isinstance(node, exp.Sum):
        return Aggregate("sum", column_of(node.this, "SUM"), alias=alias)
    if isinstance(node, exp.Avg):
        return Aggregate("mean", column_of(node.this, "AVG"), alias=alias)
    if isinstance(node, (exp.Variance, exp.VariancePop)):
        # VAR_SAMP is refused before parsing (sqlglot spells it VARIANCE too).
        return Aggregate("variance", column_of(node.this, "VARIANCE"), alias=alias)
    if isinstance(node, exp.Median):
        return Aggregate("quantile", column_of(node.this, "MEDIAN"), q=0.5, alias=alias)
    if isinstance(node, exp.Quantile):
        q = _literal_number(node.args.get("quantile"), "quantile level")
        return Aggregate("quantile", column_of(node.this, "QUANTILE"), q=q, alias=alias)
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileDisc):
        raise unsupported("PERCENTILE_DISC", f"{node.sql()}; use PERCENTILE_CONT")
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        q = _literal_number(node.this.this, "percentile")
        order = node.expression
        cols = order.expressions if isinstance(order, exp.Order) else []
        if len(cols) != 1:
            raise unsupported("a percentile without one ORDER BY column", node.sql())
        if cols[0].args.get("desc"):
            q = 1.0 - q  # the q-th value in descending order is the (1 - q) quantile
        return Aggregate("quantile", column_of(cols[0].this, "PERCENTILE_CONT"), q=q, alias=alias)
    if (
        isinstance(node, exp.Anonymous)
        and node.name.upper() == "QUANTILE"
        and len(node.expressions) == _QUANTILE_ARGS
    ):
        col, q_node = node.expressions
        q = _literal_number(q_node, "quantile level")
        return Aggregate("quantile", column_of(col, "QUANTILE"), q=q, alias=alias)
    raise unsupported(f"the expression {type(node).__name__.upper()}", node.sql()[:80])
