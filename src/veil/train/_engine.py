"""The DP-SGD training loop: Poisson sampling, per-example clipping, secure noise.

One step: every record joins the batch independently with probability
``q = batch_size / n`` (Poisson sampling, drawn from the CSPRNG); the batch is
cut into physical chunks of at most ``max_physical_batch_size`` ("virtual
steps": the logical batch may be far larger than memory allows); each chunk
adds its clipped per-example gradients to a running sum
(:class:`~veil.train._clip.PerSampleClipper`); then Gaussian noise of standard
deviation ``sigma * C`` is added once, the sum is divided by the *expected*
batch size ``q n`` (not the drawn one, which would leak it), and the optimiser
steps. That is exactly the subsampled Gaussian mechanism the ledger records.

Shuffled fixed-size batches are refused in the private path: the usual
accounting of DP-SGD assumes Poisson sampling, and shuffling can have several
times the epsilon that accounting reports (Chua et al. 2024, "How private are
DP-SGD implementations?"). The non-private baseline (``private=False``) uses
shuffled batches, as ordinary training does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from veil._validate import whole_number
from veil.errors import InvalidInputError
from veil.ledger import (
    Mechanism,
    PrivacyEvent,
)
from veil.ledger.params import check_delta, check_positive, check_release_epsilon
from veil.progress import ProgressCallback, emit
from veil.train._accounting import (
    MIN_NOISE_MULTIPLIER,
    PrivacyAccounting,
    account,
    calibrate_noise,
    pld_epsilon,
)
from veil.train._clip import PerSampleClipper, validate_model
from veil.train._random import SecureRandom

__all__ = [
    "DPConfig",
    "Optimizer",
    "Sampling",
    "Schedule",
    "TrainingPlan",
    "TrainingReport",
    "evaluate",
    "plan_training",
    "predict_logits",
    "train",
]


class Optimizer(StrEnum):
    """The optimiser DP-SGD steps with."""

    SGD = "sgd"
    ADAM = "adam"


class Schedule(StrEnum):
    """The learning-rate schedule: constant, or cosine decay to 0 over the run."""

    CONSTANT = "constant"
    COSINE = "cosine"


class Sampling(StrEnum):
    """How batches are drawn: Poisson (the only private choice) or a shuffle."""

    POISSON = "poisson"
    SHUFFLE = "shuffle"


@dataclass(frozen=True)
class DPConfig:
    """How to train.

    Attributes:
        epochs: Passes over the data (``steps = epochs * round(n / batch_size)``).
        batch_size: The *expected* batch size ``q n`` of Poisson sampling.
        max_grad_norm: The clipping bound ``C`` on each example's gradient.
        epsilon: Target epsilon; the noise multiplier is calibrated to it.
        delta: Target delta (default 1e-5; keep it below 1/n).
        noise_multiplier: Give ``sigma`` directly instead of ``epsilon``.
        learning_rate, optimizer, momentum: The optimiser (``sgd`` or ``adam``).
        schedule: ``constant`` or ``cosine`` (the learning rate decays to 0 over the
            run's steps; post-processing of the noisy gradients, so free of privacy cost).
        max_physical_batch_size: The most examples in memory at once.
        sampling: ``poisson`` (the only private choice) or ``shuffle``
            (fixed-size batches: refused when ``private``).
        private: ``False`` trains the same model without clipping or noise
            (the baseline), spending no budget.
        seed: Reproducible randomness: the run is then **not private**.
    """

    epochs: int = 1
    batch_size: int = 256
    max_grad_norm: float = 1.0
    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    learning_rate: float = 0.5
    optimizer: Optimizer | str = Optimizer.SGD
    momentum: float = 0.0
    schedule: Schedule | str = Schedule.CONSTANT
    max_physical_batch_size: int = 1024
    sampling: Sampling | str = Sampling.POISSON
    private: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_physical_batch_size"):
            value = getattr(self, name)
            whole_number(value, name)
        check_positive(self.max_grad_norm, "max_grad_norm")
        check_positive(self.learning_rate, "learning_rate")
        if not 0 <= self.momentum < 1:
            raise InvalidInputError(
                "momentum out of range", expected="0 <= momentum < 1", got=repr(self.momentum)
            )
        if self.optimizer not in ("sgd", "adam"):
            raise InvalidInputError(
                "unknown optimizer", expected="sgd or adam", got=repr(self.optimizer)
            )
        if self.schedule not in ("constant", "cosine"):
            raise InvalidInputError(
                "unknown schedule", expected="constant or cosine", got=repr(self.schedule)
            )
        if self.sampling not in ("poisson", "shuffle"):
            raise InvalidInputError(
                "unknown sampling", expected="poisson or shuffle", got=repr(self.sampling)
            )
        # Plain strings are accepted; the fields hold the members (equal to the strings).
        object.__setattr__(self, "optimizer", Optimizer(self.optimizer))
        object.__setattr__(self, "schedule", Schedule(self.schedule))
        object.__setattr__(self, "sampling", Sampling(self.sampling))
        if self.private:
            self._check_private()

    def _check_private(self) -> None:
        if self.sampling != "poisson":
            raise InvalidInputError(
                "DP-SGD with shuffled fixed-size batches is refused",
                expected="sampling='poisson' (each record joins each batch independently)",
                got="sampling='shuffle'",
                fix="keep the default Poisson sampling: the epsilon of shuffled batches is not "
                "the Poisson epsilon (it can be several times larger) and Veil will not report it",
            )
        check_delta(self.delta, allow_zero=False)
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise InvalidInputError(
                "give a target epsilon or a noise multiplier, not both or neither",
                expected="epsilon=E (calibrated) or noise_multiplier=S",
                got=f"epsilon={self.epsilon}, noise_multiplier={self.noise_multiplier}",
                fix="for example --epsilon 3 --delta 1e-5",
            )
        if self.epsilon is not None:
            # Refused here, before any calibration: epsilon 1e4 once grew to 24 GB calibrating.
            check_release_epsilon(self.epsilon)
        if self.noise_multiplier is not None:
            check_positive(self.noise_multiplier, "noise_multiplier")
            if self.noise_multiplier < MIN_NOISE_MULTIPLIER:
                raise InvalidInputError(
                    f"noise multiplier {self.noise_multiplier:g} is below the floor "
                    f"{MIN_NOISE_MULTIPLIER:g}",
                    expected=f"noise_multiplier >= {MIN_NOISE_MULTIPLIER:g}",
                    got=repr(self.noise_multiplier),
                    fix="add more noise; for a baseline without privacy, train with "
                    "private=False (veil train --non-private)",
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPConfig:
        """The config a saved model was trained with (unknown keys are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TrainingPlan:
    """What a run will do and cost, fixed before it starts (and before the ledger is charged)."""

    config: DPConfig
    n_examples: int
    steps_per_epoch: int
    accounting: PrivacyAccounting | None

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    @property
    def sample_rate(self) -> float:
        return min(1.0, self.config.batch_size / self.n_examples)

    def mechanism(self) -> Mechanism:
        """The ledger's description of the run: one Poisson-subsampled Gaussian event."""
        if self.accounting is None:
            raise InvalidInputError(
                "a non-private run has no privacy mechanism",
                expected="private=True",
                got="private=False",
            )
        return Mechanism.subsampled_gaussian(
            self.accounting.sample_rate,
            self.accounting.noise_multiplier,
            self.accounting.steps,
            max_grad_norm=self.config.max_grad_norm,
            expected_batch_size=self.config.batch_size,
            dataset_size=self.n_examples,
            sampling="poisson",
        )

    def event(self, what: str, details: dict[str, Any] | None = None) -> PrivacyEvent:
        return PrivacyEvent(
            what=what, mechanisms=(self.mechanism(),), operation="training", details=details or {}
        )


def plan_training(config: DPConfig, n_examples: int) -> TrainingPlan:
    """Fix the steps and the noise of a run over ``n_examples`` records (refuses unreachable targets)."""
    if n_examples < 1:
        raise InvalidInputError("no training examples", expected=">= 1 example", got="0")
    if config.private and config.batch_size > n_examples:
        raise InvalidInputError(
            "the batch size exceeds the number of examples",
            expected=f"--batch-size <= {n_examples}",
            got=str(config.batch_size),
        )
    if config.private and config.delta >= 1.0 / n_examples:
        raise InvalidInputError(
            "delta is too large for this dataset",
            expected=f"delta < 1/n = {1.0 / n_examples:.3g} (well below it, e.g. 1/n^1.1)",
            got=f"delta={config.delta:g} for {n_examples} examples",
            fix="pass a smaller --delta: a mechanism that publishes one random record in full "
            "is already (0, 1/n)-DP",
        )
    steps_per_epoch = max(1, round(n_examples / config.batch_size))
    if not config.private:
        return TrainingPlan(config, n_examples, steps_per_epoch, None)
    q = min(1.0, config.batch_size / n_examples)
    steps = steps_per_epoch * config.epochs
    sigma = config.noise_multiplier
    if sigma is None:
        assert config.epsilon is not None  # noqa: S101 - DPConfig guarantees one of the two
        sigma = calibrate_noise(config.epsilon, config.delta, q, steps)
    return TrainingPlan(config, n_examples, steps_per_epoch, account(q, sigma, steps, config.delta))


DIAGNOSTICS_NOTE = (
    "loss and accuracy in the history are exact figures over the private training batches: "
    "diagnostics for the trainer, not covered by the privacy guarantee; do not publish them"
)


@dataclass
class TrainingReport:
    """What happened: per-epoch loss, accuracy and epsilon spent, and the timing."""

    plan: TrainingPlan
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    secure_rng: bool = True

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(1, len(self.history))

    def to_dict(self, *, diagnostics: bool = True) -> dict[str, Any]:
        """JSON-ready; ``diagnostics=False`` drops the exact (non-private) loss and accuracy."""
        history = (
            self.history
            if diagnostics
            else [
                {k: v for k, v in h.items() if k not in ("loss", "accuracy")} for h in self.history
            ]
        )
        return {
            "config": self.plan.config.to_dict(),
            "n_examples": self.plan.n_examples,
            "steps": self.plan.steps,
            "accounting": None if self.plan.accounting is None else self.plan.accounting.to_dict(),
            "history": history,
            "diagnostics_note": DIAGNOSTICS_NOTE if diagnostics else None,
            "seconds": self.seconds,
            "seconds_per_epoch": self.seconds_per_epoch,
            "secure_rng": self.secure_rng,
        }


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target, reduction="none")


def check_training_data(inputs: torch.Tensor, targets: torch.Tensor, n_classes: int) -> None:
    """Refuse NaN/inf features, mismatched lengths, and labels outside ``range(n_classes)``."""
    if inputs.shape[0] != targets.shape[0]:
        raise InvalidInputError(
            "features and labels differ in length",
            expected=f"{inputs.shape[0]} labels",
            got=str(targets.shape[0]),
        )
    if not torch.isfinite(inputs).all():
        # The message says that, not where: an error must not quote private records.
        raise InvalidInputError(
            "the training data holds NaN or infinite values",
            expected="finite features",
            got="non-finite values",
            fix="impute missing values (at a declared value, not one read from the data) first",
        )
    if targets.dtype.is_floating_point or targets.dim() != 1:
        raise InvalidInputError(
            "labels must be one integer class per example",
            expected="a 1-D integer tensor",
            got=f"{targets.dtype} of shape {tuple(targets.shape)}",
        )
    outside = (targets < 0) | (targets >= n_classes)
    if bool(outside.any()):
        raise InvalidInputError(
            "labels outside the declared classes",
            expected=f"class indices 0..{n_classes - 1}",
            got=f"{int(outside.sum())} labels outside that range",
            fix="declare every class (categories of the label column) or drop those rows",
        )


def _optimizer(model: nn.Module, config: DPConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum)


class _Schedule:
    """Sets the learning rate before each step (cosine decay over the run, or constant)."""

    def __init__(self, optimizer: torch.optim.Optimizer, plan: TrainingPlan) -> None:
        self.optimizer, self.plan, self.step_count = optimizer, plan, 0

    def step(self) -> None:
        config = self.plan.config
        if config.schedule == "cosine":
            progress = self.step_count / max(1, self.plan.steps)
            lr = 0.5 * config.learning_rate * (1 + math.cos(math.pi * progress))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.step_count += 1
        self.optimizer.step()

    def zero_grad(self, *, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)


def train(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    plan: TrainingPlan,
    *,
    n_classes: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    progress: ProgressCallback | None = None,
) -> TrainingReport:
    """Train ``model`` in place by ``plan`` (DP-SGD, or the plain baseline when not private).

    Check the data and the model, and charge the ledger, *before* calling this:
    :func:`veil.train.fit_private` does all three in that order.
    """
    config = plan.config
    check_training_data(inputs, targets, n_classes)
    if inputs.shape[0] != plan.n_examples:
        raise InvalidInputError(
            "the plan was made for another dataset size",
            expected=str(plan.n_examples),
            got=str(inputs.shape[0]),
        )
    rng = SecureRandom(config.seed)
    optimizer = _Schedule(_optimizer(model, config), plan)
    report = TrainingReport(plan=plan, secure_rng=rng.secure)
    model.train()
    start = time.perf_counter()
    if config.private:
        validate_model(model)
        clipper = PerSampleClipper(model, config.max_grad_norm)
        try:
            probe = torch.arange(min(3, inputs.shape[0]))
            clipper.verify(inputs[probe], targets[probe], loss_fn)
            _private_epochs(
                inputs,
                targets,
                plan,
                clipper=clipper,
                optimizer=optimizer,
                rng=rng,
                loss_fn=loss_fn,
                report=report,
                progress=progress,
            )
        finally:
            clipper.close()
    else:
        _plain_epochs(
            model,
            inputs,
            targets,
            plan,
            optimizer=optimizer,
            rng=rng,
            loss_fn=loss_fn,
            report=report,
            progress=progress,
        )
    report.seconds = time.perf_counter() - start
    model.eval()
    return report


def _epoch_progress(
    progress: ProgressCallback | None,
    plan: TrainingPlan,
    epoch: int,
    step: int,
    stats: dict[str, float],
) -> None:
    if progress is None:
        return
    detail = f"loss {stats['loss']:.3f}  acc {stats['accuracy']:.1%}"
    if "epsilon" in stats:
        detail += f"  eps {stats['epsilon']:.2f}"
    emit(
        progress,
        f"epoch {epoch}/{plan.config.epochs}",
        step,
        plan.steps_per_epoch,
        unit="steps",
        detail=detail,
    )


def _private_epochs(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    plan: TrainingPlan,
    *,
    clipper: PerSampleClipper,
    optimizer: _Schedule,
    rng: SecureRandom,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    report: TrainingReport,
    progress: ProgressCallback | None,
) -> None:
    config, accounting = plan.config, plan.accounting
    assert accounting is not None  # noqa: S101 - private plans are accounted
    n = plan.n_examples
    q = accounting.sample_rate
    std = accounting.noise_multiplier * config.max_grad_norm
    expected = q * n
    params = clipper.params
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        for step in range(1, plan.steps_per_epoch + 1):
            index = rng.bernoulli(n, q).nonzero().squeeze(1)
            # An empty draw (possible under Poisson sampling) still releases noise: the
            # mechanism's output is sum + noise whatever the batch, so the step must run.
            for chunk in index.split(config.max_physical_batch_size) if index.numel() else ():
                losses, output, _ = clipper.accumulate(inputs[chunk], targets[chunk], loss_fn)
                loss_sum += float(losses.sum())
                correct += float((output.argmax(1) == targets[chunk]).sum())
                seen += chunk.numel()
            grads = clipper.take()
            flat_noise = rng.normal(total, std).to(device=grads[0].device, dtype=grads[0].dtype)
            noise = [z.view_as(g) for z, g in zip(flat_noise.split(sizes), grads, strict=True)]
            torch._foreach_add_(grads, noise)
            torch._foreach_mul_(grads, 1.0 / expected)
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % 10 == 0 or step == plan.steps_per_epoch:
                _epoch_progress(
                    progress,
                    plan,
                    epoch,
                    step,
                    {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)},
                )
        seconds = time.perf_counter() - epoch_start
        spent = pld_epsilon(
            q, accounting.noise_multiplier, epoch * plan.steps_per_epoch, config.delta
        )
        stats = {
            "epoch": epoch,
            "loss": loss_sum / max(seen, 1),
            "accuracy": correct / max(seen, 1),
            "epsilon": spent,
            "seconds": seconds,
        }
        report.history.append(stats)
        _epoch_progress(progress, plan, epoch, plan.steps_per_epoch, stats)


