"""``veil bench synth``: Veil's AIM and MST on UCI Adult, beside private-pgm's own AIM.

The data: ``adult.data`` (the generators' input, optionally its first
``rows`` rows) and ``adult.test`` (the real held-out rows), both encoded by
:meth:`veil.synth.Encoder.from_schema` over a schema built from the Adult
codebook's categories and bounds declared here
(:data:`~veil.bench._synth_child.ADULT_SYNTH_BOUNDS`), 16 bins per numeric
column. The workload: every 3-way marginal of at most 10,000 cells.

For each epsilon (delta 1e-9, the reference's default) it runs, each in a
fresh process started one after another:

* ``veil-aim``: :func:`veil.synth.synthesize_frame` with ``method="aim"``;
* ``reference-aim``: private-pgm's ``mechanisms/aim.py`` (vendored unchanged
  but for mbi 2.0's keyword, :mod:`veil.bench._reference`) on the same codes
  and workload, at the same rounds, model size (MB) and mirror-descent
  iterations (every fit, the last one too);
* ``veil-mst``: ``method="mst"`` (Veil's only; the reference's MST is not run);

and once ``veil-aim-nonprivate`` (:func:`veil.synth.fit_nonprivate`: exact
marginals, no noise), the baseline the membership attack must see through.

How it measures:

* **CPU seconds**: user + system time of the generator call inside its
  process (``getrusage(RUSAGE_SELF)`` before and after: all of JAX's threads,
  not the interpreter start, imports or loading the file), and the whole
  process's (``getrusage(RUSAGE_CHILDREN)`` in the parent around it);
  **peak RSS**: the process's ``ru_maxrss``.
* **Error**: :func:`veil.synth.workload_tvd` of the release's codes against
  the training codes, averaged over the workload.
* **Utility and attacks**: :func:`veil.synth.evaluate_release` with
  ``adult.test`` as the real holdout: TSTR against TRTR accuracy for
  ``income`` (one gradient-boosted classifier, fixed seed), and the
  DOMIAS-style membership attack's AUC and epsilon lower bound.

The generators sample their rows with their own seeds; the privacy noise of
Veil's releases is OpenDP's and not seeded, so numbers vary from run to run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from veil._validate import positive_number
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, verdict
from veil.bench._synth_child import (
    _MARK,
    ADULT_SYNTH_BOUNDS,
    GENERATORS,
    adult_frame,
    adult_schema,
    integer_columns,
)
from veil.data.readers import ADULT_COLUMNS
from veil.errors import InvalidInputError, NotFoundError
from veil.progress import ProgressCallback, ProgressEvent, emit

__all__ = ["SynthBenchResult", "SynthBenchRow", "run_synth_benchmark"]

REFERENCE = {
    "name": "private-pgm AIM (mechanisms/aim.py)",
    "repository": "https://github.com/ryan112358/mbi (formerly private-pgm)",
    "commit": "361705d7f05f8c0ac4d5b3640e688eb4f692346e",
    "license": "Apache-2.0",
}
DELTA = 1e-9  # the reference's default
# A smoke run: four columns (the reference needs rounds >= 0.9 x columns for its one-way start).
TINY_COLUMNS = ("age", "education", "sex", "income")
TINY = {
    "rows": 300,
    "test_rows": 400,
    "rounds": 5,
    "iters": 50,
    "final_iters": 50,
    "max_model_mb": 0.5,
}
# The goals for Veil's AIM.
GOAL_TVD = 0.15  # average 3-way TVD at epsilon 1
GOAL_CPU_S = 300.0  # CPU seconds at epsilon 1
GOAL_RSS_MB = 2048.0
GOAL_TVD_RATIO = 1.05  # error within 5% of the reference's
GOAL_CPU_RATIO = 0.5  # at most half the reference's CPU time
GOAL_TSTR_GAP = 0.03  # TSTR accuracy within 3 points of TRTR at epsilon 1
GOAL_MIA_AUC = 0.55
VISIBLY_HIGHER = 0.05  # the non-private baseline's AUC must beat the release's by this much


@dataclass(frozen=True, kw_only=True)
class SynthBenchRow:
    """One generator at one epsilon: cost, workload error, utility and the membership attack."""

    generator: str
    epsilon: float | None
    status: str
    cpu_s: float | None
    process_cpu_s: float | None
    wall_s: float | None
    peak_rss_mb: float | None
    average_tvd: float | None
    tstr_accuracy: float | None
    trtr_accuracy: float | None
    mia_auc: float | None
    mia_epsilon_lower_bound: float | None
    measured_cliques: int | None
    notes: tuple[str, ...]
    evaluation: Mapping[str, Any] | None = field(default=None, metadata={"omit_none": True})
    card: Mapping[str, Any] | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True, kw_only=True)
class SynthBenchResult(BenchResult):
    """``veil bench synth``: one row per generator and epsilon, the set-up, and the issue's goals."""

    benchmark: str = "synth"
    date: str
    parameters: Mapping[str, Any]
    data: Mapping[str, Any]
    machine: Mapping[str, Any]
    versions: Mapping[str, Any]
    reference: Mapping[str, str]
    method: tuple[str, ...]
    results: tuple[SynthBenchRow, ...]
    goals: Mapping[str, Any]

    def view(self) -> View:
        """The generators side by side, their notes, and the goals."""
        p, d, g = self.parameters, self.data, self.goals
        table = Table(
            title=(
                f"Adult ({d['train_rows']:,} rows, test {d['test_rows']:,}), "
                f"{d['cliques']} 3-way marginals: {p['rounds']} rounds, "
                f"{p['max_model_mb']:g} MB, {p['iters']} iterations a round "
                f"(Veil's last fit {p['final_iters']}), delta={p['delta']:g}"
            ),
            columns=(
                Column("generator", justify="left", no_wrap=True),
                Column("epsilon", lambda v: f"{v:g}"),
                Column("CPU s", fixed(",.1f")),
                Column("process CPU s", fixed(",.1f")),
                Column("wall s", fixed(",.1f")),
                Column("peak RSS MB", fixed(",.0f")),
                Column("3-way TVD", fixed(".3f")),
                Column("TSTR acc", fixed(".3f")),
                Column("TRTR acc", fixed(".3f")),
                Column("MIA AUC", fixed(".3f")),
                Column("marginals measured", fixed("d")),
            ),
            rows=tuple(
                (
                    r.generator if r.status == "ok" else f"{r.generator} ({r.status})",
                    "none" if r.epsilon is None else r.epsilon,
                    r.cpu_s,
                    r.process_cpu_s,
                    r.wall_s,
                    r.peak_rss_mb,
                    r.average_tvd,
                    r.tstr_accuracy,
                    r.trtr_accuracy,
                    r.mia_auc,
                    r.measured_cliques,
                )
                for r in self.results
            ),
        )
        notes = tuple(
            Note(f"· {r.generator} (epsilon {r.epsilon}): {n}")
            for r in self.results
            for n in r.notes
        )
        return (
            table,
            *notes,
            Note(
                "· CPU s: the generator call in its own process (all threads); process CPU s: "
                "that whole process (interpreter, imports, loading Adult); marginals measured: "
                "the one-way start and one per round run (the reference's annealing may end "
                "before its rounds)"
            ),
            Note(
                f"· machine: {self.machine['cpus']} CPUs, {self.machine['memory_gb']} GB; "
                f"load average {self.machine.get('load_average')}: CPU seconds are comparable, "
                "wall seconds on a shared machine are not"
            ),
            Note(
                "· goals (Veil's AIM): TVD <= 0.15 at epsilon 1 "
                f"{verdict(g['tvd_eps1_at_most_0_15'])}; within 5 CPU-minutes "
                f"{verdict(g['cpu_eps1_within_300_s'])}; better at epsilon 10 "
                f"{verdict(g['eps10_better_than_eps1'])}; peak RSS < 2 GB "
                f"{verdict(g['peak_rss_under_2_gb'])}"
            ),
            Note(
                "· goals against the reference AIM: TVD within 5% "
                f"{verdict(g['tvd_within_5pct_of_reference'])}; at most half its CPU "
                f"{verdict(g['cpu_at_most_half_reference'])}"
            ),
            Note(
                "· goals of the release: TSTR within 3 points of TRTR at epsilon 1 "
                f"{verdict(g['tstr_within_3_points_eps1'])}; MIA AUC <= 0.55 at epsilon 1 "
                f"{verdict(g['mia_auc_eps1_at_most_0_55'])}; non-private baseline's AUC "
                f"higher by >= {VISIBLY_HIGHER} {verdict(g['mia_nonprivate_visibly_higher'])}"
            ),
        )


