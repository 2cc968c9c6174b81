"""The measuring side of ``veil bench query``: the table, each library's query, the child process.

:mod:`veil.bench._query` starts this module's :func:`_child_main` in fresh
processes (one for the timings, one per library for peak memory) and reads
the JSON lines it prints; it then assembles the result. Keeping the measuring
code apart keeps what the child imports, and so what it measures, small.

Each line the parent reads starts with ``_MARK``: progress events as
:func:`veil.progress.json_line_reporter` writes them (``{"progress": {...}}``),
then one ``{"result": ...}`` or ``{"error": ...}``, written by
:func:`veil._io.dumps`.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from veil._io import dumps
from veil._memory import peak_resident_mb, resident_mb
from veil.progress import emit, json_line_reporter

__all__ = [
    "BOUNDS",
    "EPSILON",
    "LIBRARIES",
    "QUERY_SQL",
    "WARMUP_ROWS",
    "build_query_table",
    "group_labels",
]

LIBRARIES = ("raw", "veil", "opendp", "diffprivlib")
QUERY_SQL = "SELECT g, COUNT(*), SUM(x), AVG(x) FROM t GROUP BY g"
EPSILON = 1.0
BOUNDS = (0.0, 100.0)
MID = (BOUNDS[0] + BOUNDS[1]) / 2
STATS = ("count", "sum_x", "mean_x")
WARMUP_ROWS = 5_000
_MARK = "@@veil-bench "
_DPL_FIX = "pip install 'veil[bench]'"


# ---------------------------------------------------------------------------- the table


def group_labels(groups: int) -> list[str]:
    width = len(str(max(groups - 1, 0)))
    return [f"g{i:0{width}d}" for i in range(groups)]


def build_query_table(rows: int, groups: int, seed: int = 0) -> pl.DataFrame:
    """The benchmark's table: ``person_id`` (unique), ``g`` (``groups`` labels), ``x`` in [0, 100].

    Deterministic for a given ``(rows, groups, seed)``. The seed drives the data
    only: it is synthetic test data, not privacy noise.
    """
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, groups, size=rows)
    x = rng.uniform(BOUNDS[0], BOUNDS[1], size=rows)
    labels = pl.Series("g", group_labels(groups), dtype=pl.String)
    return pl.DataFrame(
        {
            "person_id": pl.int_range(rows, dtype=pl.Int64, eager=True),
            "g": labels.gather(codes),
            "x": x,
        }
    )


def _schema(groups: int) -> Any:
    from veil.data import ColumnSpec, PrivacySchema  # noqa: PLC0415

    return PrivacySchema(
        columns=(
            ColumnSpec("person_id", "identifier"),
            ColumnSpec("g", "categorical", categories=tuple(group_labels(groups))),
            ColumnSpec("x", "numeric", bounds=BOUNDS),
        ),
        privacy_unit=None,  # each row is one distinct person
    )


# ---------------------------------------------------------------------------- the libraries


@dataclass
class _Setup:
    rows: int
    groups: int
    labels: list[str]
    schema: Any = None
    keys: pl.DataFrame | None = None
    dpl: tuple[Any, Any] | None = None  # (diffprivlib.tools, BudgetAccountant)
    notes: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Run:
    native: Any
    phases: dict[str, float] = field(default_factory=dict)


def _raw(table: Any, setup: _Setup) -> _Run:
    del setup
    frame = (
        table.lazy()
        .group_by("g")
        .agg(
            pl.len().alias("count"),
            pl.col("x").sum().alias("sum_x"),
            pl.col("x").mean().alias("mean_x"),
        )
        .collect()
    )
    return _Run(frame)


def _veil(table: Any, setup: _Setup) -> _Run:
    from veil.dp import PrivateFrame  # noqa: PLC0415
    from veil.ledger import Budget  # noqa: PLC0415

    private = PrivateFrame(table, setup.schema, budget=Budget(epsilon=EPSILON))
    return _Run(private.query(QUERY_SQL, epsilon=EPSILON))


def _opendp_query(table: Any, setup: _Setup) -> Any:
    """The query in OpenDP's Polars API: a context on the data, then the grouped aggregates."""
    dp: Any = importlib.import_module("opendp.prelude")  # its Polars API is untyped
    dp.enable_features("contrib")
    context = dp.Context.compositor(
        data=table.lazy(),
        privacy_unit=dp.unit_of(contributions=1),
        privacy_loss=dp.loss_of(epsilon=EPSILON),
        split_evenly_over=1,
        # max_length: a public bound on a group's size (float sums need it): the table's rows.
        margins=[dp.polars.Margin(by=["g"], max_length=setup.rows)],
    )
    x: Any = pl.col("x").fill_nan(MID).fill_null(MID)  # .dp: OpenDP's expression namespace
    return (
        context.query()
        .group_by("g")
        .agg(
            dp.len(signed=True).alias("count"),
            x.dp.sum(BOUNDS).alias("sum_x"),
            x.dp.mean(BOUNDS).alias("mean_x"),
        )
        .with_keys(setup.keys)
    )


