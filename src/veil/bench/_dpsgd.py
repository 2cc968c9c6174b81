"""``veil bench dpsgd``: what DP-SGD costs in time and accuracy (``veil bench mnist``: ``_mnist``).

* **Timing** (``dpsgd``): seconds per epoch on MNIST for the same model and the
  same batch size, non-private (shuffled batches, one ``backward``) against
  Veil's DP-SGD (Poisson sampling, one-backward clipping, CSPRNG noise) and,
  for reference, Opacus 1.6's ghost clipping on the same Poisson batches.
* **Accuracy** (``dpsgd``): the tanh CNN at epsilon 3, delta 1e-5 on MNIST, and
  DP logistic regression against the non-private one on UCI Adult at epsilon 1.

The data is the real MNIST and UCI Adult from ``--data`` (``../shared/data`` by
default); nothing is downloaded.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from veil.bench._common import ADULT_NUMERIC_BOUNDS, machine, mnist_tensors
from veil.bench._mnist import MnistRun, check_sizes, fit_mnist, model_spec
from veil.bench._result import (
    BenchResult,
    Column,
    Note,
    Table,
    View,
    fixed,
    percent,
    ratio,
    verdict,
)
from veil.data import load_table
from veil.data.readers import ADULT_CATEGORIES
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit
from veil.train import DPConfig, FeatureEncoder, build_model, evaluate, plan_training, train

__all__ = ["DpsgdResult", "TimingRow", "run_dpsgd_benchmark"]

TIMING_GOAL = 1.3
ACCURACY_GOAL = 0.98
ADULT_GOAL_POINTS = 1.5


@dataclass(frozen=True, kw_only=True)
class TimingRow:
    """Seconds per epoch of one model: non-private, Veil's DP-SGD, Opacus (ghost clipping)."""

    model: str
    batch_size: int
    epochs_timed: int
    non_private_s_per_epoch: float
    veil_dp_s_per_epoch: float
    veil_ratio: float
    opacus_ghost_s_per_epoch: float | None
    opacus_ratio: float | None


@dataclass(frozen=True, kw_only=True)
class DpsgdResult(BenchResult):
    """``veil bench dpsgd``: timing per model, MNIST at epsilon 3, Adult at epsilon 1, goals."""

    benchmark: str = "dpsgd"
    machine: Mapping[str, Any]
    timing: tuple[TimingRow, ...]
    mnist_eps3: tuple[MnistRun, ...] | None
    adult: Mapping[str, Any] | None
    goals: Mapping[str, Any]

    def view(self) -> View:
        """The timing table, then accuracy lines and the goals."""
        table = Table(
            title="DP-SGD vs non-private, seconds per epoch on MNIST (same model and batch)",
            columns=(
                Column("model"),
                Column("batch"),
                Column("non-private s", fixed(".3f")),
                Column("Veil DP-SGD s", fixed(".3f")),
                Column("x", ratio),
                Column("Opacus ghost s", fixed(".3f")),
                Column("x", ratio),
            ),
            rows=tuple(
                (
                    r.model,
                    r.batch_size,
                    r.non_private_s_per_epoch,
                    r.veil_dp_s_per_epoch,
                    r.veil_ratio,
                    r.opacus_ghost_s_per_epoch,
                    r.opacus_ratio,
                )
                for r in self.timing
            ),
        )
        notes = [
            Note(
                f"· MNIST {run.model} at epsilon {run.epsilon:.3f} (delta 1e-5; RDP "
                f"{run.epsilon_rdp:.3f}, PRV {run.epsilon_prv or float('nan'):.3f}), "
                f"{run.epochs} epochs, noise multiplier {run.noise_multiplier:.3f}: "
                f"test accuracy {percent(run.test_accuracy)}"
            )
            for run in self.mnist_eps3 or ()
        ]
        adult = self.adult
        if adult:
            notes.append(
                Note(
                    "· Adult logistic regression: non-private "
                    f"{percent(adult['non_private']['test_accuracy'])}, DP at epsilon 1 "
                    f"{percent(adult['dp_eps1']['test_accuracy'])} (gap "
                    f"{adult['gap_points']:.2f} points; majority class "
                    f"{percent(adult['majority_class_accuracy'])})"
                )
            )
        goals, machine = self.goals, self.machine
        timing_goals = ", ".join(f"{m} {verdict(v)}" for m, v in goals["dp_within_1_3x"].items())
        accuracy_goals = goals["mnist_98_at_eps3"]
        accuracy_text = (
            "n/a"
            if accuracy_goals is None
            else ", ".join(f"{m} {verdict(v)}" for m, v in accuracy_goals.items())
        )
        return (
            table,
            *notes,
            Note(
                f"· goals: DP-SGD within 1.3x non-private: {timing_goals}; MNIST >= 98% at "
                f"epsilon 3: {accuracy_text}; Adult within 1.5 points at epsilon 1: "
                f"{verdict(goals['adult_within_1_5_points'])}"
            ),
            Note(
                f"· machine: {machine['cpus']} CPUs, torch {machine['torch']} "
                f"({machine['torch_threads']} threads); times are noisy on a shared machine: "
                "compare the ratios"
            ),
        )


