"""Measurements 4 and 5 of ``veil bench trail``: concurrent recorders, role checks at scale.

4. ``workers`` spawned processes, each checking a role and recording through
   its own :class:`~veil.access.Access`; then the trail must verify, hold every
   action once, and run without a gap.
5. :meth:`Access.require` and :meth:`Access.allows` with ``grants`` grants in
   the table, and the reload of the grants when the access generation moved.

The result types and the entry point are in :mod:`veil.bench._trail`.
"""

from __future__ import annotations

import multiprocessing
import secrets
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from veil.access import WORKSPACE, Access, Permission, Principal, Role
from veil.bench._trail_chain import BATCH, DATASET, OWNER, add_dataset, quantile
from veil.progress import ProgressCallback, emit
from veil.store import Store
from veil.store.tables import GrantRow, TrailEntryRow

__all__ = [
    "DATASETS_PER_PRINCIPAL",
    "GOAL_CHECK_P99_US",
    "ConcurrencyRow",
    "RoleRow",
    "measure_concurrency",
    "measure_roles",
]

GOAL_CHECK_P99_US = 200.0
DATASETS_PER_PRINCIPAL = 4
_CHECKED = (Permission.DATASET_USE, Permission.BUDGET_SPEND, Permission.LEDGER_READ)


# ---------------------------------------------------------------------------- results
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


def measure_concurrency(
    url: str, backend: str, *, workers: int, per_worker: int, progress: ProgressCallback | None
) -> ConcurrencyRow:
    """Measurement 4: ``workers`` processes record at once; then the trail is checked."""
    key = secrets.token_bytes(32)
    store = Store.open(url, upgrade=True)
    try:
        owner = Access(store, Principal(OWNER), signing_key=key)
        add_dataset(store)
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
        p99_ms=1e3 * quantile(latencies, 0.99),
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
            "principal": f"user-{i // DATASETS_PER_PRINCIPAL}",
            "role": str(roles[(i // DATASETS_PER_PRINCIPAL) % 2]),
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


def measure_roles(
    url: str,
    backend: str,
    *,
    grants: int,
    checks: int,
    refreshes: int,
    max_age: float,
    progress: ProgressCallback | None,
) -> RoleRow:
    """Measurement 5: role checks with ``grants`` grants, and reloads after a change."""
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
    p99 = quantile(required, 0.99)
    return RoleRow(
        grants=int(total),
        principals=principals,
        checks=checks,
        require_p50_us=statistics.median(required),
        require_p99_us=p99,
        require_max_us=max(required),
        allows_p50_us=statistics.median(asked),
        allows_p99_us=quantile(asked, 0.99),
        denied_share=denied / checks,
        refreshes=refreshes,
        refresh_p50_ms=statistics.median(reloads) if reloads else float("nan"),
        refresh_p99_ms=quantile(reloads, 0.99),
        revalidate_p50_ms=statistics.median(fresh) if fresh else float("nan"),
        revalidate_p99_ms=quantile(fresh, 0.99),
        goal_p99_us=GOAL_CHECK_P99_US,
        met=max(p99, quantile(asked, 0.99)) <= GOAL_CHECK_P99_US,
    )