# ---------------------------------------------------------------------------- child processes


def _read(
    process: subprocess.Popen[str], progress: ProgressCallback | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Forward the child's progress; its result and its error, as its marked lines give them."""
    result: dict[str, Any] | None = None
    failure: str | None = None
    assert process.stdout is not None  # noqa: S101
    for line in process.stdout:
        if not line.startswith(_MARK):
            continue  # the reference prints its progress as text
        message = json.loads(line[len(_MARK) :])
        if "progress" in message and progress is not None:
            progress(ProgressEvent.from_dict(message["progress"]))
        elif "result" in message:
            result = message["result"]
        elif "error" in message:
            failure = message["error"]
    return result, failure


def _run_child(
    job: dict[str, Any], progress: ProgressCallback | None, time_limit_s: float | None = None
) -> dict[str, Any]:
    """Run one generator in a fresh interpreter: its result (with the process's CPU) or an error.

    A process still running after ``time_limit_s`` seconds (wall) is killed and reported so.
    """
    code = "from veil.bench._synth_child import _child_main; _child_main()"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with (
        tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errors,
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-c", code, json.dumps(job)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            encoding="utf-8",
        ) as process,
    ):
        fired = threading.Event()

        def stop() -> None:
            fired.set()
            process.kill()

        timer = None if time_limit_s is None else threading.Timer(time_limit_s, stop)
        if timer is not None:
            timer.start()
        try:
            result, failure = _read(process, progress)
            exit_code = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if process.poll() is None:  # interrupted: leave no generator running
                process.kill()
                process.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        process_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if result is not None and exit_code == 0:
            return {**result, "process_cpu_s": process_cpu}
        errors.seek(0)
        tail = errors.read()[-2000:].strip()
    reason = failure or f"the generator's process exited with code {exit_code}"
    if fired.is_set():
        reason = f"stopped after the time limit of {time_limit_s:g} s (wall)"
        return {"error": reason, "stderr_tail": "", "process_cpu_s": process_cpu, "timed_out": True}
    if exit_code < 0 or exit_code == 137:  # noqa: PLR2004 - SIGKILL: usually the OOM killer
        reason += " (killed: out of memory?)"
    return {"error": reason, "stderr_tail": tail, "process_cpu_s": process_cpu}


