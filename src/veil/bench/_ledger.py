"""``veil bench ledger``: the cost of a charge against the size of the history.

For each history size and backend the benchmark builds a dataset whose ledger
already holds that many heterogeneous releases (Laplace, Gaussian, discrete
Laplace, discrete Gaussian, Poisson-subsampled Gaussian, (epsilon, delta); every
one with distinct parameters), written straight into the event table with their
chain links, then:

1. recomposes that history from scratch (:func:`veil.ledger.recompose`, timed:
   what every charge cost before checkpoints) and stores it as the dataset's
   checkpoint through :meth:`Ledger.verify` (which also walks the chain);
2. charges ``charges`` more heterogeneous releases one after the other
   through :meth:`Ledger.charge` (p50, p99, charges per second), after a few
   untimed warm-up charges;
3. checks every charged epsilon against a from-scratch recomposition of the
   same history (the recomposed state of step 1, extended by the same events
   outside the ledger): never below it, at most 0.5 % above;
4. on PostgreSQL, has ``processes`` processes charge the same dataset at once
   and reports the charges per second they sustain together.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from veil.bench._result import BenchResult, Column, Note, Table, View, fixed
from veil.ledger import Budget, Ledger, Mechanism, PLDAccountant, PrivacyEvent, recompose
from veil.progress import ProgressCallback, emit
from veil.store import Store
from veil.store.chain import GENESIS, link
from veil.store.tables import PrivacyEventRow, utcnow

__all__ = ["LedgerResult", "LedgerRow", "heterogeneous_event", "run_ledger_benchmark"]

DATASET = "bench-ledger"
BUDGET = Budget(epsilon=100.0, delta=1e-6)
GOAL_P99_MS = {"sqlite": 20.0, "postgresql": 30.0}
GOAL_CONCURRENT_PER_S = 200.0
GOAL_EXCESS = 0.005
_BATCH = 5_000
_KEY = b"veil-bench-ledger-key-0123456789"


@dataclass(frozen=True, kw_only=True)
class LedgerRow:
    """One (history size, backend): charge latency, the recomposition check, concurrency."""

    history: int
    backend: str
    p50_ms: float
    p99_ms: float
    charges_per_s: float
    cold_status_s: float
    recompose_s: float
    verify_s: float
    verify_ok: bool
    epsilon: float | None
    epsilon_reference: float
    excess_min: float
    excess_max: float
    state_points: int
    batch_pld: Mapping[str, float] | None
    goal_p99_ms: float | None
    # PostgreSQL only: every concurrent run, and the one with the most processes.
    concurrent_runs: tuple[Mapping[str, Any], ...] | None = field(
        default=None, metadata={"omit_none": True}
    )
    concurrent: Mapping[str, Any] | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True, kw_only=True)
class LedgerResult(BenchResult):
    """``veil bench ledger``: one row per history size and backend, and the goals."""

    benchmark: str = "ledger"
    budget: Mapping[str, Any]
    parameters: Mapping[str, Any]
    goals: Mapping[str, Any]
    cpus: int | None
    results: tuple[LedgerRow, ...]

    def view(self) -> View:
        """The latency table, the concurrency curves, how to read the excess column."""
        goals, params = self.goals, self.parameters

        def p99(r: LedgerRow) -> str:
            goal = goals["p99_ms"].get(r.backend)
            text = f"{r.p99_ms:.1f}"
            if goal is not None:
                text += " ok" if r.p99_ms <= goal else f" (goal {goal:g})"
            return text

        table = Table(
            title=f"Ledger charges against history size ({params['charges']} charges "
            f"after {params['warmup']} warm-up, budget {self.budget}, {self.cpus} CPUs)",
            columns=(
                Column("history", fixed(",")),
                Column("backend"),
                Column("p50 ms", fixed(".1f")),
                Column("p99 ms"),
                Column("charges/s", fixed(".0f")),
                Column("epsilon", fixed(".4f")),
                Column("vs recomposition"),
                Column("recompose s", fixed(".2f")),
                Column(f"{max(params['processes'] or [0])} procs /s", fixed(".0f")),
            ),
            rows=tuple(
                (
                    r.history,
                    r.backend,
                    r.p50_ms,
                    p99(r),
                    r.charges_per_s,
                    r.epsilon,
                    f"{100 * r.excess_min:+.4f}% .. {100 * r.excess_max:+.4f}%",
                    r.recompose_s,
                    None if r.concurrent is None else r.concurrent["charges_per_s"],
                )
                for r in self.results
            ),
        )
        curves = tuple(
            Note(
                f"{r.history:,} events, {r.backend}, concurrent processes -> "
                + ", ".join(
                    f"{x['processes']}: {x['charges_per_s']:.0f}/s" for x in r.concurrent_runs
                )
            )
            for r in self.results
            if r.concurrent_runs
        )
        return (
            table,
            *curves,
            Note(
                "vs recomposition: (charged - from-scratch) / from-scratch over every charge; the "
                f"goal is 0 <= x <= {100 * goals['excess_at_most']:g}%. Goals: p99 "
                f"{goals['p99_ms']} ms, {goals['concurrent_charges_per_s']:g} charges/s from "
                "concurrent processes (PostgreSQL)."
            ),
        )


def heterogeneous_event(i: int, rng: np.random.Generator) -> PrivacyEvent:
    """Release ``i`` of a benchmark history: one of six mechanisms, distinct random parameters.

    The scales are such that 100,000 of them compose to an epsilon of a few units at
    delta 1e-6 (a ledger that is still in use, not one long exhausted).
    """
    makers: list[Callable[[], Mechanism]] = [
        lambda: Mechanism.laplace(scale=float(rng.uniform(700, 2700)), sensitivity=1.0),
        lambda: Mechanism.gaussian(sigma=float(rng.uniform(100, 400)), sensitivity=1.0),
        lambda: Mechanism.discrete_laplace(scale=float(rng.uniform(700, 2700)), sensitivity=1),
        lambda: Mechanism.discrete_gaussian(sigma=float(rng.uniform(100, 400)), sensitivity=1),
        lambda: Mechanism.subsampled_gaussian(
            float(rng.uniform(0.001, 0.01)), float(rng.uniform(7, 20)), int(rng.integers(1, 5))
        ),
        lambda: Mechanism.epsilon_delta(
            "sparse_vector", float(rng.uniform(3e-4, 1.2e-3)), float(rng.uniform(1e-14, 5e-14))
        ),
    ]
    mechanism = makers[i % len(makers)]()
    return PrivacyEvent(f"bench release {i}", (mechanism,), operation="mechanism")


def _postgres_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh, empty PostgreSQL database for one run, and how to drop it."""
    name = f"veil_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def _setup(url: str, history: Sequence[PrivacyEvent]) -> Ledger:
    from veil.data import Catalog  # noqa: PLC0415 - pandas only when the benchmark runs
    from veil.workspace import Settings, login_name  # noqa: PLC0415

    store = Store.open(url, upgrade=True)
    settings = Settings(store.display_url, None, login_name())
    Catalog(store, settings).add("sklearn:diabetes", name=DATASET)
    ledger = Ledger(store, settings, key=_KEY)
    ledger.set_budget(DATASET, BUDGET, reason="benchmark")
    with store.session(lock=True) as session:
        dataset_id = session.execute(
            sa.text("SELECT id FROM datasets WHERE name = :n"), {"n": DATASET}
        ).scalar_one()
    chain, rows = GENESIS, []
    for seq, event in enumerate(history, start=1):
        mechanisms = [m.to_dict() for m in event.mechanisms]
        chain = link(chain, seq, mechanisms)
        rows.append(
            {
                "dataset_id": dataset_id,
                "seq": seq,
                "created_at": utcnow(),
                "actor": "bench",
                "purpose": "benchmark history",
                "operation": event.operation,
                "what": event.what,
                "mechanisms": mechanisms,
                "details": {},
                "accountant": "pld",
                "epsilon": None,
                "rho": None,
                "spent_epsilon": None,
                "spent_delta": None,
                "spent_rho": None,
                "chain": chain,
            }
        )
        if len(rows) == _BATCH or seq == len(history):
            with store.session() as session:
                session.execute(sa.insert(PrivacyEventRow), rows)
            rows = []
    return ledger


