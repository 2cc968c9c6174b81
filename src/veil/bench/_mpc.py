"""``veil bench mpc``: a 3-party secure sum of a million fixed-point values against NumPy.

Each of the three parties holds a vector of ``size`` reals (uniform in
[-1000, 1000), from a seeded generator: benchmark data, not private data); the
parties compute the element-wise sum of their vectors with each protocol
(additive 3-of-3 in Z_2^64; Shamir 2-of-3 in GF(2^61 - 1)), each party in its
own process, talking over TCP on localhost. Reported per protocol, as the
median of ``repeats`` runs: the whole run (process start-up, input files,
sharing, opening), the protocol alone (the slowest party, from connecting to
its result), the bytes all parties sent, and the largest error against the
plaintext NumPy sum (which must stay within ``3 * 2**-(f + 1)``, the rounding
of three fixed-point values). The plaintext sum ``a + b + c`` is timed the
same way.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from veil import __version__
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, ratio, verdict
from veil.mpc import secure_sum
from veil.progress import ProgressCallback, emit

__all__ = ["MpcResult", "MpcRow", "run_mpc_benchmark"]

PARTIES = 3


@dataclass(frozen=True, kw_only=True)
class MpcRow:
    """One protocol: medians of the runs, the last run's bytes and error."""

    protocol: str
    threshold: int
    seconds: float
    protocol_seconds: float
    seconds_all: tuple[float, ...]
    phases: Mapping[str, float]
    bytes_sent: int
    bytes_per_value: float
    ratio_to_plaintext: float | None
    max_abs_error: float
    within_resolution: bool

    @property
    def name(self) -> str:
        """The protocol with its threshold, as the table shows it."""
        if self.protocol == "shamir":
            return f"{self.protocol} {self.threshold}-of-3"
        return f"{self.protocol} 3-of-3"


@dataclass(frozen=True, kw_only=True)
class MpcResult(BenchResult):
    """``veil bench mpc``: each protocol's secure sum against the plaintext NumPy sum."""

    benchmark: str = "mpc"
    parameters: Mapping[str, Any]
    plaintext: Mapping[str, Any]
    results: tuple[MpcRow, ...]
    machine: Mapping[str, Any]

    def view(self) -> View:
        """The protocols against NumPy, then how to read the columns."""
        params, plain = self.parameters, self.plaintext["seconds"]
        rows: list[tuple[Any, ...]] = [("numpy a+b+c", plain, plain, 1.0, "-", "-", "0")]
        rows += [
            (
                r.name,
                r.seconds,
                r.protocol_seconds,
                r.ratio_to_plaintext,
                r.bytes_sent / 1e6,
                r.bytes_per_value,
                f"{r.max_abs_error:.2e}" + ("" if r.within_resolution else " [red]!"),
            )
            for r in self.results
        ]
        table = Table(
            title=f"3-party secure sum of {params['size']:,} fixed-point values per party "
            f"({params['frac_bits']} fractional bits), one process per party over TCP",
            columns=(
                Column("protocol", justify="left"),
                Column("total s", fixed(".3f")),
                Column("protocol s", fixed(".3f")),
                Column("x numpy", ratio),
                Column("MB sent", fixed(",.1f")),
                Column("B/value", fixed(".1f")),
                Column("max error"),
            ),
            rows=tuple(rows),
        )
        machine = self.machine
        return (
            table,
            Note(
                f"· total: process start-up, input files, sharing and opening (median of "
                f"{params['repeats']}); protocol: the slowest party from connecting to its "
                f"result; x numpy: protocol time over the plaintext sum; every error within "
                f"{params['tolerance']:.2e} (3 roundings of 2^-{params['frac_bits'] + 1}): "
                + verdict(all(r.within_resolution for r in self.results))
            ),
            Note(
                f"· machine: {machine['cpus']} CPUs, Python {machine['python']}, "
                f"NumPy {machine['numpy']}; times are noisy on a shared machine"
            ),
        )


def run_mpc_benchmark(
    *,
    size: int = 1_000_000,
    repeats: int = 3,
    frac_bits: int = 16,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> MpcResult:
    """Run the benchmark (module docstring); ``to_dict()`` of the result is the JSON report."""
    vectors = [
        np.random.default_rng([seed, party]).uniform(-1000.0, 1000.0, size)
        for party in range(PARTIES)
    ]
    plain_times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        plain = vectors[0] + vectors[1] + vectors[2]
        plain_times.append(time.perf_counter() - started)
    plain_s = statistics.median(plain_times)
    tolerance = PARTIES * 2.0 ** -(frac_bits + 1)
    results: list[MpcRow] = []
    setups = (("additive", None), ("shamir", 2))
    total = len(setups) * max(1, repeats)
    done = 0
    for protocol, threshold in setups:
        runs = []
        for _ in range(max(1, repeats)):
            emit(progress, "bench mpc", done, total, unit="runs", detail=protocol)
            runs.append(
                secure_sum(
                    vectors,
                    protocol=protocol,  # type: ignore[arg-type]
                    threshold=threshold,
                    frac_bits=frac_bits,
                    elementwise=True,
                    timeout=120.0,
                )
            )
            done += 1
        error = float(np.max(np.abs(np.asarray(runs[-1].value) - plain)))
        wall = statistics.median(r.seconds for r in runs)
        proto = statistics.median(r.protocol_seconds for r in runs)
        results.append(
            MpcRow(
                protocol=protocol,
                threshold=runs[-1].threshold,
                seconds=wall,
                protocol_seconds=proto,
                seconds_all=tuple(r.seconds for r in runs),
                phases=runs[-1].phases,
                bytes_sent=runs[-1].total_bytes,
                bytes_per_value=runs[-1].total_bytes / size,
                ratio_to_plaintext=proto / plain_s if plain_s > 0 else None,
                max_abs_error=error,
                within_resolution=error <= tolerance + 1e-9,  # + float rounding of NumPy
            )
        )
    emit(progress, "bench mpc", total, total, unit="runs")
    return MpcResult(
        parameters={
            "parties": PARTIES,
            "size": size,
            "repeats": repeats,
            "frac_bits": frac_bits,
            "tolerance": tolerance,
            "operation": "element-wise sum of the parties' vectors",
        },
        plaintext={"library": "numpy", "seconds": plain_s},
        results=tuple(results),
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "veil": __version__,
        },
    )
