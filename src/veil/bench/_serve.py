"""``veil bench serve``: issue 24's goals for the gateway, measured against ``veil serve``.

Six parts, each against the real service started as a process on 127.0.0.1
(:func:`veil.bench._serve_load.gateway`):

1. **overhead** (single worker, SQLite): open-loop latency at 200 requests/s of
   ``POST /v1/models/adult-lr/predict`` with one record against the same served model
   called in-process at the same rate; goal +3 ms p50 and +10 ms p99
   (:mod:`veil.bench._serve_checks`).
2. **consistency** (4 workers, a scratch PostgreSQL database, Redis): 50 concurrent
   clients against one budget accept exactly what the budget admits; one key's rate
   limit holds across workers within 1 %.
3. **extraction** through the endpoint: agreement-versus-queries per output policy,
   with and without the 500-record budget; goal: the default policy (labels, 500 records)
   at or below 97 % (:mod:`veil.bench._serve_attacks`).
4. **monitor**: benign keys replaying Adult's test file against marginal-sampling
   attackers: at least 90 % of attackers flagged within 200 queries, at most 1 % of
   benign keys.
5. **membership**: label-only attacks through the gateway on a DP-SGD model (epsilon 2):
   AUC at or below 0.55.
6. **console** (opt-in: ``--parts console``): every console page's server time with
   100,000 ledger events and 1,000,000 trail entries (:mod:`veil.bench._serve_console`).

Parts 1 and 3-5 share one single-worker gateway on one workspace: the overhead runs
first, on a quiet gateway, and the attacks use separate keys. Everything is bounded (a
timeout on every process and request loop) and removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.bench._common import ADULT_NUMERIC_BOUNDS, machine
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, verdict
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = ["PARTS", "ServeResult", "run_serve_benchmark"]

PARTS = ("overhead", "consistency", "extraction", "monitor", "membership", "console")
# What runs unless parts are named: the console part builds a 1,000,000-entry trail first.
DEFAULT_PARTS = PARTS[:-1]
POLICIES: dict[str, dict[str, Any]] = {
    "probabilities": {"output": "probabilities"},
    "rounded-2dp": {"output": "probabilities", "decimals": 2},
    "laplace-0.1": {"output": "probabilities", "noise": {"kind": "laplace", "scale": 0.1}},
    "label": {"output": "label"},
}
GOAL_P50_MS, GOAL_P99_MS = 3.0, 10.0
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

FULL: dict[str, Any] = {
    "train_rows": None, "test_rows": None, "epochs": 10, "dp_epochs": 10, "dp_epsilon": 2.0,
    "rates": (50.0, 200.0), "rate": 200.0, "seconds": 30.0, "warmup": 5.0, "capacity": 10.0,
    "workers": 4, "clients": 50, "budget_epsilon": 1.0, "query_epsilon": 0.02,
    "limit": 500, "window": 10.0, "connections": 32,
    "budgets": (50, 100, 200, 500, 1000, 5000, 20000), "cap": 500, "batch": 100,
    "benign": 100, "attackers": 50, "attack_queries": 200, "monitor_batch": 10,
    "members": 2000, "non_members": 2000, "copies": 10,
}  # fmt: skip
QUICK: dict[str, Any] = {
    "train_rows": 2000, "test_rows": 600, "epochs": 2, "dp_epochs": 1, "dp_epsilon": 2.0,
    "rates": (40.0,), "rate": 40.0, "seconds": 1.5, "warmup": 0.5, "capacity": 1.0,
    "workers": 2, "clients": 6, "budget_epsilon": 0.3, "query_epsilon": 0.05,
    "limit": 40, "window": 3.0, "connections": 8,
    "budgets": (20, 60), "cap": 40, "batch": 25,
    "benign": 4, "attackers": 2, "attack_queries": 40, "monitor_batch": 10,
    "members": 60, "non_members": 60, "copies": 2,
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ServeResult(BenchResult):
    """``veil bench serve``: one mapping per part, the goals, the machine."""

    benchmark: str = "serve"
    parameters: Mapping[str, Any]
    overhead: Mapping[str, Any] | None
    consistency: Mapping[str, Any] | None
    extraction: Mapping[str, Any] | None
    monitor: Mapping[str, Any] | None
    membership: Mapping[str, Any] | None
    console: Mapping[str, Any] | None = None
    goals: Mapping[str, Any]
    machine: Mapping[str, Any]
    seconds: Mapping[str, float]

    def view(self) -> View:
        """Each measured part's table, then the goals."""
        blocks: list[Table | Note] = []
        if self.overhead:
            o = self.overhead
            blocks.append(
                Table(
                    title="Open-loop latency from the scheduled send time, single worker, SQLite "
                    f"({o['seconds']:g} s measured after {o['warmup']:g} s of warm-up)",
                    columns=(
                        Column("rate/s", fixed("g")),
                        Column("path", justify="left"),
                        Column("answered", fixed(",")),
                        Column("p50 ms", fixed(".2f")),
                        Column("p90 ms", fixed(".2f")),
                        Column("p99 ms", fixed(".2f")),
                        Column("max ms", fixed(".1f")),
                        Column("failed", fixed(",")),
                    ),
                    rows=tuple(
                        (
                            r["rate"],
                            r["label"],
                            r["requests"] - r["errors"],
                            r["p50_ms"],
                            r["p90_ms"],
                            r["p99_ms"],
                            r["max_ms"],
                            r["errors"],
                        )
                        for r in o["runs"]
                    ),
                )
            )
            per_rate = "; ".join(
                f"at {r['rate']:g}/s p50 {r['overhead_p50_ms']:+.2f} ms, p99 "
                f"{r['overhead_p99_ms']:+.2f} ms"
                for r in o["by_rate"]
            )
            blocks.append(
                Note(
                    f"Gateway overhead over the in-process model: {per_rate}. Closed-loop "
                    f"capacity of the worker: {o['capacity_rps']:.0f} requests/s. Load average "
                    f"(1 min) before and after each run: "
                    f"{', '.join(f'{x[0]:.1f}' for x in o['loadavg'])} ({self.machine['cpus']} CPUs)"
                )
            )
        if self.consistency:
            c = self.consistency
            blocks.append(
                Note(
                    f"{c['workers']} workers on PostgreSQL + Redis: {c['clients']} clients "
                    f"accepted {c['accepted_concurrent']} queries of epsilon "
                    f"{c['epsilon_per_query']:g}; the same budget admits "
                    f"{c['admitted_sequential']} sequentially; ledger events "
                    f"{c['ledger_events']}. Rate {c['rate_limit']}: {c['rate_allowed']} of "
                    f"{c['rate_offered']} allowed in {c['rate_window_seconds']:g} s "
                    f"({c['rate_error']:+.2%})."
                )
            )
        if self.extraction:
            e = self.extraction
            budgets = e["budgets"]
            blocks.append(
                Table(
                    title="Extraction through the gateway: the surrogate's agreement with the "
                    f"model after N queries, on {e['evaluation_rows']:,} Adult test rows (victim accuracy "
                    f"{e['victim_accuracy']:.2%}; a constant agrees {e['constant_agreement']:.2%})",
                    columns=(
                        Column("output", justify="left"),
                        Column("budget", justify="left"),
                        *(Column(f"{b:,}", fixed(".1%")) for b in budgets),
                        Column("answered", fixed(",")),
                    ),
                    rows=tuple(
                        (
                            r["policy"],
                            "none" if r["budget"] is None else f"{r['budget']:,}",
                            *r["agreement"],
                            r["answered"],
                        )
                        for r in e["rows"]
                    ),
                )
            )
        if self.monitor:
            m = self.monitor
            blocks.append(
                Note(
                    f"Monitor: {m['attackers_flagged']}/{m['attackers']} marginal-sampling "
                    f"attackers flagged within {m['attack_queries']} queries "
                    f"({m['attacker_rate']:.1%}); {m['benign_flagged']}/{m['benign']} benign keys "
                    f"flagged ({m['false_alarm_rate']:.1%}); signals {m['signals']}"
                )
            )
        if self.membership:
            b = self.membership
            blocks.append(
                Note(
                    f"Label-only membership on {b['model']} (DP-SGD, epsilon {b['epsilon']:g}, "
                    f"test accuracy {b['test_accuracy']:.2%}): gap attack AUC "
                    f"{b['gap_auc']:.3f} ± {b['gap_auc_se']:.3f}, augmentation ({b['copies']} "
                    f"copies) AUC {b['augmentation_auc']:.3f} ± {b['augmentation_auc_se']:.3f} "
                    f"({b['members']} members, {b['non_members']} non-members; ± one standard error)"
                )
            )
        if self.console:
            from veil.bench._serve_console import console_blocks  # noqa: PLC0415

            blocks.extend(console_blocks(self.console))
        goals = Table(
            title="Goals (issues 24 and 25)" if self.console else "Goals (issue 24)",
            columns=(Column("goal", justify="left"), Column("measured", justify="left"),
                     Column("verdict", verdict)),
            rows=tuple((g["goal"], g["measured"], g["met"]) for g in self.goals.values()),
        )  # fmt: skip
        blocks.append(goals)
        return tuple(blocks)