def _charge_worker(url: str, start: Any, count: int, seed: int, results: Any) -> None:
    """One of the concurrent chargers: a fresh process with its own Ledger (its cache empty)."""
    store = Store.open(url)
    ledger = Ledger(store, None, key=_KEY)
    rng = np.random.default_rng(seed)
    events = [heterogeneous_event(int(rng.integers(0, 6)), rng) for _ in range(count)]
    start.wait()
    latencies = []
    try:
        for event in events:
            began = time.perf_counter()
            ledger.charge(DATASET, event, purpose=f"benchmark worker {seed}")
            latencies.append(time.perf_counter() - began)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        results.put(latencies)
    finally:
        store.dispose()


def _concurrent(url: str, processes: int, per_process: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [
        context.Process(target=_charge_worker, args=(url, start, per_process, 1000 + i, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    answers = [results.get(timeout=3600) for _ in workers]
    wall = time.perf_counter() - began
    failed = [a for a in answers if isinstance(a, str)]
    if failed:
        msg = f"a concurrent charger failed: {failed[0]}"
        raise RuntimeError(msg)
    latencies = [x for answer in answers for x in answer]
    for worker in workers:
        worker.join()
    return {
        "processes": processes,
        "charges": len(latencies),
        "wall_s": wall,
        "charges_per_s": len(latencies) / wall,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * float(np.quantile(latencies, 0.99)),
    }


def run_ledger_benchmark(  # noqa: C901, PLR0915 - one benchmark, in order
    *,
    sizes: Sequence[int] = (10, 1_000, 100_000),
    backends: Sequence[str] = ("sqlite", "postgresql"),
    charges: int = 200,
    warmup: int = 5,
    processes: Sequence[int] = (8,),
    per_process: int = 50,
    postgres_url: str | None = None,
    batch_accountant_max: int = 1_000,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> LedgerResult:
    """Charge latency and throughput against history size, on SQLite and PostgreSQL."""
    admin_url = postgres_url or os.environ.get(
        "VEIL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    results: list[LedgerRow] = []
    for size in sizes:
        rng = np.random.default_rng(seed + size)
        history = [heterogeneous_event(i, rng) for i in range(size)]
        more = [heterogeneous_event(size + i, rng) for i in range(warmup + charges)]
        emit(progress, f"recompose {size:,} events", 0, size, unit="events")
        began = time.perf_counter()
        scratch = recompose([e.dp_event for e in history])
        recompose_s = time.perf_counter() - began
        history_epsilon = scratch.epsilon(BUDGET.delta or 0)
        batch = None
        if size <= batch_accountant_max:
            # dp_accounting's own PLD accountant over the same history (an independent
            # implementation: it merges identical events and picks its grid for the whole set).
            began = time.perf_counter()
            batch_eps = PLDAccountant().epsilon([e.dp_event for e in history], BUDGET.delta or 0)
            batch = {
                "epsilon": batch_eps,
                "seconds": time.perf_counter() - began,
                "fold_epsilon": history_epsilon,
                "fold_vs_batch": (history_epsilon - batch_eps) / batch_eps if batch_eps else 0.0,
            }
        for backend in backends:
            emit(progress, f"{backend}: {size:,} events", 0, charges, unit="charges")
            with tempfile.TemporaryDirectory(prefix="veil-bench-ledger-") as tmp:
                drop: Callable[[], None] | None = None
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
                else:
                    url, drop = _postgres_database(admin_url)
                try:
                    ledger = _setup(url, history)
                    began = time.perf_counter()
                    verified = ledger.verify(DATASET)
                    verify_s = time.perf_counter() - began
                    ledger = Ledger(ledger.store, ledger.settings, key=_KEY)  # a cold process
                    began = time.perf_counter()
                    ledger.status(DATASET, cross_check=False)
                    cold_s = time.perf_counter() - began
                    state = scratch
                    latencies, excess = [], []
                    for i, event in enumerate(more):
                        began = time.perf_counter()
                        receipt = ledger.charge(DATASET, event, purpose="benchmark")
                        elapsed = time.perf_counter() - began
                        state = state.add(event.dp_event)
                        reference = state.epsilon(BUDGET.delta or 0)
                        charged = receipt.status.spent.epsilon or 0.0
                        excess.append((charged - reference) / reference)
                        if i >= warmup:
                            latencies.append(elapsed)
                            emit(progress, f"{backend}: {size:,} events", i + 1 - warmup, charges)
                    runs: list[dict[str, Any]] = []
                    widest: dict[str, Any] | None = None
                    if backend == "postgresql":
                        for count in [p for p in processes if p > 0]:
                            emit(progress, f"{count} processes", 0, None, unit="runs")
                            run = _concurrent(url, count, per_process)
                            runs.append(run)
                            if count == max(processes):
                                widest = run
                    row = LedgerRow(
                        history=size,
                        backend=backend,
                        p50_ms=1e3 * statistics.median(latencies),
                        p99_ms=1e3 * float(np.quantile(latencies, 0.99)),
                        charges_per_s=len(latencies) / sum(latencies),
                        cold_status_s=cold_s,
                        recompose_s=recompose_s,
                        verify_s=verify_s,
                        verify_ok=verified["ok"],
                        epsilon=receipt.status.spent.epsilon,
                        epsilon_reference=reference,
                        excess_min=min(excess),
                        excess_max=max(excess),
                        state_points=state.points,
                        batch_pld=batch,
                        goal_p99_ms=GOAL_P99_MS.get(backend),
                        concurrent_runs=tuple(runs) if backend == "postgresql" else None,
                        concurrent=widest,
                    )
                    ledger.store.dispose()
                    results.append(row)
                finally:
                    if drop is not None:
                        drop()
    return LedgerResult(
        budget=BUDGET.to_dict(),
        parameters={
            "sizes": list(sizes),
            "backends": list(backends),
            "charges": charges,
            "warmup": warmup,
            "processes": list(processes),
            "per_process": per_process,
            "seed": seed,
        },
        goals={
            "p99_ms": GOAL_P99_MS,
            "concurrent_charges_per_s": GOAL_CONCURRENT_PER_S,
            "excess_at_most": GOAL_EXCESS,
        },
        cpus=os.cpu_count(),
        results=tuple(results),
    )
