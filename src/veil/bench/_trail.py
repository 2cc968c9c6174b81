"""``veil bench trail``: the measured goals of the trail and the role checks.

Five measurements, on SQLite (a temporary file) and, given a server, on
PostgreSQL (a scratch database created and dropped for the run):

1. **Recording overhead.** A budget change written the way
   :meth:`veil.ledger.Ledger.set_budget` writes it (lock the budget row, update
   it, insert the change, in one ``store.session(lock=True)`` transaction),
   with and without :meth:`veil.access.Access.append` of its ``budget.set``
   entry (the same links and details the ledger records) in that transaction.
   The two variants alternate (off, on, on, off, ...) in one run, so drift
   and neighbours' load fall on both; the benchmark owns the "off" twin, the
   product has no switch that turns recording off.
2. **Verify throughput.** A trail of ``entries`` entries (the ``trail.start``
   entry and realistic bodies: actors, actions, datasets, purposes, links to
   ledger events, models and dataset versions, details) built with
   :meth:`Trail.append_many` in batches inside lock sessions, signed every
   :data:`veil.access.HEAD_EVERY` entries; then :meth:`Trail.verify` timed.
3. **Inclusion proofs** for the last entry and entry 1 against a head signed
   at the trail's size: the audit path (hashes and raw bytes), the whole
   self-contained document (entry body, path, signed head) as compact JSON,
   and the time of :func:`veil.access.verifier.verify_inclusion_proof` (leaf
   hash, path, signature) and of :func:`~veil.access.verifier.verify_inclusion`
   alone (the path).
4. **Concurrency.** ``workers`` processes (spawned) each check a role and
   record ``per_worker`` actions through their own :class:`~veil.access.Access`;
   then the trail must verify, hold every worker's every action once, and run
   without a gap.
5. **Role checks** with ``grants`` grants in force: :meth:`Access.require` and
   :meth:`Access.allows` on the grants held in memory, and the reload when the
   access generation moved (and the freshness check when it did not).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import secrets
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from veil import __version__
from veil.access import WORKSPACE, Access, Permission, Principal, Role, Trail
from veil.access.verifier import leaf_hash, verify_inclusion, verify_inclusion_proof
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, ratio, verdict
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit
from veil.store import Store
from veil.store.tables import BudgetChangeRow, DatasetRow, GrantRow, PrivacyBudgetRow, TrailEntryRow

__all__ = [
    "ConcurrencyRow",
    "OverheadRow",
    "ProofRow",
    "RoleRow",
    "TrailBackendRow",
    "TrailResult",
    "VerifyRow",
    "run_trail_benchmark",
]

GOAL_ADDED_P99_MS = {"sqlite": 2.0, "postgresql": 5.0}
GOAL_VERIFY_PER_S = 200_000.0
GOAL_PROOF_BYTES = 1024
GOAL_PROOF_VERIFY_US = 1_000.0
GOAL_CHECK_P99_US = 200.0
PYCASBIN_MS = 62.0  # pycasbin, one enforce() with 11,000 policies (FIELD-NOTES.md)
PYCASBIN_SOURCE = "https://github.com/apache/casbin-pycasbin/issues/71"

OWNER = "bench-owner"
DATASET = "bench-trail"
BATCH = 10_000
_ACTIONS = ("dataset.read", "model.save", "audit.run", "ledger.read")
_CHECKED = (Permission.DATASET_USE, Permission.BUDGET_SPEND, Permission.LEDGER_READ)
_DATASETS_PER_PRINCIPAL = 4


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True, kw_only=True)
class OverheadRow:
    """The same budget change without and with its trail entry, alternated (ms)."""

    actions: int
    off_p50_ms: float
    off_p99_ms: float
    on_p50_ms: float
    on_p99_ms: float
    added_p50_ms: float
    added_p99_ms: float
    ratio_p50: float
    ratio_p99: float
    goal_added_p99_ms: float
    met: bool


@dataclass(frozen=True, kw_only=True)
class VerifyRow:
    """Building an ``entries``-entry trail, and verifying it."""

    entries: int
    build_s: float
    build_entries_per_s: float
    signed_heads: int
    verify_s: float
    entries_per_s: float
    ok: bool
    problems: int
    goal_entries_per_s: float
    met: bool


@dataclass(frozen=True, kw_only=True)
class ProofRow:
    """One inclusion proof: its size, the server's time to make it, the time to check it."""

    entry: int
    tree_size: int
    path_hashes: int
    path_bytes: int
    body_bytes: int
    document_bytes: int
    prove_ms: float
    verify_document_us: float
    verify_document_p99_us: float
    verify_path_us: float
    verified: bool
    path_under_1kb: bool
    document_under_1kb: bool
    verify_under_1ms: bool


