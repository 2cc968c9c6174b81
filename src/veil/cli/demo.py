"""``veil demo``: an end-to-end tour on bundled data, ending in a self-contained HTML summary.

The tour runs in its own directory (``./veil-demo`` by default) with its own
embedded SQLite workspace, whatever ``VEIL_HOME`` or ``VEIL_DATABASE_URL`` say,
so it never touches a real workspace. Each capability adds a step here as it
lands: it registers scikit-learn's bundled diabetes data with a declared privacy
schema, answers a DP query charged to a budget and refuses one over it,
trains a DP-SGD model on the bundled digits with its privacy card, and ends
with an audit report of that model (membership, inversion, extraction, and a
canary DP audit against its claimed epsilon). It then scans and anonymises the
patients, redacts a clinical note, runs the doctor's encrypted-inference round
trip (CKKS) and a secure average over three hospitals (one process each, over
TCP).
"""

from __future__ import annotations

import html
import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from veil import __version__
from veil.cli._output import out, print_json
from veil.cli.datasets import render_schema
from veil.errors import InvalidInputError
from veil.workspace import Settings, Workspace

if TYPE_CHECKING:
    from veil.data import Catalog, DatasetInfo
    from veil.store import Store

__all__ = ["demo", "run_demo"]

MARKER = ".veil-demo"

# Declared from clinical ranges (adult patients), not read from the data.
DIABETES_BOUNDS = {
    "age": (18.0, 100.0),
    "bmi": (10.0, 70.0),
    "bp": (40.0, 200.0),
    "progression": (0.0, 400.0),
}


@dataclass
class Tour:
    """What the tour did, step by step, for the summary."""

    directory: Path
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(self, title: str, seconds: float, **facts: Any) -> None:
        self.steps.append({"title": title, "seconds": round(seconds, 3), **facts})


def _prepare(directory: Path) -> None:
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise InvalidInputError(
            "the demo directory already holds other files",
            expected=f"an empty or missing directory, or one made by `veil demo` (with {MARKER})",
            got=f"{directory} with other content",
            fix="pass another --out directory",
        )
    for leftover in (
        directory / ".veil",
        directory / "summary.html",
        directory / "audit-report.html",
        directory / "audit-report.json",
        directory / "diabetes-anonymised.csv",
    ):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by `veil demo`; safe to delete\n", encoding="utf-8")


DEMO_BUDGET = {"epsilon": 3.0, "delta": 1e-6}
DEMO_SQL = (
    "SELECT sex, COUNT(*) AS patients, AVG(bmi), MEDIAN(progression) FROM diabetes GROUP BY sex"
)
DEMO_EPSILON = 1.0


def run_demo(directory: Path) -> tuple[Tour, DatasetInfo]:
    """Run the tour in ``directory`` and write ``summary.html`` there."""
    _prepare(directory)
    tour = Tour(directory.resolve())
    started = time.perf_counter()
    workspace = Workspace.create(tour.directory / ".veil")
    from veil.data import Catalog  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast
    from veil.store import Store  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    store = Store.open(f"sqlite:///{workspace.sqlite_path}", upgrade=True)
    tour.step(
        "Create a workspace",
        time.perf_counter() - started,
        home=str(workspace.home),
        database=store.display_url,
        revision=store.current_revision(),
    )
    try:
        started = time.perf_counter()
        catalog = Catalog(store, Settings(store.display_url, None, "veil-demo"))
        info = catalog.add(
            "sklearn:diabetes",
            name="diabetes",
            quasi_identifiers=["age", "sex"],
            sensitive=["progression"],
            bounds=DIABETES_BOUNDS,
            categories={"sex": ("1", "2")},
        )
        tour.step(
            "Register a dataset with its privacy schema",
            time.perf_counter() - started,
            dataset=info.name,
            rows=info.n_rows,
            schema=info.schema.to_dict(),
            report=info.report,
        )
        _private_query(tour, catalog, store)
        _private_model(tour, catalog, store, workspace)
        _anonymise(tour, catalog)
        _redact(tour, workspace)
        _encrypted_inference(tour)
        _secure_average(tour, catalog)
        _federated(tour, catalog, store)
    finally:
        store.dispose()
    (tour.directory / "summary.html").write_text(_html(tour, info), encoding="utf-8")
    return tour, info


