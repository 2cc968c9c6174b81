"""The runs behind ``veil bench federated``: each row's configurations, and running one.

Every row of the benchmark is one or more :class:`~veil.federated.FederatedConfig`
runs; :func:`plan_runs` lists them (shrunk to smoke runs when ``quick``) and
:func:`execute` runs one through :func:`~veil.federated.federate`, keeping its
per-round history and stopping early once a run's target accuracy is reached.
:mod:`veil.bench._federated_score` turns the histories into each row's figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.federated import FederatedConfig, federate
from veil.progress import ProgressCallback, ProgressEvent, emit

__all__ = [
    "ATTACKS",
    "DEFAULT_MAX_ROUNDS",
    "ROBUST",
    "ROWS",
    "SECAGG_SHARES",
    "Outcome",
    "Run",
    "execute",
    "plan_runs",
]

ROWS = ("mlp-iid", "secagg-overhead", "cnn-iid", "pathological", "dp-fedavg", "poisoning")
DEFAULT_MAX_ROUNDS = 300
EPSILONS = (2.0, 4.0, 8.0)
STRATEGIES = ("fedavg", "median", "trimmed-mean", "multikrum", "bulyan", "fedavg+norm-bound")
ROBUST = STRATEGIES[1:]
ATTACKS = (("label-flip", 0.2), ("backdoor", 0.1))
NORM_BOUND = 3.0  # L2 bound on each update for fedavg+norm-bound
SECAGG_SHARES = 5
QUICK_LIMIT = 2000
QUICK_ROUNDS = 2


@dataclass(frozen=True)
class Run:
    """One federated run of a row: its label, its configuration, and where it may stop."""

    row: str
    label: str
    config: FederatedConfig
    stop_at: float | None = None


# A run's per-round history and its privacy summary (``None`` when stopped early).
Outcome = tuple[list[dict[str, Any]], dict[str, Any] | None]


class _Reached(Exception):  # noqa: N818 - a signal, not an error
    """Raised from the round callback to end a run once its target accuracy is reached."""


def _base(data: Path, *, quick: bool) -> FederatedConfig:
    config = FederatedConfig(
        dataset="mnist",
        data=str(data / "mnist"),
        model="mlp",
        hidden=128,
        clients=10,
        partition="iid",
        sample_rate=1.0,
        rounds=10,
        local_epochs=1,
        batch_size=32,
        lr=0.05,
        momentum=0.9,
        seed=0,
    )
    if quick:
        config = config.replace(model="logreg", limit=QUICK_LIMIT, rounds=QUICK_ROUNDS, clients=4)
    return config


def plan_runs(  # noqa: C901, PLR0912 - one block per row
    data: Path, rows: Sequence[str], *, quick: bool, max_rounds: int
) -> list[Run]:
    """The runs of the chosen rows, in order (``quick`` shrinks each to a smoke run)."""
    base = _base(data, quick=quick)
    shrink: dict[str, Any] = (
        {"model": "logreg", "limit": QUICK_LIMIT, "rounds": QUICK_ROUNDS} if quick else {}
    )
    runs: list[Run] = []
    for row in rows:
        if row == "mlp-iid":
            runs.append(Run(row, "mlp-iid", base))
        elif row == "secagg-overhead":
            for clients in (5, 10) if quick else (10, 50):
                plain = base.replace(clients=clients, rounds=QUICK_ROUNDS if quick else 3)
                runs.append(Run(row, f"{clients} plain", plain))
                secure = plain.replace(secagg=True, secagg_shares=SECAGG_SHARES)
                runs.append(Run(row, f"{clients} secagg", secure))
        elif row == "cnn-iid":
            cnn = base.replace(model="cnn", lr=0.05, rounds=20)
            runs.append(Run(row, "cnn-iid", cnn.replace(**shrink) if quick else cnn))
        elif row == "pathological":
            config = base.replace(
                model="cnn",
                clients=100,
                partition="pathological",
                classes_per_client=2,
                sample_rate=0.1,
                local_epochs=5,
                batch_size=10,
                lr=0.05,
                rounds=max_rounds,
            )
            if quick:
                config = config.replace(clients=10, sample_rate=0.5, local_epochs=1, **shrink)
            runs.append(Run(row, "pathological", config, stop_at=0.99))
        elif row == "dp-fedavg":
            for epsilon in EPSILONS:
                config = base.replace(
                    clients=1000,
                    sample_rate=0.1,
                    dp="central",
                    target_epsilon=epsilon,
                    delta=1e-5,
                    max_epsilon=epsilon,
                    clip=1.0,
                    batch_size=20,
                    rounds=100,
                    server_lr=1.0,
                )
                if quick:
                    config = config.replace(clients=20, sample_rate=0.5, **shrink)
                runs.append(Run(row, f"eps {epsilon:g}", config))
        elif row == "poisoning":
            clean = base.replace(clients=20, rounds=5)
            if quick:
                clean = clean.replace(**shrink)
            runs.append(Run(row, "clean fedavg", clean))
            for attack, malicious in ATTACKS:
                f = round(malicious * clean.clients)
                attacked = clean.replace(attack=attack, malicious=malicious, byzantine=f)
                for strategy in STRATEGIES:
                    if strategy == "fedavg+norm-bound":
                        config = attacked.replace(strategy="fedavg", norm_bound=NORM_BOUND)
                    elif strategy == "trimmed-mean":
                        config = attacked.replace(strategy=strategy, trim=0.2)
                    else:
                        config = attacked.replace(strategy=strategy)
                    runs.append(Run(row, f"{attack} {strategy}", config))
    return runs


def execute(run: Run, progress: ProgressCallback | None) -> Outcome:
    """The run's per-round history and privacy summary (``None`` when stopped early)."""
    history: list[dict[str, Any]] = []

    def on_round(row: dict[str, Any]) -> None:
        history.append(dict(row))
        if run.stop_at is not None and row["accuracy"] >= run.stop_at:
            raise _Reached

    def relabel(event: ProgressEvent) -> None:
        emit(
            progress,
            f"{run.row}: {run.label}",
            event.completed,
            event.total,
            unit="round",
            detail=event.detail,
        )

    try:
        result = federate(run.config, progress=relabel, on_round=on_round)
    except _Reached:
        return history, None
    return history, result.privacy