# ---------------------------------------------------------------------------- evaluation


def _evaluate(
    codes: np.ndarray,
    epsilon: float | None,
    context: dict[str, Any],
) -> tuple[float, dict[str, Any]]:
    """Average TVD of the release's codes, and :func:`evaluate_release` on its decoded rows."""
    from veil.synth import evaluate_release, workload_tvd  # noqa: PLC0415

    encoder, columns = context["encoder"], list(context["encoder"].columns)
    synth_codes = pd.DataFrame(codes, columns=columns)
    tvd = workload_tvd(context["train_codes"], synth_codes, context["cliques"], encoder.sizes)
    synth = encoder.decode(synth_codes, seed=context["seed"])
    report = evaluate_release(
        context["train"],
        context["test"],
        synth,
        encoder=encoder,
        workload=context["cliques"],
        target="income",
        seed=context["seed"],
        claimed_epsilon=epsilon,
        delta=0.0 if epsilon is None else context["delta"],
    )
    return tvd, report.to_dict()


def _row(
    generator: str,
    epsilon: float | None,
    outcome: dict[str, Any],
    codes: np.ndarray | None,
    context: dict[str, Any],
) -> SynthBenchRow:
    notes: list[str] = []
    if "error" in outcome:
        notes.append(f"failed: {outcome['error']}")
        if outcome.get("stderr_tail"):
            notes.append("stderr: " + outcome["stderr_tail"].splitlines()[-1][:300])
        return SynthBenchRow(
            generator=generator, epsilon=epsilon,
            status="timed out" if outcome.get("timed_out") else "failed", cpu_s=None,
            process_cpu_s=outcome.get("process_cpu_s"), wall_s=None, peak_rss_mb=None,
            average_tvd=None, tstr_accuracy=None, trtr_accuracy=None, mia_auc=None,
            mia_epsilon_lower_bound=None, measured_cliques=None, notes=tuple(notes),
        )  # fmt: skip
    if outcome.get("sizes") != context["sizes"]:
        notes.append(f"its domain differs from the bench's encoder: {outcome.get('sizes')}")
    assert codes is not None  # noqa: S101 - written by every successful child
    tvd, evaluation = _evaluate(codes, epsilon, context)
    utility = evaluation.get("utility") or {}
    membership = evaluation["privacy"]["membership"]
    return SynthBenchRow(
        generator=generator,
        epsilon=epsilon,
        status="ok",
        cpu_s=outcome["cpu_s"],
        process_cpu_s=outcome["process_cpu_s"],
        wall_s=outcome["wall_s"],
        peak_rss_mb=outcome["peak_rss_mb"],
        average_tvd=tvd,
        tstr_accuracy=utility.get("tstr_accuracy"),
        trtr_accuracy=utility.get("trtr_accuracy"),
        mia_auc=membership["auc"],
        mia_epsilon_lower_bound=membership["epsilon_lower_bound"],
        measured_cliques=outcome.get("measured"),
        notes=tuple(notes),
        evaluation=evaluation,
        card=outcome.get("card"),
    )


