"""The measuring side of ``veil bench synth``: one generator in one fresh process.

:mod:`veil.bench._synth` starts :func:`_child_main` once per generator and
epsilon, so that the CPU time and peak memory it reads are that generator's
own. The child loads Adult's training file, encodes it with Veil's encoder
(the same domain for every generator), runs one generator, writes the
synthetic codes to ``job["out"]`` (a ``.npy`` file) and prints one marked
JSON line: ``{"result": ...}`` or ``{"error": ...}``; progress events before
it, as :func:`veil.progress.json_line_reporter` writes them.

Generators:

* ``veil-aim`` / ``veil-mst``: :func:`veil.synth.synthesize_frame` with a
  :class:`~veil.ledger.LocalBudget` of exactly the release's (epsilon, delta);
* ``veil-aim-nonprivate``: :func:`veil.synth.fit_nonprivate` (exact
  marginals: the baseline the membership attack must see through);
* ``reference-aim``: private-pgm's own AIM (``mechanisms/aim.py``, vendored
  in :mod:`veil.bench._reference`) on the same codes, workload and settings.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from veil._io import dumps
from veil._memory import peak_resident_mb
from veil.data.readers import ADULT_CATEGORIES, ADULT_COLUMNS
from veil.progress import emit, json_line_reporter

__all__ = ["ADULT_SYNTH_BOUNDS", "GENERATORS", "adult_frame", "adult_schema"]

GENERATORS = ("veil-aim", "reference-aim", "veil-mst", "veil-aim-nonprivate")
# Declared for the benchmark from the codebook and the census forms (not read from the rows):
# the bins of every numeric column are equal-width cells over these bounds.
ADULT_SYNTH_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (17.0, 90.0),
    "fnlwgt": (0.0, 1_500_000.0),
    "education_num": (1.0, 16.0),
    "capital_gain": (0.0, 100_000.0),
    "capital_loss": (0.0, 5_000.0),
    "hours_per_week": (1.0, 99.0),
}
_MARK = "@@veil-bench "


def adult_schema() -> Any:
    """Adult's columns as a :class:`~veil.data.PrivacySchema`: codebook categories, declared bounds."""
    from veil.data import ColumnSpec, PrivacySchema  # noqa: PLC0415

    columns = []
    for name in ADULT_COLUMNS:
        if name in ADULT_CATEGORIES:
            spec = ColumnSpec(name, "categorical", categories=ADULT_CATEGORIES[name])
        else:
            spec = ColumnSpec(name, "numeric", bounds=ADULT_SYNTH_BOUNDS[name])
        columns.append(spec)
    return PrivacySchema(columns=tuple(columns), privacy_unit=None)  # one row per person


def adult_frame(data: Path, split: str, rows: int | None = None) -> pd.DataFrame:
    """``adult.data`` (``split="train"``) or ``adult.test``, the first ``rows`` rows."""
    from veil.data import load_table  # noqa: PLC0415

    name = "adult.data" if split == "train" else "adult.test"
    frame = load_table(data / "adult" / name, format="adult")
    return frame if rows is None else frame.iloc[:rows].reset_index(drop=True)


def integer_columns(frame: pd.DataFrame) -> dict[str, bool]:
    """Numeric columns holding whole numbers, from their type (never their values)."""
    return {c: bool(pd.api.types.is_integer_dtype(frame[c])) for c in frame.columns}


# ---------------------------------------------------------------------------- the generators


def _settings(job: dict[str, Any]) -> Any:
    from veil.synth import SynthSettings  # noqa: PLC0415

    return SynthSettings(
        rounds=job["rounds"],
        iters=job["iters"],
        final_iters=job["final_iters"],
        max_model_mb=job["max_model_mb"],
    )


