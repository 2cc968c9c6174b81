"""What ``veil bench audit`` attacks: the record pools and the recipes that train the targets.

The pools are UCI Adult encoded as features and the MNIST images flattened
(:func:`audit_pool`, which the audit tests share). A :class:`Recipe` trains a
model of one recipe on any slice of a pool, its DP-SGD noise fixed by the
target's size, so that the reference models match the target.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from veil.audit import Classifier, as_classifier
from veil.bench._common import ADULT_NUMERIC_BOUNDS, mnist_tensors
from veil.data import load_table
from veil.data.readers import ADULT_CATEGORIES
from veil.errors import InvalidInputError, NotFoundError
from veil.train import (
    DPConfig,
    FeatureEncoder,
    TrainingPlan,
    build_model,
    calibrate_noise,
    train,
)

__all__ = ["DATASETS", "DELTA", "RECIPES", "Recipe", "audit_pool"]

DATASETS = ("adult", "mnist")
DELTA = 1e-5

# name -> hidden layers, DPConfig fields, target epsilon (None: not private), per-dataset overrides
RECIPES: dict[str, dict[str, Any]] = {
    "overfit": {
        "hidden": [512, 512],
        "config": {"epochs": 100, "batch_size": 128, "optimizer": "adam", "learning_rate": 3e-3},
        "epsilon": None,
        "mnist": {"epochs": 30},  # MNIST is memorised sooner; 100 epochs would only cost time
    },
    "regularised": {
        "hidden": [64],
        "config": {"epochs": 5, "batch_size": 128, "optimizer": "adam", "learning_rate": 1e-3},
        "epsilon": None,
    },
    "dp_eps1": {
        "hidden": [64],
        "config": {"epochs": 10, "batch_size": 256, "learning_rate": 0.5, "max_grad_norm": 1.0},
        "epsilon": 1.0,
    },
    "dp_eps8": {
        "hidden": [64],
        "config": {"epochs": 10, "batch_size": 256, "learning_rate": 0.5, "max_grad_norm": 1.0},
        "epsilon": 8.0,
    },
}
TINY = {"epochs": 2}


def _adult(data: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    folder = data / "adult"
    if not (folder / "adult.data").is_file():
        raise NotFoundError(
            "the UCI Adult files are missing",
            expected=f"adult.data and adult.test in {folder}",
            got="no such files",
            fix="pass --data DIR holding mnist/ and adult/ (the project's shared data)",
        )
    frame = pd.concat(
        [
            load_table(folder / "adult.data", format="adult"),
            load_table(folder / "adult.test", format="adult"),
        ],
        ignore_index=True,
    )
    categorical = {k: v for k, v in ADULT_CATEGORIES.items() if k != "income"}
    encoder = FeatureEncoder(
        ADULT_NUMERIC_BOUNDS, categorical, (*ADULT_NUMERIC_BOUNDS, *categorical)
    )
    classes = list(ADULT_CATEGORIES["income"])
    y = np.array([classes.index(v) for v in frame["income"]], dtype=np.int64)
    return encoder.encode(frame).numpy(), y


def _mnist_pool(data: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    x, y, xt, yt = mnist_tensors(data)
    return (
        torch.cat([x, xt]).reshape(-1, 28 * 28).numpy(),
        torch.cat([y, yt]).numpy().astype(np.int64),
    )


def audit_pool(
    data: str | Path, dataset: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The records ``veil bench audit`` draws its pool from, as features and labels.

    ``"adult"``: UCI Adult (``adult.data`` and ``adult.test`` under ``data/adult``),
    numeric columns scaled by their declared bounds and categories one-hot
    encoded, the label being the income class. ``"mnist"``: all 70,000 MNIST
    images under ``data/mnist``, flattened to 784 values in [-1, 1].

    Raises:
        NotFoundError: The data set's files are missing under ``data``.
        InvalidInputError: ``dataset`` is neither ``"adult"`` nor ``"mnist"``.
    """
    if dataset not in DATASETS:
        raise InvalidInputError(
            "unknown audit data set",
            expected=" or ".join(DATASETS),
            got=repr(dataset),
        )
    return _adult(Path(data)) if dataset == "adult" else _mnist_pool(Path(data))


class Recipe:
    """Trains one recipe on any data, with the noise fixed by the target's size."""

    def __init__(
        self,
        name: str,
        *,
        dataset: str,
        n_features: int,
        n_classes: int,
        target_size: int,
        tiny: bool,
    ) -> None:
        recipe = RECIPES[name]
        fields = dict(recipe["config"]) | recipe.get(dataset, {}) | (TINY if tiny else {})
        self.hidden = recipe["hidden"] if not tiny else [16]
        self.n_features, self.n_classes = n_features, n_classes
        self.epsilon: float | None = recipe["epsilon"]
        self.private = self.epsilon is not None
        self.sigma: float | None = None
        if self.private:
            assert self.epsilon is not None  # noqa: S101 - private recipes name an epsilon
            batch = fields["batch_size"]
            self.rate = min(1.0, batch / target_size)
            steps = max(1, round(target_size / batch)) * fields["epochs"]
            self.sigma = calibrate_noise(self.epsilon, DELTA, self.rate, steps)
            self.config = DPConfig(**fields, noise_multiplier=self.sigma, delta=DELTA)
        else:
            self.config = DPConfig(**fields, private=False, sampling="shuffle")

    def epsilon_for(self, n: int) -> float:
        """The epsilon of a run on ``n`` records (same rate and epochs as the target)."""
        if not self.private or self.sigma is None:
            return math.inf
        from veil.train import account  # noqa: PLC0415

        batch = max(1, round(self.rate * n))
        steps = max(1, round(n / batch)) * self.config.epochs
        return account(min(1.0, batch / n), self.sigma, steps, DELTA, prv=False).epsilon

    def __call__(self, x: npt.NDArray[Any], y: npt.NDArray[np.int64], seed: int) -> Classifier:
        n = len(y)
        config = self.config
        accounting = None
        if self.private:
            from veil.train import account  # noqa: PLC0415

            batch = max(1, round(self.rate * n))
            config = DPConfig(**{**config.to_dict(), "batch_size": batch})
            steps_per_epoch = max(1, round(n / batch))
            assert self.sigma is not None  # noqa: S101
            accounting = account(
                batch / n, self.sigma, steps_per_epoch * config.epochs, DELTA, prv=False
            )
        else:
            steps_per_epoch = max(1, round(n / config.batch_size))
        plan = TrainingPlan(config, n, steps_per_epoch, accounting)
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # not private: weight initialisation of the attacker's models
            net = build_model(
                {
                    "kind": "mlp",
                    "input_shape": [self.n_features],
                    "n_classes": self.n_classes,
                    "hidden": self.hidden,
                }
            )
        train(net, torch.as_tensor(x), torch.as_tensor(y), plan, n_classes=self.n_classes)
        return as_classifier(net)
