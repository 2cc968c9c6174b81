"""The demo's tour: each step calls the library as a user would and records what it saw.

``veil demo`` is a command-line product (a guided tour with a report), not a
library capability, so its steps live beside the command in ``veil.cli``
rather than in a library package: ``veil/cli/demo.py`` parses and prints,
this module runs the steps, :mod:`veil.cli._demo._summary` writes the HTML.
Each step imports what it needs when it runs, so ``veil --help`` stays fast,
and a step whose extra is missing records why it was skipped.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veil.cli._demo._forget import FORGET_FILES, forget_a_patient
from veil.cli._demo._summary import summary_html
from veil.errors import InvalidInputError
from veil.workspace import Settings, Workspace, login_name

if TYPE_CHECKING:
    from veil.access import Access
    from veil.data import Catalog, DatasetInfo
    from veil.store import Store

__all__ = [
    "DEMO_EPSILON",
    "DEMO_K",
    "DEMO_QI",
    "DEMO_SQL",
    "Tour",
    "run_demo",
]

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
        directory / "trail-proof.json",
        *(directory / name for name in FORGET_FILES),
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
    from veil.access import Access  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast
    from veil.data import Catalog  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415

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
        # The tour acts as the account running it, which claims the new workspace (owner), and
        # signs the trail's heads with the workspace's `trail` key. Not Access.open(): that
        # would act as the service a VEIL_KEY in the environment names, not as the owner.
        settings = Settings(store.display_url, None, login_name())
        access = Access(
            store, settings=settings, signing_key=KeyStore.for_workspace(workspace).get("trail")
        )
        catalog = Catalog(store, settings, access=access)
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
        _roles_and_trail(tour, access)
        _private_model(tour, catalog, store, workspace)
        _anonymise(tour, catalog)
        _redact(tour, workspace)
        _encrypted_inference(tour)
        _secure_average(tour, catalog)
        _federated(tour, catalog, store)
        forget_a_patient(tour, access, store, workspace)
    finally:
        store.dispose()
    html = summary_html(tour, info, references=DEMO_REFERENCES, k=DEMO_K, linked=DEMO_LINKED)
    (tour.directory / "summary.html").write_text(html, encoding="utf-8")
    return tour, info


def _private_query(tour: Tour, catalog: Catalog, store: Store) -> None:
    """Steps 3-4: a budget, a DP query charged to it, and a refused over-budget query."""
    from veil.dp import query_dataset  # noqa: PLC0415 - keeps `veil --help` fast
    from veil.errors import BudgetExceededError  # noqa: PLC0415
    from veil.ledger import Budget, Ledger  # noqa: PLC0415

    ledger = Ledger(store, catalog.settings, access=catalog.access)
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


DEMO_ANALYST = "demo-analyst"


def _roles_and_trail(tour: Tour, owner: Access) -> None:
    """Step 5: an analyst's key is refused a budget raise; the trail verified; a proof checked."""
    from veil import _io  # noqa: PLC0415
    from veil.access import Access, Role  # noqa: PLC0415
    from veil.access.verifier import verify_inclusion_proof  # noqa: PLC0415
    from veil.errors import PermissionDeniedError  # noqa: PLC0415
    from veil.ledger import Budget, Ledger  # noqa: PLC0415

    started = time.perf_counter()
    key, token = owner.create_key(
        DEMO_ANALYST,
        Role.ANALYST,
        "diabetes",
        expires_in=timedelta(hours=1),
        reason="demo: an analyst's dashboard",
    )
    # The analyst acts with the key, as `VEIL_KEY=<token> veil ...` would.
    settings = Settings(owner.store.display_url, None, login_name(), service_key=token)
    analyst = Access(owner.store, settings=settings)
    raised = Budget(epsilon=30.0, delta=DEMO_BUDGET["delta"])
    try:
        Ledger(owner.store, settings, access=analyst).set_budget(
            "diabetes", raised, reason="demo: the analyst wants more"
        )
        refused: dict[str, Any] = {"refused": False}
    except PermissionDeniedError as error:
        refused = {"refused": True, "error": error.to_dict()}
    entry = owner.trail.entries(actor=key.principal, action="budget.set")[-1]
    head = owner.trail.checkpoint()  # a signed head for verify to check and the proof to use
    report = owner.trail.verify()
    proof = owner.trail.prove(entry.seq, head=head)
    path = tour.directory / "trail-proof.json"
    _io.write_json_atomic(path, proof, mode=0o600)  # owner-only: the entry names who did what
    assert owner.trail.public_key is not None  # noqa: S101 - the tour's Access has the trail key
    public_key = bytes.fromhex(owner.trail.public_key)
    tampered = {
        **proof,
        "entry": {**proof["entry"], "body": entry.body.replace("refused", "allowed")},
    }
    tour.step(
        "An analyst's budget change refused, the trail verified, one inclusion proof checked",
        time.perf_counter() - started,
        key=key.to_dict(),
        **refused,
        entry=entry.to_dict(),
        verify=report.to_dict(),
        proof={
            "file": str(path),
            "seq": entry.seq,
            "hashes": len(proof["proof"]),
            "bytes": path.stat().st_size,
            "head_size": proof["head"]["size"],
            "public_key": owner.trail.public_key,
            "verified": verify_inclusion_proof(proof, public_key),
            "tampered_verified": verify_inclusion_proof(tampered, public_key),
        },
    )


