"""Measurements 1 to 3 of ``veil bench trail`` and the helpers all five share.

1. Recording overhead: a budget change without and with its ``budget.set`` entry.
2. Verify throughput: a trail of realistic entries built in batches, then verified.
3. Inclusion proofs: their size and the time to make and to check them.

The shared part: a fresh database per measurement (SQLite file or scratch
PostgreSQL database), a dataset row with a budget, quantiles. The result types
and the entry point are in :mod:`veil.bench._trail`; 4 and 5 in
:mod:`veil.bench._trail_load`.
"""

from __future__ import annotations

import json
import secrets
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from veil import __version__
from veil.access import Access, Permission, Principal, Trail
from veil.access.verifier import leaf_hash, verify_inclusion, verify_inclusion_proof
from veil.progress import ProgressCallback, emit
from veil.store import Store
from veil.store.tables import BudgetChangeRow, DatasetRow, PrivacyBudgetRow

__all__ = [
    "BATCH",
    "DATASET",
    "GOAL_ADDED_P99_MS",
    "GOAL_PROOF_BYTES",
    "GOAL_PROOF_VERIFY_US",
    "GOAL_VERIFY_PER_S",
    "OWNER",
    "OverheadRow",
    "ProofRow",
    "VerifyRow",
    "add_dataset",
    "measure_overhead",
    "measure_verify_and_proofs",
    "quantile",
    "scratch_database",
]

GOAL_ADDED_P99_MS = {"sqlite": 2.0, "postgresql": 5.0}
GOAL_VERIFY_PER_S = 200_000.0
GOAL_PROOF_BYTES = 1024
GOAL_PROOF_VERIFY_US = 1_000.0

OWNER = "bench-owner"
DATASET = "bench-trail"
BATCH = 10_000
_ACTIONS = ("dataset.read", "model.save", "audit.run", "ledger.read")


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


# ---------------------------------------------------------------------------- helpers
def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (the nearest rank at or above it); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def scratch_database(backend: str, admin_url: str | None, folder: Path, name: str) -> Iterator[str]:
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


def add_dataset(store: Store, name: str = DATASET) -> tuple[int, str]:
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


def measure_overhead(
    url: str, backend: str, *, actions: int, warmup: int, progress: ProgressCallback | None
) -> OverheadRow:
    """Measurement 1: the budget change without and with its trail entry, alternated."""
    store = Store.open(url, upgrade=True)
    try:
        access = Access(store, Principal(OWNER), signing_key=secrets.token_bytes(32))
        access.allows(Permission.BUDGET_SET, DATASET)  # claims the workspace: trail.start
        dataset_id, content = add_dataset(store)
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
    added_p99 = quantile(on, 0.99) - quantile(off, 0.99)
    return OverheadRow(
        actions=actions,
        off_p50_ms=statistics.median(off),
        off_p99_ms=quantile(off, 0.99),
        on_p50_ms=statistics.median(on),
        on_p99_ms=quantile(on, 0.99),
        added_p50_ms=statistics.median(on) - statistics.median(off),
        added_p99_ms=added_p99,
        ratio_p50=statistics.median(on) / statistics.median(off),
        ratio_p99=quantile(on, 0.99) / quantile(off, 0.99),
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


def measure_verify_and_proofs(
    url: str,
    backend: str,
    *,
    entries: int,
    proof_runs: int,
    progress: ProgressCallback | None,
) -> tuple[VerifyRow, tuple[ProofRow, ...]]:
    """Measurements 2 and 3: build and verify the trail, then prove its last and first entry."""
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
        verify_document_p99_us=quantile(whole, 0.99),
        verify_path_us=statistics.median(alone),
        verified=verified,
        path_under_1kb=32 * len(path) < GOAL_PROOF_BYTES,
        document_under_1kb=document_bytes < GOAL_PROOF_BYTES,
        verify_under_1ms=median_whole < GOAL_PROOF_VERIFY_US,
    )