def _private_query(tour: Tour, catalog: Catalog, store: Store) -> None:
    """Steps 3-4: a budget, a DP query charged to it, and a refused over-budget query."""
    from veil.dp import query_dataset  # noqa: PLC0415 - keeps `veil --help` fast
    from veil.errors import BudgetExceededError  # noqa: PLC0415
    from veil.ledger import Budget, Ledger  # noqa: PLC0415

    ledger = Ledger(store, catalog.settings)
    started = time.perf_counter()
    ledger.set_budget("diabetes", Budget(**DEMO_BUDGET), reason="demo release plan")
    result = query_dataset(
        catalog, ledger, "diabetes", DEMO_SQL, epsilon=DEMO_EPSILON, purpose="demo: cohort summary"
    )
    status = ledger.status("diabetes")
    tour.step(
        "Answer a SQL query with differential privacy (charged to the ledger first)",
        time.perf_counter() - started,
        sql=DEMO_SQL,
        answer=result.to_dict(),
        budget=status.to_dict(),
    )
    started = time.perf_counter()
    try:
        query_dataset(catalog, ledger, "diabetes", DEMO_SQL, epsilon=5.0, purpose="demo: too much")
        refused: dict[str, Any] = {"refused": False}
    except BudgetExceededError as error:
        refused = {"refused": True, "error": error.to_dict()}
    tour.step(
        "Refuse a query that would exceed the budget (nothing computed or charged)",
        time.perf_counter() - started,
        **refused,
        budget_after=ledger.status("diabetes").to_dict(),
        history=ledger.history("diabetes"),
    )


DEMO_MODEL_EPSILON, DEMO_MODEL_DELTA = 1.0, 1e-4


def _private_model(tour: Tour, catalog: Catalog, store: Store, workspace: Workspace) -> None:
    """Step 5: a DP logistic regression on the bundled digits, charged to its ledger, with its card."""
    title = "Train a DP-SGD model on bundled data and write its privacy card"
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("opacus") is None:
        tour.step(title, 0.0, skipped="needs the train extra: pip install 'veil[train]'")
        return
    from veil.ledger import Budget, Ledger  # noqa: PLC0415
    from veil.train import DPConfig, ModelRegistry, fit_private  # noqa: PLC0415

    started = time.perf_counter()
    catalog.add("sklearn:digits", name="digits", split="train")
    catalog.add("sklearn:digits", name="digits-test", split="test")
    ledger = Ledger(store, catalog.settings)
    # One budget for the digits' people, whatever trains on them: the central DP-SGD model here
    # and the federated model of step 11 (the same data under another name would be refused).
    ledger.set_budget("digits", Budget(epsilon=8.0, delta=1e-4), reason="demo budget: two models")
    ledger.set_budget("digits-test", Budget(epsilon=0.5, delta=0.0), reason="demo test budget")
    config = DPConfig(
        epochs=10,
        batch_size=64,
        epsilon=DEMO_MODEL_EPSILON,
        delta=DEMO_MODEL_DELTA,
        learning_rate=2.0,
    )
    trained = fit_private(
        catalog,
        ledger,
        ModelRegistry.for_workspace(workspace),
        "digits",
        config,
        name="digits-logreg-dp",
        model="logreg",
        test="digits-test",
        purpose="demo: a private digit classifier",
    )
    tour.step(
        title,
        time.perf_counter() - started,
        card=trained.card.to_dict(),
        budget=ledger.status("digits").to_dict(),
    )
    _audit(tour, catalog, workspace, trained.name)


