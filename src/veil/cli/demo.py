"""``veil demo``: an end-to-end tour on bundled data, ending in a self-contained HTML summary.

The tour runs in its own directory (``./veil-demo`` by default) with its own
embedded SQLite workspace, whatever ``VEIL_HOME`` or ``VEIL_DATABASE_URL`` say,
so it never touches a real workspace. It registers scikit-learn's bundled
diabetes data with a declared privacy schema, answers a DP query charged to a
budget and refuses one over it, shows an analyst's service key refused a
budget raise with the trail verified and one inclusion proof checked by the
standalone verifier, trains a DP-SGD model on the bundled digits
with its privacy card, and audits that model (membership, inversion,
extraction, and a canary DP audit against its claimed epsilon). It then scans
and anonymises the patients, redacts a clinical note, runs the doctor's
encrypted-inference round trip (CKKS), a secure average over three hospitals
(one process each, over TCP) and a federated run over ten clinics.

This module parses and prints; the steps are in :mod:`veil.cli._demo` and the
HTML comes from its template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from veil.cli._demo import DEMO_EPSILON, DEMO_K, DEMO_QI, DEMO_SQL, Tour, run_demo
from veil.cli._output import out, print_json
from veil.cli.datasets import render_schema

__all__ = ["demo", "run_demo"]


def _print_release_steps(tour: Tour) -> None:
    """The anonymisation and redaction steps, for people."""
    anonymise_step = next((s for s in tour.steps if s["title"].startswith("Scan")), None)
    if anonymise_step is not None:
        from veil.cli.anonymize import render_scan  # noqa: PLC0415

        out.print(
            f"\n[bold]Re-identification risk of the patients on {', '.join(DEMO_QI)}, "
            f"before and after k = {DEMO_K}[/bold]"
        )
        render_scan(anonymise_step["before"], "before: the registered table")
        render_scan(anonymise_step["after"], f"after: {anonymise_step['output']}")
        unchanged = anonymise_step.get("unchanged") or []
        if unchanged:
            names = ", ".join(c["column"] for c in unchanged)
            lowest = min(c["k_with_it"] for c in unchanged)
            out.print(
                f"Released as read, not generalised: {names} (k holds for {', '.join(DEMO_QI)}; "
                f"an attacker who also holds one of these faces k = {lowest}).",
                markup=False,
                soft_wrap=True,
            )
    redact_step = next((s for s in tour.steps if s["title"].startswith("Redact")), None)
    if redact_step is not None and "tagged" in redact_step:
        out.print("\n[bold]A clinical note, with its PII replaced[/bold]")
        out.print(redact_step["note"], markup=False)
        out.print("[bold]type tags:[/bold]")
        out.print(redact_step["tagged"], markup=False)
        out.print("[bold]consistent surrogates (keyed):[/bold]")
        out.print(redact_step["surrogate"], markup=False)
        found = ", ".join(f"{n} {t}" for t, n in redact_step["counts"].items())
        out.print(
            f"Found {found}; the encrypt operator's output decrypts back to the note: "
            f"{redact_step['reversible']}."
        )
    elif redact_step is not None:
        out.print(f"Redaction skipped: {redact_step['skipped']}")


def _print_trail_step(tour: Tour) -> None:
    """The roles-and-trail step, for people."""
    step = next((s for s in tour.steps if s["title"].startswith("An analyst")), None)
    if step is None:
        return
    key, report, proof = step["key"], step["verify"], step["proof"]
    out.print(
        f"\n[bold]Roles and the trail[/bold]: an analyst key ({key['key_id']}, "
        f"{key['principal']}, analyst on 'diabetes') asked to raise the budget.",
    )
    if step.get("refused"):
        out.print(f"Refused: {step['error']['message']}", markup=False, soft_wrap=True)
    else:
        out.print("[red]It was not refused.[/red]")
    rate = report["entries_per_second"] or 0.0
    out.print(
        f"Trail {'intact' if report['ok'] else 'NOT intact'}: {report['size']} entries verified "
        f"({rate:,.0f} entries/s); the refusal is entry {proof['seq']}, whose inclusion proof "
        f"({proof['hashes']} hash(es), {proof['bytes']:,} bytes) the standalone verifier "
        f"{'accepts' if proof['verified'] else 'REJECTS'} with the trail's public key "
        f"(and {'accepts' if proof['tampered_verified'] else 'rejects'} once the entry is "
        f"changed): {proof['file']}",
        markup=False,
        soft_wrap=True,
    )


def _print_crypto_steps(tour: Tour) -> None:
    """The encrypted-inference and MPC steps, for people."""
    he_step = next((s for s in tour.steps if s["title"].startswith("Encrypted")), None)
    if he_step is not None and "plan" in he_step:
        from veil.cli.he import render_round_trip  # noqa: PLC0415

        out.print()
        render_round_trip(he_step)
    elif he_step is not None:
        out.print(f"Encrypted inference skipped: {he_step['skipped']}")
    fl_step = next((s for s in tour.steps if s["title"].startswith("Federated")), None)
    if fl_step is not None and "privacy" in fl_step:
        privacy = fl_step["privacy"]
        out.print(
            f"\n[bold]Ten clinics train one model[/bold] (SecAgg+, DP-FedAvg): accuracy "
            f"{fl_step['accuracy']:.3f} after {fl_step['rounds']} rounds; user-level epsilon "
            f"{privacy['epsilon']:.2f} at delta {privacy['delta']:g}, charged as one event to "
            "'digits', the same people's budget as the central model's."
        )
    mpc_step = next((s for s in tour.steps if s["title"].startswith("A secure average")), None)
    if mpc_step is not None:
        out.print(
            f"\n[bold]Three hospitals ({', '.join(map(str, mpc_step['patients']))} patients) "
            f"average their BMI[/bold]: {mpc_step['secure_mean']:.4f} from secret shares vs "
            f"{mpc_step['plaintext_mean']:.4f} pooled (fixed-point resolution "
            f"{mpc_step['resolution']:.1e}); no hospital saw another's records."
        )


def _print_forget_step(tour: Tour) -> None:
    """The consent-and-erasure step, for people."""
    step = next((s for s in tour.steps if s["title"].startswith("Forget")), None)
    if step is None:
        return
    if "skipped" in step:
        out.print(f"Erasure and unlearning skipped: {step['skipped']}")
        return
    erasure, unlearning = step["erasure"], step["unlearning"]
    check, sisa = unlearning["verification"], step["model"]["sisa"]
    out.print(
        f"\n[bold]Patient {step['patient']} withdraws consent and asks to be erased[/bold]: "
        f"'patients' version {erasure['from_version']} -> {erasure['to_version']} "
        f"({erasure['rows_removed']} row removed) in {step['erase_seconds']:.2f} s; the SISA "
        f"model ({sisa['shards']} shards x {sisa['slices']} slices) retrained shard "
        f"{', '.join(map(str, unlearning['unlearning']['shards_retrained']))} only."
    )
    if check.get("run"):
        out.print(
            f"Membership test (offline LiRA, {check['reference_models']} reference ensembles): "
            f"the patient's score sat at the {check['before']['percentile']:.0f}th percentile of "
            f"{check['non_members']} never-seen patients before, "
            f"{check['after']['percentile']:.0f}th after: {unlearning['verdict']}."
        )
    out.print(
        f"A backup of the old version no longer opens: {step['backup_after_erasure']}.",
        markup=False,
    )


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the demo workspace and summary.")
    ] = Path("veil-demo"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run the end-to-end tour on bundled data and write an HTML summary."""
    tour, info = run_demo(out_dir)
    summary = tour.directory / "summary.html"
    if as_json:
        print_json({"directory": str(tour.directory), "summary": str(summary), "steps": tour.steps})
        return
    out.print(
        "[bold]Veil demo[/bold]: scikit-learn's diabetes data (442 patients), bundled with scikit-learn."
    )
    for number, step in enumerate(tour.steps, start=1):
        out.print(f"{number}. {step['title']} ({step['seconds']:.2f} s)")
    render_schema(info)
    query_step = next(s for s in tour.steps if s["title"].startswith("Answer"))
    refusal = next(s for s in tour.steps if s["title"].startswith("Refuse"))
    from veil.cli.query import render_result  # noqa: PLC0415
    from veil.dp import QueryResult  # noqa: PLC0415

    answer = query_step["answer"]
    out.print(f"\n[bold]{DEMO_SQL}[/bold]  (epsilon {DEMO_EPSILON:g})")
    render_result(
        QueryResult(
            columns=tuple(answer["columns"]),
            rows=answer["rows"],
            epsilon=answer["epsilon"],
            delta=answer["delta"],
            confidence=answer["ci_level"],
            mechanism=answer["mechanism"],
            notes=tuple(answer["notes"]),
        )
    )
    status = refusal["budget_after"]
    out.print(
        f"Budget of 'diabetes': epsilon {status['budget']['epsilon']:g}, delta "
        f"{status['budget']['delta']:g}; spent epsilon {status['spent']['epsilon']:.4g} (PLD), "
        f"remaining {status['remaining']:.4g}; {status['events']} release(s) in the ledger."
    )
    if refusal.get("refused"):
        out.print(f"A query asking for epsilon 5 was refused: {refusal['error']['message']}")
    _print_trail_step(tour)
    model_step = next(s for s in tour.steps if s["title"].startswith("Train"))
    if "card" in model_step:
        from veil.cli.models import render_card  # noqa: PLC0415
        from veil.train import PrivacyCard  # noqa: PLC0415

        out.print("\n[bold]A DP-SGD model on scikit-learn's digits (1,198 training images)[/bold]")
        render_card(PrivacyCard.from_dict(model_step["card"]))
    else:
        out.print(f"Model training skipped: {model_step['skipped']}")
    audit_step = next((s for s in tour.steps if s["title"].startswith("Audit")), None)
    if audit_step is not None and "verdicts" in audit_step:
        from rich.table import Table  # noqa: PLC0415

        table = Table("attack", "", "finding", title="privacy audit of digits-logreg-dp")
        for v in audit_step["verdicts"]:
            table.add_row(v["attack"], v["level"].upper(), v["headline"])
        out.print(table)
        out.print(f"Audit report written to {audit_step['report']}")
    elif audit_step is not None:
        out.print(f"Audit skipped: {audit_step['skipped']}")
    _print_release_steps(tour)
    _print_crypto_steps(tour)
    _print_forget_step(tour)
    out.print(f"Summary written to {summary}")
