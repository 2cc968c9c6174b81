"""``veil audit``: attack a trained model and write the audit report (HTML and JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from veil.cli._output import out, print_json, progress_bar
from veil.errors import InvalidInputError, require
from veil.workspace import Workspace

__all__ = ["audit", "render_audit"]

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "info": "cyan"}


def render_audit(report: Any) -> None:
    """The verdicts and the membership table, for people."""
    table = Table("attack", "", "finding", title=f"privacy audit of {report.model}")
    for v in report.verdicts():
        table.add_row(v.attack, f"[{_STYLE[v.level]}]{v.level.upper()}[/]", v.headline)
    out.print(table)
    if report.membership:
        levels = list(report.membership[0].tpr_at_fpr)
        mia = Table("attack", "mode", "refs", "AUC", *(f"TPR@{k}" for k in levels), "eps >=", "s")
        for r in report.membership:
            mia.add_row(
                r.attack,
                str(r.settings.get("mode")),
                str(r.settings.get("reference_models", 0)),
                f"{r.auc:.3f}",
                *("-" if r.tpr_at_fpr[k] is None else f"{r.tpr_at_fpr[k]:.2%}" for k in levels),
                f"{r.epsilon.shown:.2f}",
                f"{r.settings.get('seconds', 0):.1f}",
            )
        out.print(mia)


def _attacks(value: str) -> tuple[str, ...]:
    from veil.audit import AUDIT_ATTACKS  # noqa: PLC0415

    chosen = tuple(a.strip() for a in value.split(",") if a.strip())
    bad = [a for a in chosen if a not in AUDIT_ATTACKS]
    if bad or not chosen:
        raise InvalidInputError(
            "unknown attack in --attacks",
            expected=f"a comma-separated subset of {','.join(AUDIT_ATTACKS)}",
            got=", ".join(bad) or repr(value),
            fix="for example --attacks mia,dp",
        )
    return chosen


def audit(
    model: Annotated[
        str, typer.Option("--model", help="Name of a trained model (veil models list).")
    ],
    test: Annotated[
        str,
        typer.Option("--test", help="Registered held-out dataset: its rows are the non-members."),
    ],
    train: Annotated[
        str | None,
        typer.Option(
            "--train", help="The model's training dataset (default: the one on its card)."
        ),
    ] = None,
    attacks: Annotated[
        str,
        typer.Option(
            "--attacks", help="Comma-separated: mia,attribute,inversion,extraction,dp,fairness."
        ),
    ] = "mia,attribute,inversion,extraction,dp,fairness",
    references: Annotated[
        int, typer.Option("--references", help="Reference models (even): LiRA/RMIA/shadow.")
    ] = 16,
    max_points: Annotated[
        int | None,
        typer.Option("--max-points", help="At most this many members and as many non-members."),
    ] = None,
    attribute: Annotated[
        str | None,
        typer.Option(
            "--attribute", help="Categorical column for attribute inference and fairness."
        ),
    ] = None,
    canaries: Annotated[int, typer.Option("--canaries", help="Canaries of the DP audit.")] = 500,
    seed: Annotated[
        int, typer.Option("--seed", help="The audit's own sampling (no privacy depends on it).")
    ] = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML report to write.")] = Path(
        "audit-report.html"
    ),
    json_out: Annotated[
        Path | None,
        typer.Option("--json-out", help="Also write the full JSON (with per-example scores) here."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Attack a model with membership, attribute, inversion, extraction and DP-audit attacks."""
    require("torch", extra="train", purpose="veil audit")
    require("matplotlib", extra="audit", purpose="veil audit")
    from veil.audit import audit_model, write_report  # noqa: PLC0415
    from veil.train import ModelRegistry  # noqa: PLC0415

    chosen = _attacks(attacks)
    if output.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(
            "the report is HTML",
            expected="-o FILE.html",
            got=str(output),
            fix="name the report e.g. audit-report.html (use --json-out for JSON)",
        )
    from veil.data import Catalog  # noqa: PLC0415 - pandas and SQLAlchemy: keeps `veil --help` fast

    workspace = Workspace.locate()
    catalog = Catalog.open(workspace)
    try:
        with progress_bar() as progress:
            report = audit_model(
                catalog,
                ModelRegistry.for_workspace(workspace),
                model,
                train=train,
                test=test,
                attacks=chosen,
                references=references,
                max_points=max_points,
                attribute=attribute,
                canaries=canaries,
                seed=seed,
                progress=progress,
                report_path=str(output),
            )
    finally:
        catalog.store.dispose()
    write_report(report, output, json_out)
    if as_json:
        payload = report.to_dict()
        payload["report"] = str(output)
        print_json(payload)
        return
    render_audit(report)
    out.print(f"report: {output}" + (f"; JSON: {json_out}" if json_out else ""))