def _opendp(table: Any, setup: _Setup) -> _Run:
    start = time.perf_counter()
    query = _opendp_query(table, setup)
    built = time.perf_counter()
    released = query.release()
    resolved = time.perf_counter()
    frame = released.collect()
    done = time.perf_counter()
    return _Run(
        frame,
        {"context": built - start, "release": resolved - built, "collect": done - resolved},
    )


def _noise_scales(library: str, run: _Run, table: pl.DataFrame, setup: _Setup) -> dict[str, float]:
    """The noise scale of each released quantity (not timed)."""
    if library == "veil":
        first = run.native.rows[0]
        return {
            "count": first["count"]["noise_scale"],
            "sum_x": first["sum_x"]["noise_scale"],
            "mean_x (its centred sum; the count is shared)": first["mean_x"][
                "noise_scale_centred_sum"
            ],
        }
    if library == "opendp":
        summary = _opendp_query(table.head(WARMUP_ROWS), setup).summarize()
        return {
            f"{column} ({aggregate.lower()})": scale
            for column, aggregate, scale in summary.select(
                "column", "aggregate", "scale"
            ).iter_rows()
        }
    return {}


def _diffprivlib(table: Any, setup: _Setup) -> _Run:
    assert setup.dpl is not None  # noqa: S101 - loaded before any run
    tools, accountant_type = setup.dpl
    accountant = accountant_type()  # a fresh ledger per run (the default one is global)
    eps = EPSILON / len(STATS)
    parts = dict(iter(table.groupby("g", sort=False)["x"]))
    out: dict[str, tuple[float, float, float]] = {}
    for label in setup.labels:
        part = parts.get(label)
        xs = np.empty(0) if part is None else part.to_numpy()
        count = tools.count_nonzero(
            np.ones(xs.size, dtype=bool), epsilon=eps, accountant=accountant
        )
        total = tools.sum(xs, epsilon=eps, bounds=BOUNDS, accountant=accountant)
        mean = tools.mean(xs, epsilon=eps, bounds=BOUNDS, accountant=accountant)
        out[label] = (float(count), float(total), float(mean))
    return _Run(out, {"accountant_epsilon": float(accountant.total()[0])})


_RUNNERS: dict[str, Callable[[Any, _Setup], _Run]] = {
    "raw": _raw,
    "veil": _veil,
    "opendp": _opendp,
    "diffprivlib": _diffprivlib,
}