@dataclass(frozen=True, kw_only=True)
class ConcurrencyRow:
    """``workers`` processes recording at once, and what the trail held afterwards."""

    workers: int
    per_worker: int
    setup_entries: int
    wall_s: float
    actions_per_s: float
    p50_ms: float
    p99_ms: float
    size: int
    expected_size: int
    per_worker_counts: Mapping[str, int]
    all_present: bool
    contiguous: bool
    verify_ok: bool
    problems: tuple[str, ...]
    met: bool


@dataclass(frozen=True, kw_only=True)
class RoleRow:
    """Role checks with ``grants`` grants in the table (microseconds unless named ms)."""

    grants: int
    principals: int
    checks: int
    require_p50_us: float
    require_p99_us: float
    require_max_us: float
    allows_p50_us: float
    allows_p99_us: float
    denied_share: float
    refreshes: int
    refresh_p50_ms: float
    refresh_p99_ms: float
    revalidate_p50_ms: float
    revalidate_p99_ms: float
    goal_p99_us: float
    met: bool


@dataclass(frozen=True, kw_only=True)
class TrailBackendRow:
    """Every measurement on one backend."""

    backend: str
    overhead: OverheadRow
    verify: VerifyRow
    proofs: tuple[ProofRow, ...]
    concurrency: ConcurrencyRow
    roles: RoleRow