DEMO_REFERENCES = 4


def _audit(tour: Tour, catalog: Catalog, workspace: Workspace, model: str) -> None:
    """Step 6: attack the model just trained and write the audit report beside the summary."""
    if importlib.util.find_spec("matplotlib") is None:
        tour.step(
            "Audit the model", 0.0, skipped="needs the audit extra: pip install 'veil[audit]'"
        )
        return
    from veil.audit import audit_model, write_report  # noqa: PLC0415
    from veil.train import ModelRegistry  # noqa: PLC0415

    started = time.perf_counter()
    report = audit_model(
        catalog,
        ModelRegistry.for_workspace(workspace),
        model,
        test="digits-test",
        references=DEMO_REFERENCES,
        canaries=200,
        extraction_budgets=(50, 299),
    )
    path = tour.directory / "audit-report.html"
    write_report(report, path, tour.directory / "audit-report.json")
    tour.step(
        "Audit the model: membership, inversion, extraction and a canary DP audit",
        time.perf_counter() - started,
        report=str(path),
        verdicts=[v.to_dict() for v in report.verdicts()],
        claimed_epsilon=report.claimed_epsilon,
    )


DEMO_QI = ("age", "sex", "bmi", "bp")
DEMO_K = 5
DEMO_LINKED = 100


def _anonymise(tour: Tour, catalog: Catalog) -> None:
    """Step 7: scan the patients table, anonymise it to k = 5, scan again, and attack both."""
    import numpy as np  # noqa: PLC0415

    from veil.anonymize import anonymize  # noqa: PLC0415
    from veil.cli.anonymize import write_table  # noqa: PLC0415

    started = time.perf_counter()
    frame = catalog.load_frame("diabetes")
    # The attacker's table: 100 of the patients, with the four measurements a clinic
    # letter or a fitness app would also hold. Which rows is a fixed choice, not noise.
    chosen = np.random.default_rng(0).choice(len(frame), DEMO_LINKED, replace=False)
    external = frame.iloc[chosen][list(DEMO_QI)].reset_index(drop=True)
    result = anonymize(
        frame,
        list(DEMO_QI),
        k=DEMO_K,
        sensitive=["progression"],
        algorithm="mondrian",
        external=external,
        external_truth=chosen.astype(np.int64),
    )
    path = tour.directory / "diabetes-anonymised.csv"
    write_table(result.table, path)
    report = result.to_dict()
    tour.step(
        f"Scan the patients table, anonymise it to k = {DEMO_K} (Mondrian), scan it again",
        time.perf_counter() - started,
        quasi_identifiers=list(DEMO_QI),
        before=report["before"],
        after=report["after"],
        satisfied=report["satisfied"],
        output=str(path),
        sample=result.table.head(5).astype(str).to_dict(orient="records"),
    )


DEMO_NOTE = (
    "Discharge summary for Margaret Okafor (NHS 943 476 5919), seen at St Thomas' Hospital on "
    "14 March 2025. Contact her daughter on 07700 900461 or m.okafor@example.org. "
    "Payment by card 4111 1111 1111 1111; GP: Dr Daniel Brennan."
)


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


def _redact(tour: Tour, workspace: Workspace) -> None:
    """Step 8: find and replace the PII in a short clinical note, three ways."""
    if importlib.util.find_spec("presidio_analyzer") is None:
        tour.step(
            "Redact a clinical note", 0.0, skipped="needs the text extra: pip install 'veil[text]'"
        )
        return
    from veil.anonymize import decrypt_text, redact_text  # noqa: PLC0415

    started = time.perf_counter()
    key = workspace.keys.get("redact")
    tagged = redact_text(DEMO_NOTE, operator="tag")
    surrogate = redact_text(DEMO_NOTE, operator="surrogate", key=key)
    encrypted = redact_text(DEMO_NOTE, operator="encrypt", key=key)
    tour.step(
        "Redact a clinical note (Presidio with spaCy's small English model)",
        time.perf_counter() - started,
        note=DEMO_NOTE,
        tagged=tagged.text,
        surrogate=surrogate.text,
        entities=[e.to_dict() for e in tagged.entities],
        counts=tagged.counts,
        reversible=decrypt_text(encrypted.text, key) == DEMO_NOTE,
    )


