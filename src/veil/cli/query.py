"""``veil query``: a differentially private SQL query on a registered dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from veil.cli._output import out, print_json
from veil.cli.budget import render_status
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.dp import QueryResult

# veil.dp and veil.ledger (OpenDP, Polars, dp_accounting) load inside the command.
# The supported subset, as in veil.dp.SUPPORTED_SQL (tests check the two agree).
SQL_HELP = (
    "The query: SELECT [g,] COUNT(*) | SUM(x) | AVG(x) | VARIANCE(x) | MEDIAN(x) | "
    "QUANTILE(x, q) [AS name] FROM t [WHERE ...] [GROUP BY g]"
)

__all__ = ["query", "render_result"]


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"  # noqa: PLR2004


def _cell(cell: Any) -> str:
    if not isinstance(cell, dict):
        return str(cell)
    if cell.get("ci") is not None:
        lo, hi = cell["ci"]
        return f"{_fmt(cell['value'])}  [{_fmt(lo)}, {_fmt(hi)}]"
    if cell.get("ci_quantile_level") is not None:
        lo, hi = cell["ci_quantile_level"]
        return f"{_fmt(cell['value'])}  (level in [{lo:.3f}, {hi:.3f}])"
    return _fmt(cell["value"])


def render_result(result: QueryResult) -> None:
    """Print noisy rows with their confidence intervals (shared with the demo)."""
    table = Table(
        *result.columns, title=f"DP answer, {result.confidence:.0%} intervals for the noise"
    )
    for row in result.rows:
        table.add_row(*(_cell(row[c]) for c in result.columns))
    out.print(table)
    for note in result.notes:
        out.print(f"· {note}")
    out.print("· intervals cover the DP noise only, not clamping or contribution-bounding bias")


def query(
    dataset: Annotated[
        str, typer.Argument(help="Registered dataset name (also usable as FROM t).")
    ],
    sql: Annotated[str, typer.Option("--sql", help=SQL_HELP)],
    epsilon: Annotated[float, typer.Option("--epsilon", help="Epsilon this query may spend.")],
    delta: Annotated[float, typer.Option("--delta", help="Delta this query may spend.")] = 0.0,
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why (recorded in the ledger).")
    ] = "statistics: ad-hoc analysis",
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence level of the intervals.")
    ] = 0.95,
    mechanism: Annotated[
        str,
        typer.Option("--mechanism", help="auto (Laplace), laplace or gaussian (needs --delta)."),
    ] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="Where the rows are aggregated: polars (this machine, default) or spark "
            "(needs the spark extra and Java 17+). Same SQL, same charge, same answers.",
        ),
    ] = "polars",
    spark_master: Annotated[
        str,
        typer.Option("--spark-master", help="With --engine spark: local[N] or spark://host:port."),
    ] = "local[2]",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Answer a SQL query with differential privacy; the ledger is charged before it runs."""
    from veil.access import Access  # noqa: PLC0415
    from veil.dp import query_dataset  # noqa: PLC0415
    from veil.ledger import Ledger  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415

    workspace = Workspace.locate()
    from veil.data import Catalog  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    store = Store.for_workspace(workspace)
    # One acting principal for the catalogue and the ledger: one set of checks, one trail.
    access = Access.open(workspace, store=store)
    catalog = Catalog(store, workspace.settings, access=access)
    # The one budget gate: the workspace ledger, the only guard this command charges.
    ledger = Ledger(
        store,
        workspace.settings,
        key=KeyStore.for_workspace(workspace).get("ledger"),
        access=access,
    )
    try:
        result = query_dataset(
            catalog,
            guard=ledger,
            dataset=dataset,
            sql=sql,
            epsilon=epsilon,
            delta=delta,
            purpose=purpose,
            confidence=confidence,
            mechanism=mechanism,
            engine=engine,
            spark_master=spark_master,
        )
        status = ledger.status(dataset)
    finally:
        catalog.store.dispose()
    if as_json:
        payload = result.to_dict()
        payload["budget"] = status.to_dict()
        print_json(payload)
        return
    render_result(result)
    render_status(status)
