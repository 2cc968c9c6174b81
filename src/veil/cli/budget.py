"""``veil budget``: set, show and audit a dataset's privacy budget.

The ledger checks the acting principal's role (:meth:`veil.ledger.Ledger.open`
takes the workspace's access): ``budget.set`` to set or change a budget
(owners), ``ledger.read`` to show, list or verify (owners, analysts, auditors).
A refusal exits 9 and is recorded on the trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from veil.cli._output import out, print_json, progress_bar
from veil.errors import InvalidInputError

if TYPE_CHECKING:
    from veil.ledger import BudgetStatus

# veil.ledger (dp_accounting, scipy) is imported inside each command: `veil --help` stays fast.

__all__ = ["app", "render_status"]

app = typer.Typer(help="Set, show and audit a dataset's privacy budget.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
DatasetArg = Annotated[str, typer.Argument(help="Registered dataset name.")]


def _budget_flags(epsilon: float | None, delta: float | None, rho: float | None) -> str:
    flags = {"--epsilon": epsilon, "--delta": delta, "--rho": rho}
    return " ".join(f"{flag} {value:g}" for flag, value in flags.items() if value is not None)


def render_status(status: BudgetStatus) -> None:
    """Print a budget status as a short table (shared with ``veil query`` and the demo)."""
    table = Table("dataset", "budget", "spent", "remaining", "releases", "accountant")
    if status.budget is None:
        table.add_row(
            status.dataset, "none (nothing may be released)", "-", "-", str(status.events), "-"
        )
    elif status.budget.rho is not None:
        table.add_row(
            status.dataset,
            str(status.budget),
            f"rho={status.spent.rho or 0:.4g}",
            f"rho={status.remaining:.4g}",
            str(status.events),
            status.accountant,
        )
    else:
        spent = status.spent.epsilon
        shown = "inf" if spent is None else f"{spent:.4g}"
        table.add_row(
            status.dataset,
            str(status.budget),
            f"epsilon={shown}",
            f"epsilon={status.remaining:.4g}",
            str(status.events),
            status.accountant,
        )
    out.print(table)
    if status.cross_check.get("epsilon") is not None:
        out.print(
            f"cross-check: {status.cross_check['accountant'].upper()} bounds the same history by "
            f"epsilon={status.cross_check['epsilon']:.4g} (PLD is the tighter of the two)"
        )


@app.command("set")
def set_(
    dataset: DatasetArg,
    epsilon: Annotated[float | None, typer.Option("--epsilon", help="Total epsilon.")] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="Total delta (default 0).")] = None,
    rho: Annotated[float | None, typer.Option("--rho", help="A zCDP budget instead.")] = None,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="Why (kept in the history and on the trail); required to change a budget.",
        ),
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Give a dataset a privacy budget, or change it with --reason (owners; the change is recorded)."""
    from veil.ledger import Budget, Ledger  # noqa: PLC0415

    budget = Budget(epsilon=epsilon, delta=delta, rho=rho)
    ledger = Ledger.open()
    try:
        status = ledger.set_budget(dataset, budget, reason=reason)
    except InvalidInputError as why:
        if reason.strip() or "needs a reason" not in why.message:
            raise
        raise InvalidInputError(
            f"'{dataset}' already has a budget: changing it needs --reason",
            expected="a reason, kept with the change in the history and on the trail",
            got="no --reason",
            fix=f'veil budget set {dataset} {_budget_flags(epsilon, delta, rho)} --reason "why, '
            'e.g. approved by the DPO, ticket 123"',
        ) from why
    finally:
        ledger.store.dispose()
    if as_json:
        print_json(status.to_dict())
        return
    render_status(status)


@app.command()
def show(dataset: DatasetArg, as_json: JsonOption = False) -> None:
    """Show a dataset's budget, what its releases spent, and what remains."""
    from veil.ledger import Ledger  # noqa: PLC0415

    ledger = Ledger.open()
    try:
        status = ledger.status(dataset)
    finally:
        ledger.store.dispose()
    if as_json:
        print_json(status.to_dict())
        return
    render_status(status)


def _mechanisms(item: dict[str, Any]) -> str:
    parts = []
    for m in item["mechanisms"]:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in m["parameters"].items()
            if k
            in {
                "scale",
                "sigma",
                "sensitivity",
                "epsilon",
                "delta",
                "sampling_rate",
                "noise_multiplier",
                "steps",
                "threshold",
                "quantity",
                "column",
                "q",
            }
        )
        parts.append(f"{m['name']}({params})")
    return "; ".join(parts)


@app.command()
def history(dataset: DatasetArg, as_json: JsonOption = False) -> None:
    """Every release and budget change: who, when, what, why, and the mechanisms that ran."""
    from veil.ledger import Ledger  # noqa: PLC0415

    ledger = Ledger.open()
    try:
        items = ledger.history(dataset)
    finally:
        ledger.store.dispose()
    if as_json:
        print_json({"dataset": dataset, "history": items})
        return
    table = Table("#", "when (UTC)", "who", "what", "purpose", "mechanisms", "spent after")
    for item in items:
        when = item["at"][:19].replace("T", " ")
        if item["type"] == "budget":
            b = item["budget"]
            text = (
                f"rho={b['rho']:g}"
                if b["kind"] == "zcdp"
                else f"epsilon={b['epsilon']:g}, delta={b['delta']:g}"
            )
            table.add_row(
                "", when, item["actor"], f"[bold]budget set[/bold] {text}", item["reason"], "", ""
            )
            continue
        after = item["spent_after"]
        spent = (
            f"rho={after['rho']:.4g}"
            if after["rho"] is not None
            else ("inf" if after["epsilon"] is None else f"epsilon={after['epsilon']:.4g}")
        )
        table.add_row(
            str(item["seq"]),
            when,
            item["actor"],
            item["what"],
            item["purpose"],
            _mechanisms(item),
            spent,
        )
    out.print(table)


@app.command()
def verify(dataset: DatasetArg, as_json: JsonOption = False) -> None:
    """Recompose a dataset's whole history from scratch and check it against the ledger.

    Walks the event chain from the first release, recomposes every event,
    compares with the checkpoint and with what the next charge would use, and
    exits non-zero (11) when anything disagrees.
    """
    from veil.ledger import Ledger, LedgerIntegrityError  # noqa: PLC0415

    ledger = Ledger.open()
    try:
        with progress_bar() as progress:
            report = ledger.verify(dataset, progress=progress)
    finally:
        ledger.store.dispose()
    if as_json:
        print_json(report)
    else:
        table = Table("check", "result")
        table.add_row("events", f"{report['events']:,}")
        table.add_row("chain", report["chain"])
        table.add_row("checkpoint", report["checkpoint"])
        table.add_row("spent (recomposed)", str(report["spent"]))
        table.add_row("spent (incremental)", str(report["incremental"]))
        out.print(table)
        for problem in report["problems"]:
            out.print(f"[red]problem:[/red] {problem}")
        if report["ok"]:
            out.print(f"The ledger of '{dataset}' is intact.")
    if not report["ok"]:
        raise typer.Exit(LedgerIntegrityError.exit_code)