def _load_diffprivlib() -> tuple[tuple[Any, Any] | None, list[str]]:
    """``(tools, BudgetAccountant)`` and notes, or ``None`` and why not."""
    if importlib.util.find_spec("diffprivlib") is None:
        return None, [f"not installed: it is only in the benchmark extra ({_DPL_FIX})"]
    notes = []
    try:
        tools = importlib.import_module("diffprivlib.tools")
    except ImportError as exc:
        # diffprivlib/__init__ imports its models, which fail on newer scikit-learn
        # (0.6.6 with scikit-learn 1.9: sklearn.tree._tree.DOUBLE is gone). The tools
        # measured here do not use them: load the package without its __init__.
        for name in [m for m in sys.modules if m == "diffprivlib" or m.startswith("diffprivlib.")]:
            del sys.modules[name]
        spec = importlib.util.find_spec("diffprivlib")
        assert spec is not None  # noqa: S101
        package = types.ModuleType("diffprivlib")
        package.__path__ = list(spec.submodule_search_locations or [])
        package.__spec__ = spec
        sys.modules["diffprivlib"] = package
        try:
            tools = importlib.import_module("diffprivlib.tools")
        except ImportError as again:
            return None, [f"cannot be imported: {again}"]
        notes.append(
            f"its package __init__ fails to import here ({str(exc).split(' (')[0]}); "
            "diffprivlib.tools was "
            "loaded without it (the tools do not use the failing models)"
        )
    accountant = importlib.import_module("diffprivlib.accountant").BudgetAccountant
    return (tools, accountant), notes


def _prepare(libraries: Sequence[str], rows: int, groups: int) -> _Setup:
    setup = _Setup(rows=rows, groups=groups, labels=group_labels(groups))
    if "veil" in libraries:
        setup.schema = _schema(groups)
    if "opendp" in libraries:
        setup.keys = pl.DataFrame({"g": setup.labels})
    if "diffprivlib" in libraries:
        setup.dpl, setup.notes["diffprivlib"] = _load_diffprivlib()
    return setup


def _table_for(library: str, table: pl.DataFrame) -> Any:
    return table.to_pandas() if library == "diffprivlib" else table


def _answers(library: str, run: _Run, labels: list[str]) -> list[dict[str, Any]]:
    """Values per declared key, in declared order (``None`` where a library released no row)."""
    by_key: dict[str, tuple[float, float, float]]
    if library == "diffprivlib":
        by_key = run.native
    elif library == "veil":
        by_key = {
            row["g"]: tuple(float(row[s]["value"]) for s in STATS)  # type: ignore[misc]
            for row in run.native.rows
        }
    else:
        frame: pl.DataFrame = run.native
        by_key = {
            r[0]: tuple(None if v is None else float(v) for v in r[1:])  # type: ignore[misc]
            for r in frame.select("g", *STATS).iter_rows()
        }
    return [
        {"g": label, **dict(zip(STATS, by_key.get(label, (None, None, None)), strict=True))}
        for label in labels
    ]