def _veil(job: dict[str, Any], frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    from veil.synth import fit_nonprivate, synthesize_frame  # noqa: PLC0415

    common: dict[str, Any] = {
        "rows": len(frame),
        "workload": "3-way",
        "max_cells": job["max_cells"],
        "bins": job["bins"],
        "columns": job["columns"],
        "seed": job["seed"],
        "settings": _settings(job),
    }
    if job["generator"] == "veil-aim-nonprivate":
        result = fit_nonprivate(frame, adult_schema(), method="aim", **common)
    else:
        result = synthesize_frame(
            frame,
            adult_schema(),
            epsilon=job["epsilon"],
            delta=job["delta"],
            method=job["generator"].removeprefix("veil-"),
            dataset="adult",
            purpose="veil bench synth",
            **common,
        )
    card = result.card.to_dict()
    codes = result.codes[list(result.encoder.columns)].to_numpy(dtype=np.int64)
    return codes, {
        "sizes": dict(result.encoder.sizes),
        "measured": len(result.trace.measured),
        "rounds_run": result.trace.rounds,
        "card": card,
    }


def _reference(job: dict[str, Any], frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    from mbi import Dataset, Domain  # noqa: PLC0415

    from veil.bench._reference.aim import AIM  # noqa: PLC0415
    from veil.synth import Encoder, workload_cliques  # noqa: PLC0415

    encoder = Encoder.from_schema(
        adult_schema(), bins=job["bins"], columns=job["columns"], integer=integer_columns(frame)
    )
    columns = list(encoder.columns)
    sizes = dict(encoder.sizes)
    real = encoder.encode(frame)
    domain = Domain(columns, [sizes[c] for c in columns])
    data = Dataset({c: real[c].to_numpy() for c in columns}, domain)
    workload = [(cl, 1.0) for cl in workload_cliques(sizes, "3-way", max_cells=job["max_cells"])]
    np.random.seed(job["seed"])  # noqa: NPY002 - the reference samples its rows from the global generator
    mechanism = AIM(
        job["epsilon"],
        job["delta"],
        prng=np.random.RandomState(job["seed"]),  # the reference's own interface
        rounds=job["rounds"],
        max_model_size=job["max_model_mb"],
        max_iters=job["iters"],
    )
    # The reference prints a line per round ("Measuring Clique ..."): they are its only record of
    # how many rounds its annealing left it (it may spend the budget in fewer than `rounds`).
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _model, synth = mechanism.run(data, workload, num_synth_rows=len(frame))
    rounds_run = printed.getvalue().count("Measuring Clique")
    codes = np.column_stack([np.asarray(synth.to_dict()[c], dtype=np.int64) for c in columns])
    return codes, {
        "sizes": sizes,
        # Measurements, as Veil's are counted: the one-way start, then one per round.
        "measured": len(columns) + rounds_run,
        "rho": float(mechanism.rho),
    }


# ---------------------------------------------------------------------------- the process


def _write(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


def _send(payload: dict[str, Any]) -> None:
    _write(_MARK + dumps(payload) + "\n")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(job: dict[str, Any]) -> dict[str, Any]:
    report = json_line_reporter(_write, prefix=_MARK)
    epsilon = "none" if job["epsilon"] is None else f"{job['epsilon']:g}"
    task = f"{job['generator']} epsilon={epsilon}"
    emit(report, task, 0, 1, unit="runs")
    frame = adult_frame(Path(job["data"]), "train", job["rows"])
    if job["generator"] == "reference-aim":
        import mbi  # noqa: F401, PLC0415 - imported before the clock starts, as Veil's is

        runner = _reference
    else:
        from veil.synth import load_mbi  # noqa: PLC0415

        # JAX and mbi, as the reference's are, before the clock; and like the reference,
        # without Veil's compilation cache (a cache set for the whole run serves both).
        load_mbi(cache=False)
        runner = _veil
    cpu, wall = _cpu_s(), time.perf_counter()
    codes, facts = runner(job, frame)
    cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
    np.save(job["out"], codes)
    emit(report, task, 1, 1, unit="runs")
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mb": peak_resident_mb(),
        "rows": len(frame),
        **facts,
    }


def _child_main() -> None:
    """Entry point of the benchmark's subprocesses (one JSON job in argv, JSON lines out)."""
    job = json.loads(sys.argv[1])
    try:
        result = _run(job)
    except BaseException as exc:
        _send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    _send(
        {
            "result": {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in result.items()
            }
        }
    )
