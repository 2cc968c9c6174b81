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
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit
from veil.train._accounting import (
    pld_epsilon,
)
from veil.train._clip import PerSampleClipper, validate_model
from veil.train._plan import DPConfig, TrainingPlan
from veil.train._random import SecureRandom

__all__ = ["TrainingReport", "check_training_data", "evaluate", "predict_logits", "train"]


DIAGNOSTICS_NOTE = (
    "loss and accuracy in the history are exact figures over the private training batches: "
    "diagnostics for the trainer, not covered by the privacy guarantee; do not publish them"
)


@dataclass(frozen=True)
class TrainingReport:
    """What happened: per-epoch loss, accuracy and epsilon spent, and the timing (built once
    the run ends)."""

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
    history: list[dict[str, float]] = []
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
                history=history,
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
            history=history,
            progress=progress,
        )
    seconds = time.perf_counter() - start
    model.eval()
    return TrainingReport(plan=plan, history=history, seconds=seconds, secure_rng=rng.secure)


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
    history: list[dict[str, float]],
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
        history.append(stats)
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
    history: list[dict[str, float]],
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
        history.append(stats)
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