# ---------------------------------------------------------------------------- goals


def _find(
    rows: Sequence[SynthBenchRow], generator: str, epsilon: float | None
) -> SynthBenchRow | None:
    for r in rows:
        if r.generator == generator and r.epsilon == epsilon and r.status == "ok":
            return r
    return None


def _goals(rows: Sequence[SynthBenchRow], epsilons: Sequence[float]) -> dict[str, Any]:
    """The issue's goals, each met (True), not met (False) or not measured in this run (None)."""
    one, ten = _find(rows, "veil-aim", 1.0), _find(rows, "veil-aim", 10.0)
    baseline = _find(rows, "veil-aim-nonprivate", None)
    pairs = [
        (v, ref)
        for e in epsilons
        if (v := _find(rows, "veil-aim", e)) is not None
        and (ref := _find(rows, "reference-aim", e)) is not None
    ]
    veil_rows = [r for r in rows if r.generator.startswith("veil-aim") and r.status == "ok"]

    def at_most(row: SynthBenchRow | None, name: str, limit: float) -> bool | None:
        value = None if row is None else getattr(row, name)
        return None if value is None else bool(value <= limit)

    def each(test: Any) -> bool | None:
        return None if not pairs else all(bool(test(v, ref)) for v, ref in pairs)

    gap = (
        None
        if one is None or one.tstr_accuracy is None or one.trtr_accuracy is None
        else (one.trtr_accuracy - one.tstr_accuracy)
    )
    return {
        "tvd_eps1_at_most_0_15": at_most(one, "average_tvd", GOAL_TVD),
        "cpu_eps1_within_300_s": at_most(one, "cpu_s", GOAL_CPU_S),
        "eps10_better_than_eps1": None
        if one is None or ten is None
        else bool((ten.average_tvd or 1.0) < (one.average_tvd or 0.0)),
        "peak_rss_under_2_gb": None
        if not veil_rows
        else all((r.peak_rss_mb or math.inf) < GOAL_RSS_MB for r in veil_rows),
        "tvd_within_5pct_of_reference": each(
            lambda v, ref: (v.average_tvd or 1.0) <= GOAL_TVD_RATIO * (ref.average_tvd or 0.0)
        ),
        "cpu_at_most_half_reference": each(
            lambda v, ref: (v.cpu_s or math.inf) <= GOAL_CPU_RATIO * (ref.cpu_s or 0.0)
        ),
        "tstr_within_3_points_eps1": None if gap is None else bool(gap <= GOAL_TSTR_GAP),
        "mia_auc_eps1_at_most_0_55": at_most(one, "mia_auc", GOAL_MIA_AUC),
        "mia_nonprivate_visibly_higher": None
        if one is None or baseline is None or one.mia_auc is None or baseline.mia_auc is None
        else bool(baseline.mia_auc >= one.mia_auc + VISIBLY_HIGHER),
        "visibly_higher_means": f"an AUC at least {VISIBLY_HIGHER} above the epsilon-1 release's",
    }