def _encrypted_inference(tour: Tour) -> None:
    """Step 9: the doctor encrypts a scan, the company infers on it, the doctor decrypts."""
    title = "Encrypted inference: the doctor's round trip (CKKS) and a Paillier score"
    if importlib.util.find_spec("tenseal") is None or importlib.util.find_spec("torch") is None:
        tour.step(title, 0.0, skipped="needs the he and train extras: pip install 'veil[he,train]'")
        return
    from veil.cli.he import round_trip  # noqa: PLC0415

    started = time.perf_counter()
    result = round_trip()
    tour.step(title, time.perf_counter() - started, **result)


def _secure_average(tour: Tour, catalog: Catalog) -> None:
    """Step 10: three hospitals average their patients' BMI without pooling the records."""
    from veil.mpc import secure_mean  # noqa: PLC0415

    frame = catalog.load_frame("diabetes", ["bmi"])
    bmi = frame["bmi"].to_numpy(dtype=float)
    hospitals = [bmi[0::3], bmi[1::3], bmi[2::3]]
    started = time.perf_counter()
    result = secure_mean(hospitals, protocol="shamir")
    tour.step(
        "A secure average over three hospitals (Shamir 2-of-3, one process each, over TCP)",
        time.perf_counter() - started,
        patients=[len(h) for h in hospitals],
        secure_mean=float(result.value),
        plaintext_mean=float(bmi.mean()),
        threshold=result.threshold,
        protocol_seconds=result.protocol_seconds,
        bytes_sent=result.bytes_sent,
        resolution=result.resolution,
    )


