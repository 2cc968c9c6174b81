"""``veil bench query``: one DP group-by query, timed against raw Polars and other DP libraries.

The table is synthetic and deterministic: NumPy's seeded generator makes the
*data* (it is not privacy noise). One row per person: ``person_id`` is unique,
``g`` is one of ``groups`` labels declared as categories (known keys) and ``x``
is uniform in the declared bounds [0, 100]. The query is COUNT(*), SUM(x) and
AVG(x) per ``g`` at epsilon = 1 in total, expressed in each library:

* ``raw``: the same group-by in Polars, without privacy (the baseline);
* ``veil``: ``PrivateFrame(...).query(SQL)`` with a local budget of exactly 1;
* ``opendp``: OpenDP's Polars API (``Context.compositor`` with a ``Margin`` and
  the declared keys through ``with_keys``);
* ``diffprivlib``: it has no group-by, so pandas splits the groups and
  ``count_nonzero``, ``sum`` and ``mean`` run per group (disjoint groups of
  distinct people: parallel composition, epsilon / 3 per statistic).

How it measures:

* **Time**: one fresh subprocess builds the table once, runs each library once
  on a small slice (imports and first-call set-up are not timed), then runs
  the libraries round-robin ``repeats`` times (rotating the order), so that
  load on the machine falls on all of them alike. Each timed call starts from
  the in-memory Polars table (pandas for diffprivlib, converted beforehand)
  and ends with the released answer.
* **Memory**: one more fresh subprocess per library builds the same table,
  warms up, and runs the query once: its peak RSS (build + query), and the
  increment of the query over the table alone (the kernel's peak-RSS mark is
  reset after the build where Linux allows it). These processes run after the
  timing and side by side (only each one's own peak is read).

The harness is written by hand: pyperf and asv time small functions in their
own runners, but neither reports peak RSS over a table-only baseline per
library, nor runs several libraries round-robin on one in-memory table.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from veil._validate import whole_number
from veil.bench._query_child import (
    _MARK,
    BOUNDS,
    EPSILON,
    LIBRARIES,
    QUERY_SQL,
    WARMUP_ROWS,
)
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, ratio, verdict
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, ProgressEvent, emit

__all__ = ["QueryResult", "QueryRow", "run_query_benchmark"]

TIME_CAP_S = 600.0  # stop repeating a library once its timed runs add up to this
_PRIVATE = {"raw": False, "veil": True, "opendp": True, "diffprivlib": True}


@dataclass(frozen=True, kw_only=True)
class QueryRow:
    """One library: its times, ratios to raw Polars, peak memory, answers and notes."""

    library: str
    summary: str
    private: bool
    status: str
    median_s: float | None
    min_s: float | None
    times_s: tuple[float, ...]
    phases_s: tuple[Mapping[str, float], ...]
    memory: Mapping[str, Any]
    noise_scales: Mapping[str, float]
    max_abs_error: float | None
    answers: tuple[Mapping[str, Any], ...] | None
    result: Mapping[str, Any] | None = field(default=None, metadata={"omit_none": True})
    notes: tuple[str, ...]
    ratio_to_raw: float | None
    min_ratio_to_raw: float | None


@dataclass(frozen=True, kw_only=True)
class QueryResult(BenchResult):
    """``veil bench query``: one row per library, the set-up, and the goals for Veil."""

    benchmark: str = "query"
    query: str
    date: str
    parameters: Mapping[str, Any]
    table: Mapping[str, Any]
    machine: Mapping[str, Any]
    versions: Mapping[str, str | None]
    method: tuple[str, ...]
    results: tuple[QueryRow, ...]
    goals: Mapping[str, Any]

    def view(self) -> View:
        """The libraries side by side, their notes, the machine, and the goals."""
        params, machine, goals = self.parameters, self.machine, self.goals
        table = Table(
            title=(
                f"{self.query}: {params['rows']:,} rows, {params['groups']} groups, "
                f"epsilon={params['epsilon']:g}, {params['repeats']} repeat(s)"
            ),
            columns=(
                Column("library", no_wrap=True, justify="left"),
                Column("median s", fixed(".3f")),
                Column("min s", fixed(".3f")),
                Column("x raw", ratio),
                Column("peak RSS MB", fixed(",.0f")),
                Column("memory x raw", ratio),
                Column("notes", justify="left"),
            ),
            rows=tuple(
                (
                    r.library,
                    r.median_s,
                    r.min_s,
                    r.ratio_to_raw,
                    r.memory.get("peak_rss_mb"),
                    r.memory.get("peak_ratio_to_raw"),
                    r.summary,
                )
                for r in self.results
            ),
        )
        notes = tuple(Note(f"· {r.library}: {note}") for r in self.results for note in r.notes)
        return (
            table,
            *notes,
            Note(
                f"· {self.table['note']}; machine: {machine['cpus']} CPUs, "
                f"{machine['memory_gb']} GB, Python {machine['python']}"
            ),
            Note("· times and memory are noisy on a shared machine: compare the ratios"),
            Note(
                "· goals for veil: time within 1.5x raw "
                f"{verdict(goals['time_within_1_5x_raw'])}; faster than every other DP library "
                f"{verdict(goals['faster_than_other_dp'])}; peak memory within 2x raw "
                f"{verdict(goals['memory_within_2x_raw'])}"
            ),
        )


def _run_child(
    job: dict[str, Any],
    progress: ProgressCallback | None,
    module: str = "veil.bench._query_child",
) -> dict[str, Any]:
    """Run one job in a fresh interpreter (``module``'s ``_child_main``); forward its progress;
    its result or an error."""
    code = f"from {module} import _child_main; _child_main()"
    result: dict[str, Any] | None = None
    failure: str | None = None
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
        try:
            assert process.stdout is not None  # noqa: S101
            for line in process.stdout:
                if not line.startswith(_MARK):
                    continue
                message = json.loads(line[len(_MARK) :])
                if "progress" in message and progress is not None:
                    progress(ProgressEvent.from_dict(message["progress"]))
                elif "result" in message:
                    result = message["result"]
                elif "error" in message:
                    failure = message["error"]
            exit_code = process.wait()
        finally:
            if process.poll() is None:  # interrupted: leave no benchmark running
                process.kill()
                process.wait()
        if result is not None:
            return result
        errors.seek(0)
        tail = errors.read()[-2000:].strip()
    reason = failure or f"the benchmark process exited with code {exit_code}"
    if exit_code < 0 or exit_code == 137:  # noqa: PLR2004 - SIGKILL: usually the OOM killer
        reason += " (killed: out of memory?)"
    return {"error": reason, "stderr_tail": tail}


# ---------------------------------------------------------------------------- the benchmark


def _check(rows: int, groups: int, repeats: int, libraries: Sequence[str]) -> list[str]:
    for name, value in (("rows", rows), ("groups", groups), ("repeats", repeats)):
        whole_number(value, name)
    chosen = list(dict.fromkeys(lib.strip().lower() for lib in libraries if lib.strip()))
    unknown = [lib for lib in chosen if lib not in LIBRARIES]
    if unknown or not chosen:
        raise InvalidInputError(
            "unknown libraries to benchmark",
            expected=f"some of {', '.join(LIBRARIES)}",
            got=", ".join(unknown) or "none",
            fix="pass for example --libraries raw,veil,opendp,diffprivlib",
        )
    return chosen


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _machine() -> dict[str, Any]:
    memory_gb = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _summary(lib: str, status: str, record: dict[str, Any], notes: list[str]) -> str:
    """A few words for the table's notes column (the full notes follow it)."""
    if status != "ok":
        reasons = [n for n in notes if n.startswith(("not installed", "cannot", "failed"))]
        return f"{status}: {reasons[0] if reasons else notes[-1] if notes else 'no result'}"
    phases = record.get("phases_s") or []
    if lib == "opendp" and phases:
        return "DP; phases below"
    return {
        "raw": "not private (baseline)",
        "veil": "DP; one row per person",
        "opendp": "DP",
        "diffprivlib": "DP; pandas split + calls per group",
    }[lib]


def _library_notes(lib: str, record: dict[str, Any], rows: int) -> list[str]:
    notes: list[str] = []
    if lib == "raw":
        notes.append("not private: the baseline")
    elif lib == "veil":
        notes.append(
            "SQL through PrivateFrame.query, local budget epsilon=1; privacy_unit=None: "
            "each row is one person"
        )
    elif lib == "opendp":
        notes.append(
            f"Context.compositor + Margin(by=['g'], max_length={rows:,}) + with_keys(declared keys)"
        )
        phases = record.get("phases_s") or []
        if phases:
            parts = ", ".join(
                f"{name} {statistics.median(p[name] for p in phases):.2f} s" for name in phases[0]
            )
            notes.append(f"median phases: {parts}")
    elif lib == "diffprivlib":
        notes.append(
            "no group-by: pandas splits the groups, then count_nonzero/sum/mean per group "
            "(epsilon/3 each; parallel composition over disjoint groups); table converted to "
            "pandas before timing"
        )
        notes.append(
            "its mean divides by the exact group size (noise of scale (hi - lo) / n / epsilon "
            "on the mean): the group sizes are treated as public"
        )
        phases = record.get("phases_s") or []
        if phases:
            notes.append(
                f"its accountant records epsilon={phases[0]['accountant_epsilon']:g} (sequential "
                "composition; it does not apply parallel composition)"
            )
    return notes


def _measure_memory(
    job: dict[str, Any], libraries: list[str], progress: ProgressCallback | None
) -> dict[str, dict[str, Any]]:
    """A fresh process per library, several at once (only their own peaks are read)."""
    task = "peak memory (a process per library)"
    emit(progress, task, 0, len(libraries), unit="libraries")
    memory: dict[str, dict[str, Any]] = {}
    workers = max(1, min(len(libraries), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(_run_child, {**job, "mode": "memory", "library": lib}, None): lib
            for lib in libraries
        }
        for future in as_completed(futures):
            memory[futures[future]] = future.result()
            emit(progress, task, len(memory), len(libraries), unit="libraries")
    return memory


def run_query_benchmark(
    rows: int = 10_000_000,
    groups: int = 100,
    repeats: int = 3,
    seed: int = 0,
    libraries: Sequence[str] = LIBRARIES,
    *,
    progress: ProgressCallback | None = None,
    time_cap_s: float = TIME_CAP_S,
) -> QueryResult:
    """Time COUNT, SUM and AVG per group with each library; peak memory of each.

    Args:
        rows: Rows (people) in the synthetic table.
        groups: Distinct values of ``g``, all declared (known keys).
        repeats: Timed runs per library (the median and the minimum are reported).
        seed: Seed of the synthetic *data* (not of any privacy noise).
        libraries: Some of ``raw``, ``veil``, ``opendp``, ``diffprivlib``.
        progress: Receives :class:`~veil.progress.ProgressEvent` values.
        time_cap_s: Stop repeating a library once its timed runs add up to this.

    Returns:
        The result (``to_dict()`` is the JSON report): parameters, machine, versions,
        and per library the times, ratios to raw Polars, peak memory, answers and notes.
    """
    chosen = _check(rows, groups, repeats, libraries)
    started = datetime.now(UTC)
    job = {"rows": rows, "groups": groups, "repeats": repeats, "seed": seed}
    timing = _run_child(
        {**job, "mode": "time", "libraries": chosen, "time_cap_s": time_cap_s}, progress
    )
    memory = _measure_memory(job, chosen, progress)

    timed = timing.get("libraries", {})
    records: list[dict[str, Any]] = []
    for lib in chosen:
        record: dict[str, Any] = dict(timed.get(lib, {}))
        notes: list[str] = _library_notes(lib, record, rows) + list(record.pop("notes", []))
        if "error" in timing:
            record["status"] = "failed"
            notes.append(f"timing process failed: {timing['error']}")
        times = record.get("times_s") or []
        if not times and record.get("status") == "ok":
            record["status"] = "failed"
        mem = memory[lib]
        if "error" in mem:
            notes.append(f"memory process failed: {mem['error']}")
        status = record.get("status", "failed")
        records.append(
            {
                "library": lib,
                "record": record,
                "notes": notes,
                "status": status,
                "times": times,
                "median_s": _median(times),
                "min_s": min(times) if times else None,
                "memory": {k: v for k, v in mem.items() if k != "status"},
            }
        )
    base = next((r for r in records if r["library"] == "raw" and r["status"] == "ok"), None)
    raw_mem = base["memory"] if base else {}
    results: list[QueryRow] = []
    for r in records:
        lib, record, notes = r["library"], r["record"], r["notes"]
        mem = {
            **r["memory"],
            "peak_ratio_to_raw": _ratio(r["memory"].get("peak_rss_mb"), raw_mem.get("peak_rss_mb")),
            "increment_ratio_to_raw": _ratio(
                r["memory"].get("query_increment_mb"), raw_mem.get("query_increment_mb")
            ),
        }
        answers = record.get("answers")
        results.append(
            QueryRow(
                library=lib,
                summary=_summary(lib, r["status"], record, notes),
                private=_PRIVATE[lib],
                status=r["status"],
                median_s=r["median_s"],
                min_s=r["min_s"],
                times_s=tuple(r["times"]),
                phases_s=tuple(record.get("phases_s") or []),
                memory=mem,
                noise_scales=record.get("noise_scales") or {},
                max_abs_error=record.get("max_abs_error"),
                answers=None if answers is None else tuple(answers),
                result=record.get("result"),
                notes=tuple(notes),
                ratio_to_raw=_ratio(r["median_s"], base["median_s"] if base else None),
                min_ratio_to_raw=_ratio(r["min_s"], base["min_s"] if base else None),
            )
        )
    return QueryResult(
        query=QUERY_SQL,
        date=started.isoformat(timespec="seconds"),
        parameters={
            **job,
            "libraries": chosen,
            "epsilon": EPSILON,
            "bounds": list(BOUNDS),
            "time_cap_s": time_cap_s,
        },
        table={
            "columns": {
                "person_id": "unique integer: one row per person",
                "g": f"{groups} labels, declared as categories (known keys)",
                "x": f"uniform in the declared bounds {list(BOUNDS)}",
            },
            "privacy_unit": None,
            "note": "privacy_unit=None: each row is one distinct person (person_id is unique)",
        },
        machine=_machine(),
        versions={
            p: _version(p) for p in ("veil", "polars", "opendp", "diffprivlib", "numpy", "pandas")
        },
        method=(
            (
                "times: one fresh process; every library warmed up on a "
                f"{WARMUP_ROWS:,}-row slice, then run round-robin (order rotated each repeat); "
                "median and minimum of the repeats"
            ),
            (
                "each timed call starts from the in-memory table (pandas for diffprivlib) and "
                "ends with the released answer"
            ),
            (
                "memory: a fresh process per library: peak RSS of building the table and "
                "running the query once; the increment is the query's peak over the table alone"
            ),
            (
                "ratios are to raw Polars measured in the same process (times) or the same way "
                "(memory): compare ratios, not seconds across machines"
            ),
            "max_abs_error: largest absolute difference from the exact answer over the groups",
        ),
        results=tuple(results),
        goals=_goals(results),
    )


def _goals(results: list[QueryRow]) -> dict[str, Any]:
    veil = next((r for r in results if r.library == "veil" and r.status == "ok"), None)
    others = [r for r in results if r.private and r.library != "veil" and r.status == "ok"]
    if veil is None:
        return {
            "time_within_1_5x_raw": None,
            "faster_than_other_dp": None,
            "memory_within_2x_raw": None,
        }
    time_ratio = veil.ratio_to_raw
    mem_ratio = veil.memory.get("peak_ratio_to_raw")
    return {
        "time_within_1_5x_raw": None if time_ratio is None else time_ratio <= 1.5,  # noqa: PLR2004
        "time_ratio": time_ratio,
        "faster_than_other_dp": (
            all(veil.median_s < o.median_s for o in others) if others else None  # type: ignore[operator]
        ),
        "compared_with": [o.library for o in others],
        "memory_within_2x_raw": None if mem_ratio is None else mem_ratio <= 2.0,  # noqa: PLR2004
        "memory_ratio": mem_ratio,
    }