# ---------------------------------------------------------------------------- the benchmark


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _machine() -> dict[str, Any]:
    memory_gb = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    load = None
    with contextlib.suppress(OSError, AttributeError):
        load = [round(x, 2) for x in os.getloadavg()]
    return {
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "load_average": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _check(
    data: Path,
    epsilons: Sequence[float],
    generators: Sequence[str],
    rows: int | None,
    columns: Sequence[str] | None,
) -> None:
    if (
        not (data / "adult" / "adult.data").is_file()
        or not (data / "adult" / "adult.test").is_file()
    ):
        raise NotFoundError(
            "the UCI Adult files are missing",
            expected=f"{data / 'adult'}/adult.data and adult.test",
            got="no such files",
            fix="pass --data DIR holding adult/ (the project's shared data, ../shared/data)",
        )
    if not epsilons or any(not (math.isfinite(e) and e > 0) for e in epsilons):
        raise InvalidInputError(
            "every epsilon must be a positive number",
            expected="e.g. --epsilons 1,10",
            got=", ".join(str(e) for e in epsilons) or "none",
        )
    unknown = sorted(set(generators) - set(GENERATORS))
    if unknown:
        raise InvalidInputError(
            "unknown generators",
            expected=", ".join(GENERATORS),
            got=", ".join(unknown),
        )
    if columns is not None and (
        "income" not in columns or not set(columns) <= set(ADULT_COLUMNS) or len(columns) < 3  # noqa: PLR2004
    ):
        raise InvalidInputError(
            "the columns must be Adult's, at least three, income among them (TSTR predicts it)",
            expected=", ".join(ADULT_COLUMNS),
            got=", ".join(columns),
        )
    if rows is not None and rows < 100:  # noqa: PLR2004
        raise InvalidInputError(
            "too few rows to fit and attack a generator",
            expected="--rows 100 or more (or all of adult.data)",
            got=str(rows),
        )


def run_synth_benchmark(
    data: Path,
    *,
    epsilons: Sequence[float] = (1.0, 10.0),
    rows: int | None = None,
    test_rows: int | None = None,
    rounds: int = 16,
    max_model_mb: float = 1.0,
    iters: int | None = None,
    final_iters: int | None = None,
    bins: int = 16,
    max_cells: int = 10_000,
    columns: Sequence[str] | None = None,
    generators: Sequence[str] = GENERATORS,
    seed: int = 0,
    time_limit_s: float | None = None,
    progress: ProgressCallback | None = None,
) -> SynthBenchResult:
    """Run every generator at every epsilon (the non-private baseline once) and compare them.

    Args:
        data: Folder holding ``adult/adult.data`` and ``adult/adult.test``.
        epsilons: The budgets (delta 1e-9 for all).
        rows: Only the first ``rows`` training rows (a smoke run); all by default.
        test_rows: Only the first ``test_rows`` rows of ``adult.test``.
        rounds: AIM's ``rounds`` for both implementations.
        max_model_mb: AIM's largest model, in MB, for both.
        iters: Mirror-descent iterations of every fit, for both (the reference's
            ``max_iters``: it fits every model, its last too, with as many); Veil's
            own default (:class:`~veil.synth.SynthSettings`) when omitted.
        final_iters: Iterations of Veil's last fit (its own default,
            :class:`~veil.synth.SynthSettings`'s, when omitted). The reference has
            no such setting (docs/benchmarks.md has what it changes on Adult).
        bins: Equal-width bins per numeric column.
        max_cells: The largest marginal of the 3-way workload.
        columns: Only these of Adult's columns (all by default; ``income`` is needed for TSTR).
        generators: Which of :data:`~veil.bench._synth_child.GENERATORS` to run.
        seed: Seeds the post-processing (sampling, splits, classifiers): not Veil's noise.
        time_limit_s: Kill a generator's process after this many seconds (wall) and report
            it as timed out (the reference AIM on mbi 2.0 can run for hours); none by default
            (`veil bench synth` stops each after 30 minutes unless told otherwise).
        progress: Receives an event as each generator starts and ends.
    """
    from veil.synth import Encoder, SynthSettings, workload_cliques  # noqa: PLC0415

    _check(data, epsilons, generators, rows, columns)
    if time_limit_s is not None:
        time_limit_s = positive_number(
            time_limit_s, "time_limit_s", fix="a time limit in seconds, e.g. 1800"
        )
    iters = SynthSettings().iters if iters is None else iters
    final_iters = SynthSettings().final_iters if final_iters is None else final_iters
    SynthSettings(
        rounds=rounds, iters=iters, final_iters=final_iters, max_model_mb=max_model_mb
    ).check()  # refused here, before any generator's process starts
    started = datetime.now(UTC)
    train = adult_frame(data, "train", rows)
    test = adult_frame(data, "test", test_rows)
    encoder = Encoder.from_schema(
        adult_schema(), bins=bins, columns=columns, integer=integer_columns(train)
    )
    sizes = dict(encoder.sizes)
    cliques = workload_cliques(sizes, "3-way", max_cells=max_cells)
    context: dict[str, Any] = {
        "encoder": encoder,
        "sizes": sizes,
        "cliques": cliques,
        "train": train,
        "test": test,
        "train_codes": encoder.encode(train),
        "seed": seed,
        "delta": DELTA,
    }
    plan: list[tuple[str, float | None]] = [
        (g, e)
        for e in epsilons
        for g in GENERATORS
        if g in generators and g != "veil-aim-nonprivate"
    ]
    if "veil-aim-nonprivate" in generators:
        plan.append(("veil-aim-nonprivate", None))
    task = "generators"
    emit(progress, task, 0, len(plan), unit="runs")
    results: list[SynthBenchRow] = []
    with tempfile.TemporaryDirectory(prefix="veil-bench-synth-") as folder:
        for i, (generator, epsilon) in enumerate(plan):
            out = Path(folder) / f"{i}.npy"
            job = {
                "generator": generator,
                "epsilon": epsilon,
                "delta": DELTA,
                "data": str(data),
                "rows": rows,
                "rounds": rounds,
                "max_model_mb": max_model_mb,
                "iters": iters,
                "final_iters": final_iters,
                "bins": bins,
                "max_cells": max_cells,
                "columns": None if columns is None else list(columns),
                "seed": seed,
                "out": str(out),
            }
            outcome = _run_child(job, None, time_limit_s)
            codes = np.load(out) if out.is_file() and "error" not in outcome else None
            results.append(_row(generator, epsilon, outcome, codes, context))
            emit(progress, task, i + 1, len(plan), unit="runs", detail=f"{generator} done")
    return SynthBenchResult(
        date=started.isoformat(timespec="seconds"),
        parameters={
            "epsilons": list(epsilons),
            "delta": DELTA,
            "rounds": rounds,
            "max_model_mb": max_model_mb,
            "iters": iters,
            "final_iters": final_iters,
            "bins": bins,
            "workload": "3-way",
            "max_cells": max_cells,
            "columns": list(encoder.columns),
            "seed": seed,
            "generators": list(generators),
            "time_limit_s": time_limit_s,
        },
        data={
            "train": "adult.data" if rows is None else f"adult.data, first {rows:,} rows",
            "test": "adult.test" if test_rows is None else f"adult.test, first {test_rows:,} rows",
            "train_rows": len(train),
            "test_rows": len(test),
            "cliques": len(cliques),
            "domain": sizes,
            "numeric_bounds": {k: list(v) for k, v in ADULT_SYNTH_BOUNDS.items()},
        },
        machine=_machine(),
        versions={p: _version(p) for p in ("veil", "mbi", "jax", "numpy", "scikit-learn")},
        reference=REFERENCE,
        method=(
            "every generator runs in a fresh process, one after another, on the same encoded rows",
            (
                "CPU s: getrusage(RUSAGE_SELF) around the generator call; process CPU s: "
                "getrusage(RUSAGE_CHILDREN) around the process; peak RSS: its ru_maxrss"
            ),
            (
                "same settings for both AIMs: rounds, max model MB, iterations of every fit (the "
                "last one too), delta 1e-9; the reference's rounds also fix its noise per round"
            ),
            (
                "TVD: veil.synth.workload_tvd on the codes; TSTR, MIA: "
                "veil.synth.evaluate_release with adult.test as the holdout"
            ),
        ),
        results=tuple(results),
        goals=_goals(results, epsilons),
    )
