"""What a DP-SGD run is asked to do, and what it will cost, before any step runs.

:class:`DPConfig` holds the training parameters (checked up front, with the
optimiser, the learning-rate schedule and the sampling as ``StrEnum``s);
:func:`plan_training` turns a configuration and a dataset size into a
:class:`TrainingPlan`: the steps, the sampling rate ``q = batch_size / n``,
the noise multiplier (calibrated to the target epsilon when none is given)
and the accounting the ledger is charged with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from veil._validate import whole_number
from veil.errors import InvalidInputError
from veil.ledger import (
    Mechanism,
    PrivacyEvent,
)
from veil.ledger.params import check_delta, check_positive, check_release_epsilon
from veil.train._accounting import (
    MIN_NOISE_MULTIPLIER,
    PrivacyAccounting,
    account,
    calibrate_noise,
)

__all__ = ["DPConfig", "Optimizer", "Sampling", "Schedule", "TrainingPlan", "plan_training"]


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