@dataclass(frozen=True, kw_only=True)
class TrailResult(BenchResult):
    """``veil bench trail``: one row per backend, the goals, the machine."""

    benchmark: str = "trail"
    parameters: Mapping[str, Any]
    goals: Mapping[str, Any]
    machine: Mapping[str, Any]
    results: tuple[TrailBackendRow, ...]
    reference: Mapping[str, Any] = field(
        default_factory=lambda: {
            "pycasbin_ms_per_check_at_11000_policies": PYCASBIN_MS,
            "source": PYCASBIN_SOURCE,
        }
    )

    def view(self) -> View:
        """One table per goal, then how to read them."""
        rows = self.results
        overhead = Table(
            title=f"Recording overhead: a budget change without / with its trail entry "
            f"({self.parameters['actions']} of each, alternated; ms)",
            columns=(
                Column("backend", justify="left"),
                Column("off p50", fixed(".2f")),
                Column("off p99", fixed(".2f")),
                Column("on p50", fixed(".2f")),
                Column("on p99", fixed(".2f")),
                Column("added p50", fixed("+.2f")),
                Column("added p99", fixed("+.2f")),
                Column("on/off p50", ratio),
                Column("on/off p99", ratio),
                Column("goal (p99)"),
            ),
            rows=tuple(
                (
                    r.backend,
                    r.overhead.off_p50_ms,
                    r.overhead.off_p99_ms,
                    r.overhead.on_p50_ms,
                    r.overhead.on_p99_ms,
                    r.overhead.added_p50_ms,
                    r.overhead.added_p99_ms,
                    r.overhead.ratio_p50,
                    r.overhead.ratio_p99,
                    f"<= {r.overhead.goal_added_p99_ms:g} ms {verdict(r.overhead.met)}",
                )
                for r in rows
            ),
        )
        verify = Table(
            title="veil trail verify",
            columns=(
                Column("backend", justify="left"),
                Column("entries", fixed(",")),
                Column("build s", fixed(".1f")),
                Column("built /s", fixed(",.0f")),
                Column("verify s", fixed(".2f")),
                Column("verified /s", fixed(",.0f")),
                Column("ok"),
                Column("goal"),
            ),
            rows=tuple(
                (
                    r.backend,
                    r.verify.entries,
                    r.verify.build_s,
                    r.verify.build_entries_per_s,
                    r.verify.verify_s,
                    r.verify.entries_per_s,
                    "yes" if r.verify.ok else f"NO ({r.verify.problems} problems)",
                    f">= {r.verify.goal_entries_per_s:,.0f}/s {verdict(r.verify.met)}",
                )
                for r in rows
            ),
        )
        proofs = Table(
            title="Inclusion proofs against a signed head of the whole trail",
            columns=(
                Column("backend", justify="left"),
                Column("entry", fixed(",")),
                Column("of", fixed(",")),
                Column("audit path"),
                Column("document"),
                Column("prove ms", fixed(".0f")),
                Column("check proof µs", fixed(".0f")),
                Column("check path µs", fixed(".1f")),
                Column("ok"),
            ),
            rows=tuple(
                (
                    r.backend,
                    p.entry,
                    p.tree_size,
                    f"{p.path_hashes} x 32 = {p.path_bytes} B",
                    f"{p.document_bytes:,} B",
                    p.prove_ms,
                    p.verify_document_us,
                    p.verify_path_us,
                    "yes" if p.verified else "NO",
                )
                for r in rows
                for p in r.proofs
            ),
        )
        concurrency = Table(
            title="Concurrent recording",
            columns=(
                Column("backend", justify="left"),
                Column("processes x actions"),
                Column("wall s", fixed(".1f")),
                Column("actions/s", fixed(",.0f")),
                Column("p99 ms", fixed(".1f")),
                Column("size / expected"),
                Column("every action"),
                Column("no gap"),
                Column("verify"),
                Column("goal"),
            ),
            rows=tuple(
                (
                    r.backend,
                    f"{r.concurrency.workers} x {r.concurrency.per_worker}",
                    r.concurrency.wall_s,
                    r.concurrency.actions_per_s,
                    r.concurrency.p99_ms,
                    f"{r.concurrency.size:,} / {r.concurrency.expected_size:,}",
                    "yes" if r.concurrency.all_present else "NO",
                    "yes" if r.concurrency.contiguous else "NO",
                    "ok" if r.concurrency.verify_ok else "FAILED",
                    verdict(r.concurrency.met),
                )
                for r in rows
            ),
        )
        roles = Table(
            title="Role checks (grants held in memory; reload when the generation moved)",
            columns=(
                Column("backend", justify="left"),
                Column("grants", fixed(",")),
                Column("checks", fixed(",")),
                Column("require p50 µs", fixed(".2f")),
                Column("require p99 µs", fixed(".2f")),
                Column("allows p99 µs", fixed(".2f")),
                Column("reload p50/p99 ms"),
                Column("fresh? p50/p99 ms"),
                Column("goal (p99)"),
            ),
            rows=tuple(
                (
                    r.backend,
                    r.roles.grants,
                    r.roles.checks,
                    r.roles.require_p50_us,
                    r.roles.require_p99_us,
                    r.roles.allows_p99_us,
                    f"{r.roles.refresh_p50_ms:.2f} / {r.roles.refresh_p99_ms:.2f}",
                    f"{r.roles.revalidate_p50_ms:.2f} / {r.roles.revalidate_p99_ms:.2f}",
                    f"<= {r.roles.goal_p99_us:g} µs {verdict(r.roles.met)}",
                )
                for r in rows
            ),
        )
        return (
            overhead,
            verify,
            proofs,
            concurrency,
            roles,
            Note(
                "Proofs: the audit path is what the 1 KB goal is about; the document also "
                "carries the entry's body and the signed head so that it verifies on its own. "
                "check proof = leaf hash + path + Ed25519 signature (median); check path = "
                "verify_inclusion alone."
            ),
            Note(
                "Role checks: reload = the principal's grants read again after a change "
                "(generation moved); fresh? = the generation read that a check does once its "
                f"grants are {self.parameters['max_age_s']:g} s old. For scale: pycasbin took "
                f"about {PYCASBIN_MS:g} ms per check with 11,000 policies ({PYCASBIN_SOURCE})."
            ),
        )


# ---------------------------------------------------------------------------- helpers
def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def _database(backend: str, admin_url: str | None, folder: Path, name: str) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in ``folder``, or a scratch PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    assert admin_url is not None  # noqa: S101 - the caller passes one with postgresql
    scratch = f"veil_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{scratch}"'))
        yield admin.url.set(database=scratch).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()