@contextmanager
def _postgres(admin_url: str) -> Iterator[str]:
    import sqlalchemy as sa  # noqa: PLC0415

    name = f"veil_bench_serve_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _goals(parts: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    o, c, e, m, b, console = (parts.get(p) for p in PARTS)
    if o:
        goals["overhead"] = {
            "goal": f"gateway overhead <= +3 ms p50 and +10 ms p99 at {o['goal_rate']:g} requests/s",
            "measured": f"{o['overhead_p50_ms']:+.2f} ms p50, {o['overhead_p99_ms']:+.2f} ms p99",
            "met": o["overhead_p50_ms"] <= GOAL_P50_MS
            and o["overhead_p99_ms"] <= GOAL_P99_MS
            and o["gateway_errors"] == 0,
        }
    if c:
        goals["budget"] = {
            "goal": "concurrent accepted releases == what the budget admits",
            "measured": f"{c['accepted_concurrent']} vs {c['admitted_sequential']}",
            "met": c["budget_exact"],
        }
        goals["rate"] = {
            "goal": "per-key rate limit across workers within 1 %",
            "measured": f"{c['rate_allowed']} allowed of a limit of {c['rate_limit']}",
            "met": c["rate_within_1pct"],
        }
    if e:
        label = next(r for r in e["rows"] if r["policy"] == "label" and r["budget"] is not None)
        bought = max((a for a in label["agreement"] if a is not None), default=None)
        goals["extraction"] = {
            "goal": "labels + 500-record budget: agreement <= 97 %",
            "measured": "-" if bought is None else f"{bought:.2%} ({label['answered']} answered)",
            "met": None if bought is None else bought <= 0.97,  # noqa: PLR2004
        }
    if m:
        goals["monitor"] = {
            "goal": ">= 90 % of attackers flagged within 200 queries, <= 1 % false alarms",
            "measured": f"{m['attacker_rate']:.1%} flagged, {m['false_alarm_rate']:.1%} false",
            "met": m["attacker_rate"] >= 0.9 and m["false_alarm_rate"] <= 0.01,  # noqa: PLR2004
        }
    if b:
        worst = max(b["gap_auc"], b["augmentation_auc"])
        goals["membership"] = {
            "goal": "label-only membership AUC <= 0.55 on a DP-SGD model",
            "measured": f"{worst:.3f}",
            "met": worst <= 0.55,  # noqa: PLR2004
        }
    if console:
        from veil.bench._serve_console import console_goal  # noqa: PLC0415

        goals["console"] = console_goal(console)
    return goals