def _plain_epochs(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    plan: TrainingPlan,
    *,
    optimizer: _Schedule,
    rng: SecureRandom,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    report: TrainingReport,
    progress: ProgressCallback | None,
) -> None:
    config = plan.config
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        order = rng.permutation(plan.n_examples)
        for step, index in enumerate(order.split(config.batch_size), start=1):
            output = model(inputs[index])
            losses = loss_fn(output, targets[index])
            losses.mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += float(losses.detach().sum())
            correct += float((output.detach().argmax(1) == targets[index]).sum())
            seen += index.numel()
            if step % 10 == 0:
                _epoch_progress(
                    progress,
                    plan,
                    epoch,
                    step,
                    {"loss": loss_sum / seen, "accuracy": correct / seen},
                )
        stats = {
            "epoch": epoch,
            "loss": loss_sum / max(seen, 1),
            "accuracy": correct / max(seen, 1),
            "seconds": time.perf_counter() - epoch_start,
        }
        report.history.append(stats)
        _epoch_progress(progress, plan, epoch, plan.steps_per_epoch, stats)


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The model's logits on ``inputs``, in eval mode, ``batch_size`` rows at a time."""
    model.eval()
    return (
        torch.cat([model(chunk) for chunk in inputs.split(batch_size)])
        if inputs.shape[0]
        else torch.zeros(0)
    )


def evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of ``model`` on held-out data."""
    if inputs.shape[0] == 0:
        return math.nan
    return float((predict_logits(model, inputs).argmax(1) == targets).float().mean())