def _time_veil(
    kind: str, x: torch.Tensor, y: torch.Tensor, *, private: bool, batch: int, epochs: int
) -> list[float]:
    torch.manual_seed(0)  # not-private: weight initialisation only, so runs are comparable
    model = build_model(model_spec(kind))
    if private:
        config = DPConfig(epochs=epochs, batch_size=batch, noise_multiplier=1.0, learning_rate=0.1)
    else:
        config = DPConfig(
            epochs=epochs, batch_size=batch, private=False, sampling="shuffle", learning_rate=0.05
        )
    report = train(model, x, y, plan_training(config, x.shape[0]), n_classes=10)
    return [h["seconds"] for h in report.history]


def _time_opacus(
    kind: str, x: torch.Tensor, y: torch.Tensor, *, batch: int, epochs: int
) -> list[float]:
    """Opacus 1.6 ghost clipping with its own Poisson loader over a batched dataset."""
    from opacus import PrivacyEngine  # noqa: PLC0415 - optional, heavy

    class Batched(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
        # __getitems__ fetches a whole batch by fancy indexing: no per-example Python loop.
        def __len__(self) -> int:
            return int(x.shape[0])

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return x[i], y[i]

        def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            chosen = torch.as_tensor(index, dtype=torch.long)
            return x[chosen], y[chosen]

    def collate(batch: Any) -> Any:
        return batch

    torch.manual_seed(0)  # not-private: weight initialisation only, so runs are comparable
    model = build_model(model_spec(kind))
    loader = torch.utils.data.DataLoader(Batched(), batch_size=batch, collate_fn=collate)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure_mode and hook internals
        engine = PrivacyEngine()
        model, optimizer, criterion, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            criterion=nn.CrossEntropyLoss(),
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
            grad_sample_mode="ghost",
        )
        seconds = []
        for _ in range(epochs):
            start = time.perf_counter()
            for inputs, targets in loader:
                if len(inputs) == 0:
                    continue
                optimizer.zero_grad()
                loss = criterion(model(inputs), targets)
                loss.backward()
                optimizer.step()
            seconds.append(time.perf_counter() - start)
    return seconds


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _timing(
    x: torch.Tensor,
    y: torch.Tensor,
    models: Sequence[str],
    *,
    batch: int,
    epochs: int,
    opacus: bool,
    progress: ProgressCallback | None,
) -> list[TimingRow]:
    rows = []
    total = len(models) * (3 if opacus else 2)
    done = 0
    for kind in models:
        plain = _time_veil(kind, x, y, private=False, batch=batch, epochs=epochs)
        done += 1
        emit(progress, "timing epochs", done, total, unit="runs")
        veil = _time_veil(kind, x, y, private=True, batch=batch, epochs=epochs)
        done += 1
        emit(progress, "timing epochs", done, total, unit="runs")
        ghost = None
        if opacus:
            ghost = _median(_time_opacus(kind, x, y, batch=batch, epochs=epochs))
            done += 1
            emit(progress, "timing epochs", done, total, unit="runs")
        rows.append(
            TimingRow(
                model=kind,
                batch_size=batch,
                epochs_timed=epochs,
                non_private_s_per_epoch=_median(plain),
                veil_dp_s_per_epoch=_median(veil),
                veil_ratio=_median(veil) / _median(plain),
                opacus_ghost_s_per_epoch=ghost,
                opacus_ratio=None if ghost is None else ghost / _median(plain),
            )
        )
    return rows


