"""Where the CPU goes on ``veil bench synth --tiny``: Veil's AIM and the reference's, fit by fit.

Runs one generator of the smoke table (4 Adult columns, 300 rows, 5 rounds,
50 iterations, a 0.5 MB model, epsilon 1) in this process under cProfile and
prints its CPU seconds, how many model fits it made (calls of mbi's
``estimation.estimate``), the CPU seconds inside them, how many programs JAX
compiled and the CPU seconds spent compiling.

    python benchmarks/synth/profile_smoke.py --generator veil-aim
    python benchmarks/synth/profile_smoke.py --generator reference-aim

Not a test: it asserts nothing. Run each generator in a fresh process (JAX
keeps what it compiled for the life of the process).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import pstats
import resource
import sys
import time
from pathlib import Path
from typing import Any

from veil.bench import _synth_child as child
from veil.bench._synth import TINY, TINY_COLUMNS
from veil.synth import load_mbi


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _calls(stats: pstats.Stats, file_part: str, function: str) -> tuple[int, float]:
    """Primitive calls and cumulative seconds of ``function`` in files containing ``file_part``."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    calls, seconds = 0, 0.0
    for (path, _, name), (primitive, _, _, cumulative, _) in table.items():
        if name == function and file_part in path:
            calls += primitive
            seconds = max(seconds, cumulative)
    return calls, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=("veil-aim", "reference-aim"), default="veil-aim")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    # JAX and mbi imported before the clock, as `veil bench synth` does for each generator.
    if args.generator == "reference-aim":
        importlib.import_module("mbi")
    else:
        load_mbi()
    frame = child.adult_frame(args.data, "train", int(TINY["rows"]))
    job = {
        "generator": args.generator,
        "epsilon": 1.0,
        "delta": 1e-9,
        "rows": TINY["rows"],
        "rounds": TINY["rounds"],
        "iters": TINY["iters"],
        "final_iters": TINY["final_iters"],
        "max_model_mb": TINY["max_model_mb"],
        "columns": list(TINY_COLUMNS),
        "seed": 0,
        "max_cells": 10_000,
        "bins": 16,
    }
    runner = child._reference if args.generator == "reference-aim" else child._veil  # noqa: SLF001
    profile = cProfile.Profile(time.process_time)  # CPU seconds, as the benchmark counts
    cpu = _cpu()
    profile.enable()
    runner(job, frame)
    profile.disable()
    cpu = _cpu() - cpu
    stats = pstats.Stats(profile)
    fits, fit_s = _calls(stats, "mbi/estimation.py", "estimate")
    compiles, compile_s = _calls(stats, "jax/_src/compiler.py", "backend_compile_and_load")
    report = {
        "generator": args.generator,
        "cpu_s": round(cpu, 2),
        "model_fits": fits,
        "fit_s": round(fit_s, 2),
        "jax_compiles": compiles,
        "compile_s": round(compile_s, 2),
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