def _federated(tour: Tour, catalog: Catalog, store: Store) -> None:
    """Step 11: ten clinics train one model; SecAgg+ hides each update, DP-FedAvg the patients."""
    title = "Federated training over ten clinics: SecAgg+ and DP-FedAvg, epsilon in the ledger"
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("torch") is None:
        tour.step(title, 0.0, skipped="needs the federated extra: pip install 'veil[federated]'")
        return
    from veil.federated import FederatedConfig, federate  # noqa: PLC0415 - heavy
    from veil.ledger import Ledger  # noqa: PLC0415

    started = time.perf_counter()
    # The clinics hold the digits' people: the run is charged to the same budget as step 5's model.
    ledger = Ledger(store, catalog.settings)
    config = FederatedConfig(
        dataset="digits",
        model="logreg",
        clients=10,
        rounds=5,
        fraction=0.8,
        lr=0.5,
        batch_size=16,
        secagg=True,
        dp="central",
        noise_multiplier=1.5,
        clip=1.0,
        delta=1e-4,
        ledger_dataset="digits",
    )
    result = federate(config, guard=ledger)
    tour.step(
        title,
        time.perf_counter() - started,
        clients=config.clients,
        rounds=result.rounds_completed,
        accuracy=result.accuracy,
        participants=[row["participants"] for row in result.history],
        privacy=result.privacy,
        budget=ledger.status("digits").to_dict(),
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
    query_step, refusal = tour.steps[2], tour.steps[3]
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
    model_step = tour.steps[4]
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
    out.print(f"Summary written to {summary}")


# ----------------------------------------------------------------- HTML
_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2433}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d8dee9}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d8dee9;padding:.2rem .6rem;text-align:left}
th{background:#eef1f6}.muted{color:#5b6475}.warn{color:#9a3412}code{background:#eef1f6;padding:0 .2rem}
"""


def _html(tour: Tour, info: DatasetInfo) -> str:
    e = html.escape
    schema = info.schema
    rows = []
    for spec in schema.columns:
        role = (
            "privacy unit"
            if spec.name == schema.privacy_unit
            else "quasi-identifier"
            if spec.name in schema.quasi_identifiers
            else "sensitive"
            if spec.name in schema.sensitive
            else ""
        )
        if spec.bounds is not None:
            declared = f"{spec.bounds[0]:g} .. {spec.bounds[1]:g}"
        elif spec.categories is not None:
            declared = " | ".join(spec.categories)
        else:
            declared = '<span class="warn">not declared</span>'
        stats = info.report["columns"].get(spec.name, {})
        outside = stats.get("below_lower", 0) + stats.get("above_upper", 0) if spec.bounds else ""
        rows.append(
            f"<tr><td>{e(spec.name)}</td><td>{e(spec.kind)}</td><td>{e(role)}</td>"
            f"<td>{declared if spec.bounds is None and spec.categories is None else e(declared)}</td>"
            f"<td>{stats.get('missing', '')}</td><td>{outside}</td></tr>"
        )
    steps = "".join(
        f"<li>{e(step['title'])} <span class='muted'>({step['seconds']:.2f} s)</span></li>"
        for step in tour.steps
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Veil demo summary</title><style>{_CSS}</style></head>
<body>
<h1>Veil demo summary</h1>
<p class="muted">Veil {e(__version__)} · generated {generated} · workspace <code>{e(str(tour.directory))}</code></p>
<h2>Steps</h2><ol>{steps}</ol>
<h2>Dataset <code>{e(info.name)}</code></h2>
<p>{info.n_rows} rows from <code>{e(info.source)}</code>; privacy unit: {e(schema.privacy_unit or "one row = one person")};
SHA-256 <code>{e(info.content_sha256)}</code>.</p>
<table><tr><th>column</th><th>kind</th><th>role</th><th>declared bounds / categories</th><th>missing</th>
<th>outside bounds</th></tr>{"".join(rows)}</table>
<p class="muted">Bounds were declared from clinical ranges, not read from the data; values outside them
are clamped by private queries (every answer says so).</p>
{_query_html(tour)}
{_model_html(tour)}
{_anonymise_html(tour)}
{_redact_html(tour)}
{_crypto_html(tour)}
</body></html>
"""


def _query_html(tour: Tour) -> str:
    e = html.escape
    steps = {s["title"].split(" ")[0]: s for s in tour.steps}
    query = steps.get("Answer")
    if query is None:
        return ""
    answer = query["answer"]
    head = "".join(f"<th>{e(c)}</th>" for c in answer["columns"])
    body = []
    for row in answer["rows"]:
        cells = []
        for c in answer["columns"]:
            cell = row[c]
            if isinstance(cell, dict):
                interval = cell.get("ci") or cell.get("ci_quantile_level")
                label = (
                    ""
                    if interval is None
                    else f" <span class='muted'>[{interval[0]:.4g}, {interval[1]:.4g}]</span>"
                )
                cells.append(f"<td>{cell['value']:.4g}{label}</td>")
            else:
                cells.append(f"<td>{e(str(cell))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    budget = query["budget"]
    refusal = steps.get("Refuse", {})
    history = "".join(
        f"<tr><td>{e(h['at'][:19])}</td><td>{e(h['actor'])}</td><td>{e(h.get('what') or 'budget set')}</td>"
        f"<td>{e(h.get('purpose') or h.get('reason') or '')}</td>"
        f"<td>{e(', '.join(m['name'] for m in h.get('mechanisms', [])))}</td></tr>"
        for h in refusal.get("history", [])
    )
    refused = refusal.get("error", {}).get("message", "")
    return f"""<h2>A differentially private query</h2>
<p><code>{e(query["sql"])}</code> at epsilon {answer["epsilon"]:g}. Intervals ({answer["ci_level"]:.0%}) cover
the noise only; {e(answer["ci_note"])}.</p>
<table><tr>{head}</tr>{"".join(body)}</table>
<h2>Privacy budget</h2>
<p>Budget epsilon {budget["budget"]["epsilon"]:g}, delta {budget["budget"]["delta"]:g}; spent epsilon
{budget["spent"]["epsilon"]:.4g} (PLD accountant; RDP cross-check {budget["cross_check"].get("epsilon") or 0:.4g});
remaining {budget["remaining"]:.4g}.</p>
<p class="warn">Refused: {e(refused)}</p>
<table><tr><th>when (UTC)</th><th>who</th><th>what</th><th>purpose / reason</th><th>mechanisms</th></tr>{history}</table>
"""


def _model_html(tour: Tour) -> str:
    e = html.escape
    step = next((s for s in tour.steps if s["title"].startswith("Train")), None)
    if step is None:
        return ""
    if "card" not in step:
        return f"<h2>A private model</h2><p class='warn'>Skipped: {e(step['skipped'])}</p>"
    card = step["card"]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in card.items())
    audit = next((s for s in tour.steps if s["title"].startswith("Audit")), None)
    audit_html = ""
    if audit is not None and "verdicts" in audit:
        verdicts = "".join(
            f"<tr><td>{e(v['attack'])}</td><td>{e(v['level'].upper())}</td><td>{e(v['headline'])}</td></tr>"
            for v in audit["verdicts"]
        )
        audit_html = f"""<h2>The model's privacy audit</h2>
<p>Attacks on the model above ({DEMO_REFERENCES} reference models; the full report with plots:
<a href="audit-report.html">audit-report.html</a>).</p>
<table><tr><th>attack</th><th></th><th>finding</th></tr>{verdicts}</table>
"""
    return f"""<h2>A private model and its privacy card</h2>
<p>DP-SGD (Poisson sampling, per-example clipping, noise from a CSPRNG) on two thirds of scikit-learn's
digits, charged to the ledger of <code>digits</code> before training as one subsampled-Gaussian event;
test accuracy is a DP count on the other third (<code>digits-test</code>).</p>
<table>{rows}</table>
{audit_html}"""


def _anonymise_html(tour: Tour) -> str:
    e = html.escape
    step = next((s for s in tour.steps if s["title"].startswith("Scan")), None)
    if step is None:
        return ""
    before, after = step["before"], step["after"]

    def row(label: str, get: Any) -> str:
        return f"<tr><th>{e(label)}</th><td>{e(get(before))}</td><td>{e(get(after))}</td></tr>"

    rows = "".join(
        [
            row("equivalence classes", lambda r: f"{r['classes']['classes']:,}"),
            row("k (smallest class)", lambda r: str(r["classes"]["k"])),
            row("unique records", lambda r: f"{r['classes']['unique_share']:.1%}"),
            row("highest prosecutor risk", lambda r: f"{r['risk']['prosecutor_max']:.3f}"),
            row("records at risk (> 0.2)", lambda r: f"{r['risk']['prosecutor_at_risk']:.1%}"),
            row(
                "l-diversity of progression",
                lambda r: str(r["l_diversity"]["progression"]["distinct"]),
            ),
            row("t-closeness of progression", lambda r: f"{r['t_closeness']['progression']:.3f}"),
            row(
                f"linkage attack: of {DEMO_LINKED} known patients, re-identified",
                lambda r: str(r["linkage"]["correct"]),
            ),
            row(
                "information loss (GCP)",
                lambda r: "0" if r["utility"] is None else f"{r['utility']['gcp']:.3f}",
            ),
        ]
    )
    sample = step["sample"]
    head = "".join(f"<th>{e(c)}</th>" for c in sample[0]) if sample else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r.values()) + "</tr>" for r in sample
    )
    return f"""<h2>Re-identification risk, before and after anonymisation</h2>
<p>Quasi-identifiers {e(", ".join(step["quasi_identifiers"]))}; strict Mondrian to k = {DEMO_K}.
The attacker knows these four values for {DEMO_LINKED} of the patients (as from a clinic letter)
and links them to the table (Sweeney's attack).</p>
<table><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>
<p>First rows of the release (<code>{e(step["output"])}</code>):</p>
<table><tr>{head}</tr>{body}</table>
"""