DEMO_MODEL_EPSILON, DEMO_MODEL_DELTA = 1.0, 1e-4


def _private_model(tour: Tour, catalog: Catalog, store: Store, workspace: Workspace) -> None:
    """Step 6: a DP logistic regression on the bundled digits, charged to its ledger, with its card."""
    title = "Train a DP-SGD model on bundled data and write its privacy card"
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("opacus") is None:
        tour.step(title, 0.0, skipped="needs the train extra: pip install 'veil[train]'")
        return
    from veil.ledger import Budget, Ledger  # noqa: PLC0415
    from veil.train import DPConfig, ModelRegistry, fit_private  # noqa: PLC0415

    started = time.perf_counter()
    catalog.add("sklearn:digits", name="digits", split="train")
    catalog.add("sklearn:digits", name="digits-test", split="test")
    ledger = Ledger(store, catalog.settings, access=catalog.access)
    # One budget for the digits' people, whatever trains on them: the central DP-SGD model here
    # and the federated model of step 12 (the same data under another name would be refused).
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
    """Step 7: attack the model just trained and write the audit report beside the summary."""
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
    """Step 8: scan the patients table, anonymise it to k = 5, scan again, and attack both."""
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
        unchanged=report["unchanged"],
        output=str(path),
        sample=result.table.head(5).astype(str).to_dict(orient="records"),
    )


DEMO_NOTE = (
    "Discharge summary for Margaret Okafor (NHS 943 476 5919), seen at St Thomas' Hospital on "
    "14 March 2025. Contact her daughter on 07700 900461 or m.okafor@example.org. "
    "Payment by card 4111 1111 1111 1111; GP: Dr Daniel Brennan."
)


def _redact(tour: Tour, workspace: Workspace) -> None:
    """Step 9: find and replace the PII in a short clinical note, three ways."""
    if importlib.util.find_spec("presidio_analyzer") is None:
        tour.step(
            "Redact a clinical note", 0.0, skipped="needs the text extra: pip install 'veil[text]'"
        )
        return
    from veil.anonymize import decrypt_text, redact_text  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415

    started = time.perf_counter()
    key = KeyStore.for_workspace(workspace).get("redact")
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
    """Step 10: the doctor encrypts a scan, the company infers on it, the doctor decrypts."""
    title = "Encrypted inference: the doctor's round trip (CKKS) and a Paillier score"
    if importlib.util.find_spec("tenseal") is None or importlib.util.find_spec("torch") is None:
        tour.step(title, 0.0, skipped="needs the he and train extras: pip install 'veil[he,train]'")
        return
    from veil.he import round_trip  # noqa: PLC0415

    started = time.perf_counter()
    result = round_trip()
    tour.step(title, time.perf_counter() - started, **result)


def _secure_average(tour: Tour, catalog: Catalog) -> None:
    """Step 11: three hospitals average their patients' BMI without pooling the records."""
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
    """Step 12: ten clinics train one model; SecAgg+ hides each update, DP-FedAvg the patients."""
    title = "Federated training over ten clinics: SecAgg+ and DP-FedAvg, epsilon in the ledger"
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("torch") is None:
        tour.step(title, 0.0, skipped="needs the federated extra: pip install 'veil[federated]'")
        return
    from veil.federated import FederatedConfig, federate  # noqa: PLC0415 - heavy
    from veil.ledger import Ledger  # noqa: PLC0415

    started = time.perf_counter()
    # The clinics hold the digits' people: the run is charged to the same budget as step 6's model.
    ledger = Ledger(store, catalog.settings, access=catalog.access)
    config = FederatedConfig(
        dataset="digits",
        model="logreg",
        clients=10,
        rounds=5,
        sample_rate=0.8,
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