def _add_dataset(store: Store, name: str = DATASET) -> tuple[int, str]:
    """A dataset row with a budget (the catalogue is not what is measured): its id and digest."""
    with store.session(lock=True) as session:
        row = DatasetRow(
            name=name,
            format="csv",
            source="bench://trail",
            content_sha256=secrets.token_hex(32),
            size_bytes=1_000_000,
            n_rows=10_000,
            n_columns=12,
            privacy_schema={"privacy_unit": "person_id"},
            load_options={},
            registration_report={"privacy_units": 10_000},
            created_by=OWNER,
            veil_version=__version__,
        )
        session.add(row)
        session.flush()
        session.add(PrivacyBudgetRow(dataset_id=row.id, epsilon=1.0, delta=1e-6, updated_by=OWNER))
        return row.id, row.content_sha256


def _body(i: int) -> dict[str, Any]:
    """Entry ``i`` of the verify benchmark's trail: one of four real actions, real-sized fields."""
    action = _ACTIONS[i % len(_ACTIONS)]
    dataset = f"dataset-{i % 20}"
    version = f"{(i % 20) * 7919:064x}"
    links: dict[str, Any] = {"dataset_id": i % 20 + 1, "content_sha256": version}
    details: dict[str, Any]
    if action == "dataset.read":
        details = {"use": "mechanism", "columns": ["age", "income", "zip"], "n_rows": 48_842}
    elif action == "model.save":
        links |= {"model": f"model-{i:08d}", "ledger_event": i, "test_ledger_event": i + 1}
        details = {"private": True, "epsilon": 1.0 + (i % 7) / 10, "accuracy": 0.8123}
    elif action == "audit.run":
        links |= {"model": f"model-{i - 1:08d}", "ledger_event": i - 1}
        details = {"attack": "lira", "auc": 0.5123, "report": f"audits/report-{i}.html"}
    else:
        details = {"events": i % 300}
    return {
        "actor": f"analyst-{i % 50}",
        "action": action,
        "dataset": dataset,
        "purpose": f"quarterly churn model, ticket DS-{1000 + i % 500}",
        "links": links,
        "details": details,
    }


# ---------------------------------------------------------------------------- 1. overhead
def _budget_change(
    store: Store, dataset_id: int, epsilon: float, access: Access | None, content: str
) -> None:
    """The writes of ``Ledger.set_budget``, with its ``budget.set`` entry when ``access``."""
    with store.session(lock=True) as session:
        row = session.execute(
            sa.select(PrivacyBudgetRow)
            .where(PrivacyBudgetRow.dataset_id == dataset_id)
            .with_for_update()
        ).scalar_one()
        previous = {"epsilon": row.epsilon, "delta": row.delta, "rho": row.rho}
        row.epsilon, row.updated_by, row.updated_at = epsilon, OWNER, datetime.now(UTC)
        change = BudgetChangeRow(
            dataset_id=dataset_id,
            actor=OWNER,
            reason="approved by the DPO, ticket 123",
            epsilon=epsilon,
            delta=row.delta,
            rho=None,
            changed_at=datetime.now(UTC),
        )
        session.add(change)
        session.flush()
        if access is not None:
            access.append(
                session,
                "budget.set",
                dataset=DATASET,
                purpose="approved by the DPO, ticket 123",
                links={
                    "dataset_id": dataset_id,
                    "budget_change": change.id,
                    "content_sha256": content,
                },
                details={
                    "budget": {"epsilon": epsilon, "delta": row.delta, "rho": None},
                    "previous": previous,
                },
            )


def _overhead(
    url: str, backend: str, *, actions: int, warmup: int, progress: ProgressCallback | None
) -> OverheadRow:
    store = Store.open(url, upgrade=True)
    try:
        access = Access(store, Principal(OWNER), signing_key=secrets.token_bytes(32))
        access.allows(Permission.BUDGET_SET, DATASET)  # claims the workspace: trail.start
        dataset_id, content = _add_dataset(store)
        off: list[float] = []
        on: list[float] = []
        task = f"{backend}: recording overhead"
        for i in range(warmup + actions):
            # off-on, on-off, ...: neither variant always runs first.
            order = (None, access) if i % 2 == 0 else (access, None)
            for recorder in order:
                began = time.perf_counter()
                _budget_change(store, dataset_id, 1.0 + i / 1000, recorder, content)
                elapsed = 1e3 * (time.perf_counter() - began)
                if i >= warmup:
                    (off if recorder is None else on).append(elapsed)
            if i >= warmup and (i - warmup) % 50 == 0:
                emit(progress, task, i - warmup, actions, unit="pairs")
        emit(progress, task, actions, actions, unit="pairs")
    finally:
        store.dispose()
    goal = GOAL_ADDED_P99_MS[backend]
    added_p99 = _quantile(on, 0.99) - _quantile(off, 0.99)
    return OverheadRow(
        actions=actions,
        off_p50_ms=statistics.median(off),
        off_p99_ms=_quantile(off, 0.99),
        on_p50_ms=statistics.median(on),
        on_p99_ms=_quantile(on, 0.99),
        added_p50_ms=statistics.median(on) - statistics.median(off),
        added_p99_ms=added_p99,
        ratio_p50=statistics.median(on) / statistics.median(off),
        ratio_p99=_quantile(on, 0.99) / _quantile(off, 0.99),
        goal_added_p99_ms=goal,
        met=added_p99 <= goal,
    )


