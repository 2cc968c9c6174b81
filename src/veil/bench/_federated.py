"""``veil bench federated``: federated learning on MNIST, measured against the literature's goals.

Every row is one or more :class:`~veil.federated.FederatedConfig` runs through
:func:`~veil.federated.federate` (Veil's in-process runner on Flower's Grid), on
the MNIST idx files in ``<data>/mnist``:

* ``mlp-iid``: MLP 784-128-10, 10 IID clients, all participating, 1 local epoch,
  batch 32, lr 0.05 with momentum 0.9, 10 rounds. Goal: >= 97% within 10 rounds, and a round's
  overhead (its wall time less the clients' training time) <= 0.15 s.
* ``secagg-overhead``: the same setting with 10 and 50 clients, 3 rounds, plain
  against Flower's SecAgg+ with 5 shares. Seconds per round are the median of
  rounds 2..n (round 1 pays for warm-up). Goal: <= +30% (Flower measured +55%
  at 5 shares).
* ``cnn-iid``: McMahan et al.'s CNN, 10 IID clients, 20 rounds. Goal: >= 99%.
* ``pathological``: the CNN on McMahan et al.'s pathological split (100
  clients, 2 classes each), 10% of clients per round, 5 local epochs, batch 10;
  stops at 99% or ``max_rounds``. Goal: 99% within ``max_rounds``.
* ``dp-fedavg``: user-level DP-FedAvg, 1,000 clients of 60 examples, Poisson
  sampling at 10%, clip 1.0, noise calibrated to epsilon 2, 4 and 8
  (delta 1e-5). Goal: >= 95% at some epsilon <= 8.
* ``poisoning``: 20 IID clients of which 20% flip labels or, separately, 10%
  send scaled model replacements (a backdoor); FedAvg, coordinate median,
  trimmed mean (0.2), Multi-Krum, Bulyan and FedAvg with norm bounding.
  Goal: the best robust rule within 2 points of clean FedAvg, for each attack.

``quick`` shrinks every row (2,000 training images, 2 rounds, a few clients,
logistic regression) into a smoke run: its figures say the code works, not
whether a goal is met.

The runs are planned and run in :mod:`veil.bench._federated_plan`, and each
row is scored against its goal in :mod:`veil.bench._federated_score`.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil import __version__
from veil.bench._federated_plan import DEFAULT_MAX_ROUNDS, ROWS, Outcome, execute, plan_runs
from veil.bench._federated_score import summarise
from veil.bench._result import BenchResult, Column, Note, Table, View, verdict
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = [
    "DEFAULT_MAX_ROUNDS",
    "ROWS",
    "FederatedResult",
    "FederatedRow",
    "run_federated_benchmark",
]


@dataclass(frozen=True, kw_only=True)
class FederatedRow:
    """One row of the benchmark: its runs' configurations and figures, against its goal."""

    name: str
    config: Any  # one configuration, a list, or plain and SecAgg+ lists
    results: Any  # figures, per run or per attack and rule
    goal: Mapping[str, float]
    met: bool
    summary: str
    goal_text: str


@dataclass(frozen=True, kw_only=True)
class FederatedResult(BenchResult):
    """``veil bench federated``: the chosen rows, each against the literature's goal."""

    benchmark: str = "federated"
    veil: str
    parameters: Mapping[str, Any]
    rows: tuple[FederatedRow, ...]
    notes: tuple[str, ...]
    machine: Mapping[str, Any]
    seconds: float

    def view(self) -> View:
        """One line per row: what it measured against its goal."""
        machine = self.machine
        table = Table(
            title="Federated learning on MNIST (Flower, in-process runner)"
            + (", quick smoke run" if self.parameters["quick"] else ""),
            columns=(
                Column("row", justify="left", no_wrap=True),
                Column("measured", justify="left"),
                Column("goal", justify="left"),
                Column("met", justify="left", no_wrap=True),
            ),
            rows=tuple((r.name, r.summary, r.goal_text, verdict(r.met)) for r in self.rows),
        )
        return (
            table,
            *(Note(f"· {note}") for note in self.notes),
            Note(
                f"· machine: {machine['cpus']} CPUs, Python {machine['python']}, torch "
                f"{machine['torch']}, flwr {machine['flwr']}; {self.seconds:.0f} s in all"
            ),
        )


def run_federated_benchmark(
    data: str | Path,
    *,
    rows: Sequence[str] = ROWS,
    quick: bool = False,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    progress: ProgressCallback | None = None,
) -> FederatedResult:
    """Run the chosen rows (module docstring); ``to_dict()`` of the result is the JSON report."""
    unknown = [r for r in rows if r not in ROWS]
    if not rows or unknown:
        raise InvalidInputError(
            "unknown federated benchmark rows",
            expected="a comma-separated subset of " + ", ".join(ROWS),
            got=", ".join(unknown) or "none",
        )
    if max_rounds < 1:
        raise InvalidInputError(
            "bad --max-rounds", expected="a whole number >= 1", got=str(max_rounds)
        )
    started = time.perf_counter()
    plan = plan_runs(Path(data), rows, quick=quick, max_rounds=max_rounds)
    outcomes: list[Outcome] = []
    for done, run in enumerate(plan):
        emit(progress, "federated benchmark", done, len(plan), unit="runs", detail=run.label)
        outcomes.append(execute(run, progress))
    emit(progress, "federated benchmark", len(plan), len(plan), unit="runs")
    report_rows: list[FederatedRow] = []
    for row in rows:
        chosen = [i for i, run in enumerate(plan) if run.row == row]
        runs, results = [plan[i] for i in chosen], [outcomes[i] for i in chosen]
        summary = summarise(row, runs, results, max_rounds=max_rounds)
        report_rows.append(FederatedRow(name=row, **summary))
    import flwr  # noqa: PLC0415
    import torch  # noqa: PLC0415

    return FederatedResult(
        veil=__version__,
        parameters={
            "data": str(data),
            "rows": list(rows),
            "quick": quick,
            "max_rounds": max_rounds,
            "runner": "simulate (Veil's in-process Grid)",
        },
        rows=tuple(report_rows),
        notes=(
            (
                "seconds per round: wall time of the round's training and aggregation (evaluation "
                "excluded); overhead: that less the clients' own training time"
            ),
            "quick runs are smoke runs: their goals are stated, not expected to be met",
        ),
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "flwr": getattr(flwr, "__version__", "unknown"),
        },
        seconds=time.perf_counter() - started,
    )