def _errors(answers: list[dict[str, Any]], exact: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stat in STATS:
        diffs = [
            abs(a[stat] - e[stat])
            for a, e in zip(answers, exact, strict=True)
            if a[stat] is not None and e[stat] is not None
        ]
        out[stat] = max(diffs) if diffs else None
    return out


# ---------------------------------------------------------------------------- subprocesses


def _write(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


def _send(payload: dict[str, Any]) -> None:
    """One marked JSON line to the parent: ``{"result": ...}`` or ``{"error": ...}``."""
    _write(_MARK + dumps(payload) + "\n")


_report = json_line_reporter(_write, prefix=_MARK)


def _progress(task: str, completed: float, total: float | None, unit: str) -> None:
    emit(_report, task, completed, total, unit=unit)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:  # noqa: PTH123
            refs.write("5")
    except OSError:
        return False
    return True


def _warm_up(library: str, table: pl.DataFrame, setup: _Setup) -> None:
    small = _table_for(library, table.head(WARMUP_ROWS))
    _RUNNERS[library](small, setup)


def _warm_all(
    libraries: list[str], table: pl.DataFrame, setup: _Setup, out: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Warm every library up; the table each runnable library is timed on."""
    tables: dict[str, Any] = {}
    for lib in libraries:
        if lib == "diffprivlib" and setup.dpl is None:
            out[lib]["status"] = "unavailable"
            continue
        try:
            _warm_up(lib, table, setup)
            tables[lib] = _table_for(lib, table)
        except Exception as exc:  # noqa: BLE001 - a library that cannot run is a result
            out[lib]["status"] = "failed"
            out[lib]["notes"].append(f"failed: {type(exc).__name__}: {exc}")
    return tables


def _time_all(job: dict[str, Any]) -> dict[str, Any]:
    libraries: list[str] = job["libraries"]
    rows, groups, repeats = job["rows"], job["groups"], job["repeats"]
    task = f"time queries ({rows:,} rows)"
    _progress(task, 0, repeats * len(libraries), "runs")
    table = build_query_table(rows, groups, job["seed"])
    setup = _prepare(libraries, rows, groups)
    exact = _answers("raw", _raw(table, setup), setup.labels)
    out: dict[str, dict[str, Any]] = {
        lib: {"times_s": [], "phases_s": [], "notes": list(setup.notes.get(lib, []))}
        for lib in libraries
    }
    tables = _warm_all(libraries, table, setup, out)
    done = 0
    last: dict[str, _Run] = {}
    for r in range(repeats):
        order = libraries[r % len(libraries) :] + libraries[: r % len(libraries)]
        for lib in order:
            done += 1
            record = out[lib]
            if lib not in tables or sum(record["times_s"]) > job["time_cap_s"]:
                _progress(task, done, repeats * len(libraries), "runs")
                continue
            gc.collect()
            try:
                start = time.perf_counter()
                run = _RUNNERS[lib](tables[lib], setup)
                record["times_s"].append(time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001
                record["status"] = "failed"
                record["notes"].append(f"failed: {type(exc).__name__}: {exc}")
                del tables[lib]
            else:
                record["phases_s"].append(run.phases)
                last[lib] = run
            _progress(task, done, repeats * len(libraries), "runs")
    for lib, run in last.items():
        record = out[lib]
        record.setdefault("status", "ok")
        record["answers"] = _answers(lib, run, setup.labels)
        record["max_abs_error"] = _errors(record["answers"], exact)
        if lib == "veil":
            record["result"] = run.native.to_dict()
        record["noise_scales"] = _noise_scales(lib, run, table, setup)
        if len(record["times_s"]) < repeats:
            record["notes"].append(
                f"{len(record['times_s'])} of {repeats} repeats (time cap {job['time_cap_s']:g} s)"
            )
    return {"libraries": out, "exact": exact}


def _memory_one(job: dict[str, Any]) -> dict[str, Any]:
    lib: str = job["library"]
    rows, groups = job["rows"], job["groups"]
    setup = _prepare([lib], rows, groups)
    if lib == "diffprivlib" and setup.dpl is None:
        return {"status": "unavailable"}
    table = build_query_table(rows, groups, job["seed"])
    _warm_up(lib, table, setup)
    data = _table_for(lib, table)
    if data is not table:
        del table
    gc.collect()
    peak_build = peak_resident_mb() or 0.0
    now = resident_mb()
    reset = now is not None and _reset_peak()
    base = now if reset and now is not None else peak_build
    _RUNNERS[lib](data, setup)
    peak_query = peak_resident_mb() or 0.0
    return {
        "status": "ok",
        "peak_rss_mb": max(peak_build, peak_query),
        "table_rss_mb": base,
        "query_increment_mb": max(0.0, peak_query - base),
        "method": "VmRSS after the build, then the peak mark reset"
        if reset
        else "the peak before and after the query (the increment is a lower bound)",
    }


def _child_main() -> None:
    """Entry point of the benchmark's subprocesses (one JSON job in argv, JSON lines out)."""
    job = json.loads(sys.argv[1])
    try:
        result = _time_all(job) if job["mode"] == "time" else _memory_one(job)
    except BaseException as exc:
        _send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    _send({"result": result})