def _adult(
    data: Path, epochs: int, *, train_size: int | None = None, test_size: int | None = None
) -> dict[str, Any]:
    folder = data / "adult"
    train_frame = load_table(folder / "adult.data", format="adult").iloc[:train_size]
    test_frame = load_table(folder / "adult.test", format="adult").iloc[:test_size]
    categorical = {k: v for k, v in ADULT_CATEGORIES.items() if k != "income"}
    encoder = FeatureEncoder(
        ADULT_NUMERIC_BOUNDS, categorical, (*ADULT_NUMERIC_BOUNDS, *categorical)
    )
    classes = list(ADULT_CATEGORIES["income"])
    x, xt = encoder.encode(train_frame), encoder.encode(test_frame)
    y = torch.tensor([classes.index(v) for v in train_frame["income"]])
    yt = torch.tensor([classes.index(v) for v in test_frame["income"]])
    results: dict[str, dict[str, Any]] = {}
    for label, config in (
        (
            "non_private",
            DPConfig(
                epochs=epochs, batch_size=512, private=False, sampling="shuffle", learning_rate=0.5
            ),
        ),
        (
            "dp_eps1",
            DPConfig(epochs=epochs, batch_size=512, epsilon=1.0, delta=1e-5, learning_rate=0.5),
        ),
    ):
        torch.manual_seed(0)  # not-private: weight initialisation only, so runs are comparable
        model = build_model({"kind": "logreg", "input_shape": [x.shape[1]], "n_classes": 2})
        plan = plan_training(config, x.shape[0])
        train(model, x, y, plan, n_classes=2)
        results[label] = {
            "test_accuracy": evaluate(model, xt, yt),
            "epsilon": None if plan.accounting is None else plan.accounting.epsilon,
            "noise_multiplier": None
            if plan.accounting is None
            else plan.accounting.noise_multiplier,
        }
    gap = 100 * (results["non_private"]["test_accuracy"] - results["dp_eps1"]["test_accuracy"])
    return {
        "features": x.shape[1],
        "train_rows": x.shape[0],
        "test_rows": xt.shape[0],
        "epochs": epochs,
        "majority_class_accuracy": float(max(yt.float().mean(), 1 - yt.float().mean())),
        **results,
        "gap_points": gap,
    }


def run_dpsgd_benchmark(
    data: Path,
    *,
    models: Sequence[str] = ("mlp", "cnn"),
    batch_size: int = 256,
    timing_epochs: int = 2,
    train_size: int | None = None,
    test_size: int | None = None,
    accuracy_epochs: int = 30,
    accuracy_models: Sequence[str] = ("scatternet", "cnn"),
    opacus: bool = True,
    accuracy: bool = True,
    adult_epochs: int = 10,
    progress: ProgressCallback | None = None,
) -> DpsgdResult:
    """Timing of DP-SGD against non-private training, MNIST accuracy at epsilon 3, Adult at epsilon 1.

    ``train_size`` and ``test_size`` cut the MNIST and Adult splits to their first rows (a
    quick run; the goals are measured on the full splits).
    """
    check_sizes(train_size, timing_epochs)
    if test_size is not None and test_size < 100:  # noqa: PLR2004 - an accuracy needs some rows
        raise InvalidInputError("--test-size too small", expected=">= 100", got=str(test_size))
    x, y, xt, yt = mnist_tensors(data)
    if train_size is not None:
        x, y = x[:train_size], y[:train_size]
    if test_size is not None:
        xt, yt = xt[:test_size], yt[:test_size]
    timing = _timing(
        x, y, models, batch=batch_size, epochs=timing_epochs, opacus=opacus, progress=progress
    )
    mnist_eps3: tuple[MnistRun, ...] | None = None
    adult = None
    if accuracy:
        runs = []
        for i, kind in enumerate(accuracy_models):
            emit(progress, "MNIST at epsilon 3", i, len(accuracy_models), unit="runs")
            runs.append(fit_mnist(x, y, xt, yt, epsilon=3.0, epochs=accuracy_epochs, kind=kind))
        emit(
            progress, "MNIST at epsilon 3", len(accuracy_models), len(accuracy_models), unit="runs"
        )
        mnist_eps3 = tuple(runs)
        adult = _adult(data, adult_epochs, train_size=train_size, test_size=test_size)
    return DpsgdResult(
        machine=machine(),
        timing=tuple(timing),
        mnist_eps3=mnist_eps3,
        adult=adult,
        goals={
            "dp_within_1_3x": {r.model: r.veil_ratio <= TIMING_GOAL for r in timing},
            "mnist_98_at_eps3": None
            if mnist_eps3 is None
            else {r.model: r.test_accuracy >= ACCURACY_GOAL for r in mnist_eps3},
            "adult_within_1_5_points": None
            if adult is None
            else adult["gap_points"] <= ADULT_GOAL_POINTS,
        },
    )