def _redact_html(tour: Tour) -> str:
    e = html.escape
    step = next((s for s in tour.steps if s["title"].startswith("Redact")), None)
    if step is None:
        return ""
    if "tagged" not in step:
        return f"<h2>PII in free text</h2><p class='warn'>Skipped: {e(step['skipped'])}</p>"
    counts = ", ".join(f"{n} {e(t)}" for t, n in step["counts"].items())
    return f"""<h2>PII in free text</h2>
<p>A short clinical note, analysed by Presidio with spaCy's small English model and Veil's
checksum-validated recognisers (NHS number, card number by Luhn); found: {counts}.</p>
<table><tr><th>original</th><td>{e(step["note"])}</td></tr>
<tr><th>type tags</th><td>{e(step["tagged"])}</td></tr>
<tr><th>consistent surrogates</th><td>{e(step["surrogate"])}</td></tr></table>
<p class="muted">Surrogates and the reversible encryption use the workspace key <code>redact</code>;
decrypting the encrypted note gives back the original: {step["reversible"]}.</p>
"""


def _crypto_html(tour: Tour) -> str:
    e = html.escape
    parts = []
    step = next((s for s in tour.steps if s["title"].startswith("Encrypted")), None)
    if step is not None and "plan" in step:
        plan, times = step["plan"], step["timings"]
        parts.append(f"""<h2>Encrypted inference</h2>
<p>A doctor encrypts a scan (a bundled digit) under a key only she holds; the company runs
{e(step["model"])} on the ciphertext with only her public context, and she decrypts the result.</p>
<table><tr><th>CKKS parameters</th><td>N = {plan["poly_modulus_degree"]}, primes {plan["coeff_mod_bit_sizes"]}
({plan["total_coeff_bits"]} of {plan["max_coeff_bits"]} bits: 128-bit security), rotations {plan["galois_steps"]}</td></tr>
<tr><th>sizes</th><td>public context {step["public_context_bytes"] / 1e6:.2f} MB, request
{step["request_bytes"] / 1e3:.0f} KB, response {step["response_bytes"] / 1e3:.0f} KB</td></tr>
<tr><th>times</th><td>keys {times["keygen_s"]:.2f} s, encrypt {times["encrypt_s"] * 1e3:.0f} ms,
infer {times["infer_s"] * 1e3:.0f} ms, decrypt {times["decrypt_s"] * 1e3:.0f} ms</td></tr>
<tr><th>result</th><td>encrypted prediction {step["encrypted_prediction"]}, plaintext
{step["plaintext_prediction"]}, truth {step["true_label"]}; error {step["max_error"]:.1e}
(bound {step["error_bound"]:.1e})</td></tr></table>""")
    elif step is not None:
        parts.append(
            f"<h2>Encrypted inference</h2><p class='warn'>Skipped: {e(step['skipped'])}</p>"
        )
    mpc = next((s for s in tour.steps if s["title"].startswith("A secure average")), None)
    if mpc is not None:
        parts.append(f"""<h2>Secure average over three hospitals</h2>
<p>Each hospital ran as its own process and sent only Shamir shares of its patients' BMI
({", ".join(map(str, mpc["patients"]))} patients); any {mpc["threshold"]} of the 3 could finish.
Secure mean {mpc["secure_mean"]:.4f}, pooled mean {mpc["plaintext_mean"]:.4f}.</p>""")
    return "\n".join(parts)
