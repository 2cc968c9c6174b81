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

The measurements are in :mod:`veil.bench._trail_chain` (1 to 3, and the
helpers all share) and :mod:`veil.bench._trail_load` (4 and 5); this module
holds the result, its tables and the entry point.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from veil import __version__
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, ratio, verdict
from veil.bench._trail_chain import (
    BATCH,
    GOAL_ADDED_P99_MS,
    GOAL_PROOF_BYTES,
    GOAL_PROOF_VERIFY_US,
    GOAL_VERIFY_PER_S,
    OverheadRow,
    ProofRow,
    VerifyRow,
    measure_overhead,
    measure_verify_and_proofs,
    scratch_database,
)
from veil.bench._trail_load import (
    DATASETS_PER_PRINCIPAL,
    GOAL_CHECK_P99_US,
    ConcurrencyRow,
    RoleRow,
    measure_concurrency,
    measure_roles,
)
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

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

PYCASBIN_MS = 62.0  # pycasbin, one enforce() with 11,000 policies (FIELD-NOTES.md)
PYCASBIN_SOURCE = "https://github.com/apache/casbin-pycasbin/issues/71"


# ---------------------------------------------------------------------------- results
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
    least = {"grants": DATASETS_PER_PRINCIPAL}
    small = {k: v for k, v in sizes.items() if v < least.get(k, 1)}
    if small:
        raise InvalidInputError(
            "the trail benchmark needs something to measure",
            expected=f"every size at least 1 (grants at least {DATASETS_PER_PRINCIPAL})",
            got=", ".join(f"{k}={v}" for k, v in small.items()),
            fix="give positive --entries, --actions, --workers, --per-worker, --grants, --checks",
        )
    rows = []
    with tempfile.TemporaryDirectory(prefix="veil-bench-trail-") as tmp:
        folder = Path(tmp)
        for backend in backends:
            with scratch_database(backend, postgres_url, folder, f"{backend}-overhead") as url:
                overhead = measure_overhead(
                    url, backend, actions=actions, warmup=warmup, progress=progress
                )
            with scratch_database(backend, postgres_url, folder, f"{backend}-verify") as url:
                verify, proofs = measure_verify_and_proofs(
                    url, backend, entries=entries, proof_runs=proof_runs, progress=progress
                )
            with scratch_database(backend, postgres_url, folder, f"{backend}-concurrency") as url:
                concurrency = measure_concurrency(
                    url, backend, workers=workers, per_worker=per_worker, progress=progress
                )
            with scratch_database(backend, postgres_url, folder, f"{backend}-roles") as url:
                roles = measure_roles(
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