# ---------------------------------------------------------------------------- 2, 3. verify, proofs
def _build(trail: Trail, entries: int, progress: ProgressCallback | None, task: str) -> float:
    """Append ``entries`` entries in all (``trail.start`` included); return the seconds."""
    began = time.perf_counter()
    done = 0
    while done < entries:
        # The first batch's trail.start is added by append_many: one entry fewer in it.
        count = min(BATCH, entries - done) - (1 if done == 0 else 0)
        bodies = [_body(done + k) for k in range(count)]
        with trail.store.session(lock=True) as session:
            trail.append_many(session, bodies)
        done += count + (1 if done == 0 else 0)
        emit(progress, task, done, entries, unit="entries")
    return time.perf_counter() - began


def _verify_and_prove(
    url: str,
    backend: str,
    *,
    entries: int,
    proof_runs: int,
    progress: ProgressCallback | None,
) -> tuple[VerifyRow, tuple[ProofRow, ...]]:
    store = Store.open(url, upgrade=True)
    try:
        trail = Trail(store, signing_key=secrets.token_bytes(32))
        build_s = _build(trail, entries, progress, f"{backend}: build the trail")
        began = time.perf_counter()
        report = trail.verify(progress=progress)
        verify_s = time.perf_counter() - began
        verify = VerifyRow(
            entries=report.size,
            build_s=build_s,
            build_entries_per_s=entries / build_s,
            signed_heads=report.heads_checked,
            verify_s=verify_s,
            entries_per_s=report.size / verify_s,
            ok=report.ok,
            problems=len(report.problems),
            goal_entries_per_s=GOAL_VERIFY_PER_S,
            met=report.ok and report.size / verify_s >= GOAL_VERIFY_PER_S,
        )
        head = trail.checkpoint()
        assert trail.public_key is not None  # noqa: S101 - the trail has its key
        key = bytes.fromhex(trail.public_key)
        proofs = tuple(
            _proof(trail, seq, head, key, proof_runs) for seq in dict.fromkeys((entries, 1))
        )
    finally:
        store.dispose()
    return verify, proofs


def _proof(trail: Trail, seq: int, head: Any, key: bytes, runs: int) -> ProofRow:
    began = time.perf_counter()
    document = trail.prove(seq, head=head)
    prove_ms = 1e3 * (time.perf_counter() - began)
    path = [bytes.fromhex(h) for h in document["proof"]]
    body = document["entry"]["body"].encode("utf-8")
    leaf, root = leaf_hash(body), bytes.fromhex(document["head"]["root"])
    index, size = document["entry"]["index"], document["head"]["size"]
    whole: list[float] = []
    alone: list[float] = []
    verified = True
    for _ in range(runs):
        began = time.perf_counter()
        verified &= verify_inclusion_proof(document, key)
        whole.append(1e6 * (time.perf_counter() - began))
        began = time.perf_counter()
        verified &= verify_inclusion(index, size, leaf, path, root)
        alone.append(1e6 * (time.perf_counter() - began))
    document_bytes = len(json.dumps(document, separators=(",", ":")).encode("utf-8"))
    median_whole = statistics.median(whole)
    return ProofRow(
        entry=seq,
        tree_size=size,
        path_hashes=len(path),
        path_bytes=32 * len(path),
        body_bytes=len(body),
        document_bytes=document_bytes,
        prove_ms=prove_ms,
        verify_document_us=median_whole,
        verify_document_p99_us=_quantile(whole, 0.99),
        verify_path_us=statistics.median(alone),
        verified=verified,
        path_under_1kb=32 * len(path) < GOAL_PROOF_BYTES,
        document_under_1kb=document_bytes < GOAL_PROOF_BYTES,
        verify_under_1ms=median_whole < GOAL_PROOF_VERIFY_US,
    )


