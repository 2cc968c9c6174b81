"""``veil synth``: differentially private synthetic data of a registered dataset (AIM or MST)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from veil.cli._output import err, out, print_json, progress_bar
from veil.errors import InvalidInputError
from veil.workspace import Workspace

__all__ = ["synth"]


def _columns(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [c.strip() for c in value.split(",") if c.strip()]
    if not names:
        raise InvalidInputError(
            "--columns names no column", expected="a comma-separated list", got=repr(value)
        )
    return names


def _target(schema: Any, columns: list[str], wanted: str | None) -> str | None:
    """The column TSTR predicts: --target, else the first sensitive categorical column, else the last categorical."""
    if wanted is not None:
        if wanted not in columns:
            raise InvalidInputError(
                "--target is not a synthesised column",
                expected=f"one of {columns}",
                got=repr(wanted),
            )
        return wanted
    categorical = [c for c in columns if schema.column(c).kind == "categorical"]
    for name in schema.sensitive:
        if name in categorical:
            return str(name)
    return categorical[-1] if categorical else None


def _release_delta(
    ledger: Any, dataset: str, epsilon: float | None, delta: float | None, rho: float | None
) -> float | None:
    """The release's delta: --delta, else the dataset budget's (a rho release has none)."""
    if rho is not None:
        return None
    if epsilon is None:
        raise InvalidInputError(
            "synthetic data needs a privacy budget for the release",
            expected="--epsilon E (with --delta, or the budget's delta), or --rho R",
            got="neither",
            fix=f"veil synth {dataset} --epsilon 1 -o synth.csv",
        )
    if delta is not None:
        return delta
    budget = ledger.status(dataset).budget
    if budget is None or budget.delta is None:
        raise InvalidInputError(
            "the dataset's budget has no delta to default to",
            expected="--delta d (e.g. 1e-6), or --rho for a zCDP budget",
            got="no --delta",
        )
    return float(budget.delta)


def synth(
    dataset: Annotated[str, typer.Argument(help="Registered dataset name.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the rows: .csv or .parquet.")
    ],
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Epsilon this release may spend.")
    ] = None,
    delta: Annotated[
        float | None,
        typer.Option("--delta", help="Delta of the release (default: the dataset budget's)."),
    ] = None,
    rho: Annotated[
        float | None,
        typer.Option(
            "--rho", help="zCDP rho instead of epsilon (for a dataset with a rho budget)."
        ),
    ] = None,
    method: Annotated[str, typer.Option("--method", help="aim (default) or mst.")] = "aim",
    rows: Annotated[
        int | None,
        typer.Option("--rows", help="Rows to generate (default: the model's noisy total)."),
    ] = None,
    workload: Annotated[
        str,
        typer.Option(
            "--workload",
            help="3-way (default), 2-way, 1-way, or a file of cliques (a,b,c per line).",
        ),
    ] = "3-way",
    max_cells: Annotated[
        int, typer.Option("--max-cells", help="Largest marginal a named workload keeps.")
    ] = 10_000,
    columns: Annotated[
        str | None, typer.Option("--columns", help="Only these columns, comma-separated.")
    ] = None,
    bins: Annotated[
        int,
        typer.Option("--bins", help="Equal-width bins over each numeric column's declared bounds."),
    ] = 16,
    rounds: Annotated[
        int | None, typer.Option("--rounds", help="AIM selection rounds (default: columns + 1).")
    ] = None,
    max_model_mb: Annotated[
        float, typer.Option("--max-model-mb", help="Largest graphical model AIM may grow.")
    ] = 2.0,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Seed of the post-processing (sampling); the noise is never seeded."
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also evaluate the release and attack it: an HTML report (non-private; recorded).",
        ),
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(
            "--holdout", help="With --report: fraction of rows held out of the fit for the attacks."
        ),
    ] = 0.2,
    target: Annotated[
        str | None, typer.Option("--target", help="With --report: the column TSTR predicts.")
    ] = None,
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why (recorded in the ledger and the trail).")
    ] = "synthetic data: sharing",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the card and charge as JSON.")
    ] = False,
) -> None:
    """Differentially private synthetic data (AIM or MST); the ledger is charged before it runs.

    The domain comes from the dataset's declared bounds and categories, never from
    its rows. Every measurement and selection is one mechanism of the release's
    ledger event. The card (method, budget, workload, dataset SHA-256, ledger
    event) is written beside the output as OUTPUT.card.json.
    """
    from veil.access import Access  # noqa: PLC0415
    from veil.data import Catalog  # noqa: PLC0415
    from veil.ledger import Ledger  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.synth import (  # noqa: PLC0415
        OUTPUT_SUFFIXES,
        SynthSettings,
        synthesize_dataset,
        write_release,
    )
    from veil.vault import KeyStore  # noqa: PLC0415

    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidInputError(
            "unknown output format",
            expected="-o ending in .csv or .parquet",
            got=str(output),
            fix="name the output synth.csv or synth.parquet",
        )
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(
            "the report is an HTML file", expected="--report ending in .html", got=str(report)
        )
    if method not in ("aim", "mst"):
        raise InvalidInputError("unknown --method", expected="aim or mst", got=repr(method))
    settings = SynthSettings(rounds=rounds, max_model_mb=max_model_mb)
    workspace = Workspace.locate()
    store = Store.for_workspace(workspace)
    access = Access.open(workspace, store=store)
    catalog = Catalog(store, workspace.settings, access=access)
    ledger = Ledger(
        store,
        workspace.settings,
        key=KeyStore.for_workspace(workspace).get("ledger"),
        access=access,
    )
    try:
        delta = _release_delta(ledger, dataset, epsilon, delta, rho)
        if report is not None:
            # The report's numbers (utility, attack success) are computed from the real rows
            # without noise: a use without DP, recorded before the rows are read.
            ledger.record_non_private(
                dataset,
                f"evaluation report of a synthetic release ({method.upper()})",
                purpose=purpose,
                details={"report": report.name, "holdout": holdout},
            )
        with progress_bar() as progress:
            result = synthesize_dataset(
                catalog,
                ledger,
                dataset,
                epsilon=epsilon,
                delta=delta,
                rho=rho,
                method=method,
                rows=rows,
                workload=workload,
                max_cells=max_cells,
                columns=_columns(columns),
                bins=bins,
                purpose=purpose,
                seed=seed,
                holdout=holdout if report is not None else 0.0,
                settings=settings,
                progress=progress,
            )
        written = write_release(result, output)
        evaluation = None
        if report is not None:
            evaluation = _write_report(result, report, catalog, dataset, target, seed)
        status = ledger.status(dataset)
    except KeyboardInterrupt:
        err.print(
            "Interrupted: nothing was written. The charge stands (the mechanisms may have run).",
            markup=False,
        )
        raise typer.Exit(code=130) from None
    finally:
        store.dispose()
    payload = {**result.to_dict(), "written": written, "budget": status.to_dict()}
    if evaluation is not None:
        payload["report"] = {"path": str(report), "evaluation": evaluation}
    if as_json:
        print_json(payload)
        return
    card = result.card
    out.print(
        f"{card.rows:,} synthetic rows ({card.method.upper()}, {len(card.columns)} columns) "
        f"written to {written['data']}; card: {written['card']}",
        markup=False,
    )
    charged = payload["charged"] or {}
    out.print(
        f"charged: epsilon {charged.get('charged', {}).get('epsilon')} "
        f"(rho {card.rho:.4g}) as ledger event {card.ledger_event}; "
        f"{card.run['rounds']} rounds, {len(card.run['measured'])} marginals measured",
        markup=False,
    )
    if evaluation is not None:
        out.print(f"report: {report}", markup=False)


def _write_report(
    result: Any, path: Path, catalog: Any, dataset: str, target: str | None, seed: int | None
) -> dict[str, Any]:
    from veil.synth import evaluate_release, render_report  # noqa: PLC0415

    info = catalog.get(dataset)
    columns = list(result.encoder.columns)
    with progress_bar() as progress:
        progress_task = "evaluate and attack the release"
        from veil.progress import emit  # noqa: PLC0415

        emit(progress, progress_task, 0, 1, unit="steps")
        evaluation = evaluate_release(
            result.train[columns],
            result.holdout[columns],
            result.data,
            encoder=result.encoder,
            workload=result.workload,
            target=_target(info.schema, columns, target),
            seed=0 if seed is None else seed,
            claimed_epsilon=result.card.epsilon,
            delta=result.card.delta or 0.0,
        )
        emit(progress, progress_task, 1, 1, unit="steps")
    render_report(evaluation, result.card.to_dict(), path)
    data: dict[str, Any] = evaluation.to_dict()
    return data