def run_serve_benchmark(  # noqa: C901, PLR0915 - the parts, in the order they run
    data: Path,
    *,
    parts: Sequence[str] = DEFAULT_PARTS,
    quick: bool = False,
    postgres_url: str | None = None,
    redis_url: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> ServeResult:
    """Measure issue 24's goals; ``quick`` runs every part at a tiny size (a smoke run).

    ``overrides`` may also set the console part's ``ledger_events``, ``trail_entries``,
    ``page_repeats``, ``page_warmup`` and ``console_reuse`` (a folder to build the
    workspace in and keep, or to reuse).
    """
    from veil.bench import _serve_runs as runs  # noqa: PLC0415
    from veil.bench._serve_attacks import load_adult  # noqa: PLC0415
    from veil.bench._serve_checks import consistency, overhead  # noqa: PLC0415
    from veil.bench._serve_load import gateway  # noqa: PLC0415
    from veil.bench._serve_setup import (  # noqa: PLC0415
        DP_MODEL,
        MODEL,
        adult_sources,
        build_multi,
        build_single,
    )

    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise InvalidInputError(
            "unknown benchmark parts", expected=", ".join(PARTS), got=", ".join(unknown) or "none"
        )
    p = {**(QUICK if quick else FULL), **(overrides or {})}
    if "console" in parts:
        from veil.bench._serve_console import check_sizes  # noqa: PLC0415

        check_sizes(p, quick=quick)  # before any part runs
    # The goal's rate is always measured; --rate replaces it (and the default lower rate
    # stays only when it is below the new one).
    rates = sorted({*(r for r in p["rates"] if r < p["rate"]), p["rate"]})
    postgres_url = postgres_url or os.environ.get("VEIL_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    redis_url = redis_url or os.environ.get("VEIL_BENCH_REDIS_URL", DEFAULT_REDIS)
    results: dict[str, dict[str, Any] | None] = dict.fromkeys(PARTS)
    seconds: dict[str, float] = {}
    steps = len(parts) + 1
    done = 0

    def step(detail: str) -> None:
        emit(progress, "serve benchmark", done, steps, unit="parts", detail=detail)

    scratch = Path(tempfile.mkdtemp(prefix="veil-bench-serve-"))
    try:
        train_file, test_file = adult_sources(
            data, scratch / "files", p["train_rows"], p["test_rows"]
        )
        single = [x for x in parts if x not in ("consistency", "console")]
        if single:
            step("training Adult's models, creating keys")
            start = time.perf_counter()
            built = build_single(
                scratch / "single", train_file, test_file,
                epochs=p["epochs"], dp_epochs=p["dp_epochs"], dp_epsilon=p["dp_epsilon"],
                benign=p["benign"] if "monitor" in parts else 0,
                attackers=p["attackers"] if "monitor" in parts else 0,
                extraction_policies=POLICIES if "extraction" in parts else {},
                budget=p["cap"], bounds=ADULT_NUMERIC_BOUNDS,
            )  # fmt: skip
            seconds["setup"] = time.perf_counter() - start
            adult = load_adult(built.home, MODEL, train_file, test_file)
            record = adult.records(adult.test.iloc[:1])[0]
            tokens = built.keys.tokens
            import httpx  # noqa: PLC0415

            with (
                gateway(built.home, log=scratch / "single.log") as url,
                httpx.Client(base_url=url, timeout=120.0) as client,
            ):
                if "overhead" in parts:
                    done += 1
                    start = time.perf_counter()
                    results["overhead"] = overhead(
                        url, built.home, tokens["load"], record, key_id=built.keys.ids["load"],
                        rates=rates, goal_rate=p["rate"], seconds=p["seconds"],
                        warmup=p["warmup"], capacity_seconds=p["capacity"], progress=step,
                    )  # fmt: skip
                    seconds["overhead"] = time.perf_counter() - start
                if "extraction" in parts:
                    done += 1
                    start = time.perf_counter()
                    results["extraction"] = runs.extraction(
                        client, adult, tokens, list(POLICIES), model=MODEL,
                        budgets=p["budgets"], cap=p["cap"], batch=p["batch"], seed=seed, progress=step,
                    )  # fmt: skip
                    seconds["extraction"] = time.perf_counter() - start
                if "monitor" in parts:
                    done += 1
                    step("monitor: benign and attacker keys")
                    start = time.perf_counter()
                    plan = runs.monitor(
                        client, adult, tokens, model=MODEL, benign=p["benign"],
                        attackers=p["attackers"], attack_queries=p["attack_queries"],
                        batch=p["monitor_batch"], seed=seed,
                    )  # fmt: skip
                    seconds["monitor"] = time.perf_counter() - start
                if "membership" in parts:
                    done += 1
                    step("membership: label-only attacks on the DP-SGD model")
                    start = time.perf_counter()
                    dp = load_adult(built.home, DP_MODEL, train_file, test_file)
                    found = runs.membership(
                        client, dp, tokens["membership"], model=DP_MODEL,
                        members=p["members"], non_members=p["non_members"],
                        copies=p["copies"], seed=seed,
                    )  # fmt: skip
                    evaluation = dp.encode(dp.test)
                    accuracy = float(
                        (dp.log_proba(evaluation).argmax(axis=1) == dp.labels(dp.test)).mean()
                    )
                    results["membership"] = {
                        "model": DP_MODEL, "epsilon": p["dp_epsilon"], "test_accuracy": accuracy,
                        **found,
                    }  # fmt: skip
                    seconds["membership"] = time.perf_counter() - start
            if "monitor" in parts:
                results["monitor"] = runs.flagged(built.home, built.keys.ids, plan)
        if "consistency" in parts:
            done += 1
            step(f"{p['workers']} workers on PostgreSQL and Redis: setup")
            start = time.perf_counter()
            with _postgres(postgres_url) as database:
                multi = build_multi(
                    scratch / "multi", database, train_file, clients=p["clients"],
                    budget_epsilon=p["budget_epsilon"], rate=f"{p['limit']}/{p['window']:g} seconds",
                    bounds=ADULT_NUMERIC_BOUNDS,
                )  # fmt: skip
                multi_adult = load_adult(multi.home, MODEL, train_file, test_file)
                record = multi_adult.records(multi_adult.test.iloc[:1])[0]
                with gateway(
                    multi.home, workers=p["workers"], database_url=database, redis_url=redis_url,
                    log=scratch / "multi.log",
                ) as url:  # fmt: skip
                    found = consistency(
                        url, multi.keys.tokens, record, clients=p["clients"],
                        epsilon=p["query_epsilon"], limit=p["limit"], window=p["window"],
                        connections=p["connections"], progress=step,
                    )  # fmt: skip
                results["consistency"] = {"workers": p["workers"], **found}
            seconds["consistency"] = time.perf_counter() - start
        if "console" in parts:
            from veil.bench._serve_console import run_console  # noqa: PLC0415

            done += 1
            step("console: building the workspace (ledger events, trail entries)")
            start = time.perf_counter()
            reuse = p.get("console_reuse")
            results["console"] = run_console(
                scratch / "console", train_file, quick=quick, overrides=p,
                reuse=None if reuse is None else Path(reuse), progress=progress, step=step,
            )  # fmt: skip
            seconds["console"] = time.perf_counter() - start
        emit(progress, "serve benchmark", steps, steps, unit="parts", detail="done")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parameters = {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
    return ServeResult(
        parameters={**parameters, "quick": quick, "parts": list(parts), "seed": seed},
        overhead=results["overhead"],
        consistency=results["consistency"],
        extraction=results["extraction"],
        monitor=results["monitor"],
        membership=results["membership"],
        console=results["console"],
        goals=_goals(results),
        machine={**machine(), "loadavg_end": list(os.getloadavg())},
        seconds=seconds,
    )