# ---------------------------------------------------------------------------- 4. concurrency
def _worker(
    url: str, index: int, *, actions: int, signing_key: bytes, start: Any, results: Any
) -> None:
    """One concurrent recorder: its own process, store and Access, as a separate command."""
    store = Store.open(url)
    access = Access(store, Principal(f"worker-{index}"), signing_key=signing_key)
    latencies: list[float] = []
    try:
        start.wait()
        for n in range(actions):
            began = time.perf_counter()
            access.require(Permission.BUDGET_SPEND, DATASET, action="privacy.preview")
            access.record(
                "dataset.read",
                dataset=DATASET,
                purpose=f"worker {index} action {n}",
                links={"dataset_id": 1, "content_sha256": f"{index:064x}"},
                details={"worker": index, "n": n, "use": "mechanism", "n_rows": 10_000},
            )
            latencies.append(time.perf_counter() - began)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((index, f"{type(exc).__name__}: {exc}"))
    else:
        results.put((index, latencies))
    finally:
        store.dispose()


def _concurrency(
    url: str, backend: str, *, workers: int, per_worker: int, progress: ProgressCallback | None
) -> ConcurrencyRow:
    key = secrets.token_bytes(32)
    store = Store.open(url, upgrade=True)
    try:
        owner = Access(store, Principal(OWNER), signing_key=key)
        _add_dataset(store)
        for i in range(workers):
            owner.grant(f"worker-{i}", Role.ANALYST, DATASET, reason="benchmark")
        trail = owner.trail
        setup = trail.head().size
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(workers + 1)
        results = context.Queue()
        procs = [
            context.Process(
                target=_worker,
                args=(url, i),
                kwargs={
                    "actions": per_worker,
                    "signing_key": key,
                    "start": start,
                    "results": results,
                },
            )
            for i in range(workers)
        ]
        task = f"{backend}: {workers} processes"
        emit(progress, task, 0, workers, unit="processes")
        for proc in procs:
            proc.start()
        start.wait(timeout=600)
        began = time.perf_counter()
        answers = []
        for _ in procs:
            answers.append(results.get(timeout=3600))
            emit(progress, task, len(answers), workers, unit="processes")
        wall = time.perf_counter() - began
        for proc in procs:
            proc.join()
        failed = [a for _, a in answers if isinstance(a, str)]
        if failed:
            msg = f"a concurrent recorder failed: {failed[0]}"
            raise RuntimeError(msg)
        latencies = [x for _, answer in answers for x in answer]
        report = trail.verify()
        with store.session() as session:
            count, low, high = session.execute(
                sa.select(
                    sa.func.count(), sa.func.min(TrailEntryRow.seq), sa.func.max(TrailEntryRow.seq)
                )
            ).one()
            by_actor = dict(
                session.execute(
                    sa.select(TrailEntryRow.actor, sa.func.count())
                    .where(TrailEntryRow.action == "dataset.read")
                    .group_by(TrailEntryRow.actor)
                ).all()
            )
        counts = {f"worker-{i}": int(by_actor.get(f"worker-{i}", 0)) for i in range(workers)}
        # Every action once: each worker's entries carry n = 0 .. per_worker - 1, none twice.
        seen = {
            (e.details["worker"], e.details["n"])
            for e in trail.entries(action="dataset.read")
            if e.actor.startswith("worker-")
        }
    finally:
        store.dispose()
    expected = setup + workers * per_worker
    all_present = seen == {(i, n) for i in range(workers) for n in range(per_worker)} and all(
        c == per_worker for c in counts.values()
    )
    contiguous = (count, low, high) == (report.size, 1, report.size)
    return ConcurrencyRow(
        workers=workers,
        per_worker=per_worker,
        setup_entries=setup,
        wall_s=wall,
        actions_per_s=len(latencies) / wall,
        p50_ms=1e3 * statistics.median(latencies),
        p99_ms=1e3 * _quantile(latencies, 0.99),
        size=report.size,
        expected_size=expected,
        per_worker_counts=counts,
        all_present=all_present,
        contiguous=contiguous,
        verify_ok=report.ok,
        problems=tuple(p.message for p in report.problems),
        met=report.ok and all_present and contiguous and report.size == expected,
    )


# ---------------------------------------------------------------------------- 5. role checks
def _seed_grants(store: Store, grants: int) -> int:
    """``grants`` analyst and auditor grants, four datasets per principal; their principals."""
    roles = (Role.ANALYST, Role.AUDITOR)
    now = datetime.now(UTC)
    rows = [
        {
            "principal": f"user-{i // _DATASETS_PER_PRINCIPAL}",
            "role": str(roles[(i // _DATASETS_PER_PRINCIPAL) % 2]),
            "scope": f"dataset-{i % 997}",
            "granted_at": now,
            "granted_by": OWNER,
        }
        for i in range(grants)
    ]
    with store.session(lock=True) as session:
        for start in range(0, len(rows), BATCH):
            session.execute(sa.insert(GrantRow), rows[start : start + BATCH])
    return len({r["principal"] for r in rows})


def _roles(
    url: str,
    backend: str,
    *,
    grants: int,
    checks: int,
    refreshes: int,
    max_age: float,
    progress: ProgressCallback | None,
) -> RoleRow:
    store = Store.open(url, upgrade=True)
    try:
        owner = Access(store, Principal(OWNER))
        owner.allows(Permission.ACCESS_MANAGE)  # the owner claims the workspace
        principals = _seed_grants(store, grants)
        with store.session() as session:
            total = session.execute(sa.select(sa.func.count()).select_from(GrantRow)).scalar_one()
            held = session.execute(
                sa.select(GrantRow.scope).where(GrantRow.principal == "user-0")
            ).scalars()
            scopes = sorted(set(held) - {WORKSPACE})
        checker = Access(store, Principal("user-0"), max_age=max_age)  # an analyst
        allowed = [(p, d) for p in _CHECKED for d in scopes]
        mixed = [*allowed, (Permission.BUDGET_SET, scopes[0]), (Permission.DATASET_USE, "other")]
        checker.require(*allowed[0])  # loads the grants once
        task = f"{backend}: role checks"
        required: list[float] = []
        asked: list[float] = []
        denied = 0
        clock = time.perf_counter_ns
        for i in range(checks):
            permission, dataset = allowed[i % len(allowed)]
            tick = clock()
            checker.require(permission, dataset)
            required.append((clock() - tick) / 1e3)
            permission, dataset = mixed[i % len(mixed)]
            tick = clock()
            denied += not checker.allows(permission, dataset)
            asked.append((clock() - tick) / 1e3)
            if i % 10_000 == 0:
                emit(progress, task, i, checks, unit="checks")
        emit(progress, task, checks, checks, unit="checks")
        reloads: list[float] = []
        fresh: list[float] = []
        for r in range(refreshes):
            owner.grant(f"user-{r % max(principals, 1) + 1}", Role.ANALYST, f"new-{r}")
            began = time.perf_counter()
            checker.policy(refresh=True)  # the generation moved: the grants are read again
            reloads.append(1e3 * (time.perf_counter() - began))
            began = time.perf_counter()
            checker.policy(refresh=True)  # it did not: one read of the generation
            fresh.append(1e3 * (time.perf_counter() - began))
    finally:
        store.dispose()
    p99 = _quantile(required, 0.99)
    return RoleRow(
        grants=int(total),
        principals=principals,
        checks=checks,
        require_p50_us=statistics.median(required),
        require_p99_us=p99,
        require_max_us=max(required),
        allows_p50_us=statistics.median(asked),
        allows_p99_us=_quantile(asked, 0.99),
        denied_share=denied / checks,
        refreshes=refreshes,
        refresh_p50_ms=statistics.median(reloads) if reloads else float("nan"),
        refresh_p99_ms=_quantile(reloads, 0.99),
        revalidate_p50_ms=statistics.median(fresh) if fresh else float("nan"),
        revalidate_p99_ms=_quantile(fresh, 0.99),
        goal_p99_us=GOAL_CHECK_P99_US,
        met=max(p99, _quantile(asked, 0.99)) <= GOAL_CHECK_P99_US,
    )


# ---------------------------------------------------------------------------- the benchmark
def _machine(admin_url: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "veil": __version__,
    }
    if admin_url is not None:
        engine = sa.create_engine(admin_url)
        try:
            with engine.connect() as conn:
                facts["postgresql"] = conn.execute(sa.text("SHOW server_version")).scalar_one()
        finally:
            engine.dispose()
    return facts


def run_trail_benchmark(
    *,
    entries: int = 1_000_000,
    actions: int = 1_000,
    warmup: int = 20,
    workers: int = 8,
    per_worker: int = 500,
    grants: int = 10_000,
    checks: int = 100_000,
    refreshes: int = 200,
    proof_runs: int = 2_000,
    max_age: float = 1.0,
    postgres_url: str | None = None,
    progress: ProgressCallback | None = None,
) -> TrailResult:
    """Recording overhead, verify throughput, proofs, concurrency and role checks.

    Args:
        entries: Size of the trail that is verified and proved (``trail.start`` included).
        actions: Timed budget changes of each variant (recording off, on).
        warmup: Untimed pairs before them.
        workers: Concurrent recording processes.
        per_worker: Actions each of them records.
        grants: Grants in the table during the role checks.
        checks: Timed ``require`` (and as many ``allows``) calls.
        refreshes: Timed reloads of the grants after a change.
        proof_runs: Timed checks of each proof (the median is reported).
        max_age: The checker's ``Access(max_age=...)`` (the product's default).
        postgres_url: A PostgreSQL server to run on as well (a scratch database
            is created and dropped); SQLite only when ``None``.
        progress: Receives progress events.
    """
    backends = ["sqlite"] + (["postgresql"] if postgres_url else [])
    sizes = {
        "entries": entries,
        "actions": actions,
        "workers": workers,
        "per_worker": per_worker,
        "grants": grants,
        "checks": checks,
    }
    least = {"grants": _DATASETS_PER_PRINCIPAL}
    small = {k: v for k, v in sizes.items() if v < least.get(k, 1)}
    if small:
        raise InvalidInputError(
            "the trail benchmark needs something to measure",
            expected=f"every size at least 1 (grants at least {_DATASETS_PER_PRINCIPAL})",
            got=", ".join(f"{k}={v}" for k, v in small.items()),
            fix="give positive --entries, --actions, --workers, --per-worker, --grants, --checks",
        )
    rows = []
    with tempfile.TemporaryDirectory(prefix="veil-bench-trail-") as tmp:
        folder = Path(tmp)
        for backend in backends:
            with _database(backend, postgres_url, folder, f"{backend}-overhead") as url:
                overhead = _overhead(
                    url, backend, actions=actions, warmup=warmup, progress=progress
                )
            with _database(backend, postgres_url, folder, f"{backend}-verify") as url:
                verify, proofs = _verify_and_prove(
                    url, backend, entries=entries, proof_runs=proof_runs, progress=progress
                )
            with _database(backend, postgres_url, folder, f"{backend}-concurrency") as url:
                concurrency = _concurrency(
                    url, backend, workers=workers, per_worker=per_worker, progress=progress
                )
            with _database(backend, postgres_url, folder, f"{backend}-roles") as url:
                roles = _roles(
                    url,
                    backend,
                    grants=grants,
                    checks=checks,
                    refreshes=refreshes,
                    max_age=max_age,
                    progress=progress,
                )
            rows.append(
                TrailBackendRow(
                    backend=backend,
                    overhead=overhead,
                    verify=verify,
                    proofs=proofs,
                    concurrency=concurrency,
                    roles=roles,
                )
            )
    return TrailResult(
        parameters={
            **sizes,
            "warmup": warmup,
            "refreshes": refreshes,
            "proof_runs": proof_runs,
            "max_age_s": max_age,
            "backends": backends,
            "batch": BATCH,
        },
        goals={
            "added_p99_ms": GOAL_ADDED_P99_MS,
            "verify_entries_per_s": GOAL_VERIFY_PER_S,
            "proof_bytes_under": GOAL_PROOF_BYTES,
            "proof_verify_us_under": GOAL_PROOF_VERIFY_US,
            "check_p99_us": GOAL_CHECK_P99_US,
            "concurrency": "one valid chain, no fork, no gap, every committed action present",
        },
        machine=_machine(postgres_url),
        results=tuple(rows),
    )
