"""Models Veil trains, how features are encoded, and the scikit-learn-style private classifiers.

Architectures are described by a small JSON-ready spec (``{"kind": "cnn", ...}``)
so that a saved model can be rebuilt without pickling code. They use only
layers whose per-example gradients the clipping engine handles, and
``tanh`` activations, which keep activations bounded and train better than
ReLU under DP-SGD (Papernot et al. 2021, "Tempered sigmoid activations").

Features are scaled by *declared* bounds, never by statistics of the data:
a numeric column ``x`` in ``[lo, hi]`` becomes ``2 (clip(x) - lo) / (hi - lo) - 1``
(missing values at the midpoint, 0); a categorical column becomes one-hot over
its declared categories (missing or undeclared values: all zeros).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import nn

from veil.errors import InvalidInputError, require
from veil.progress import ProgressCallback, ProgressEvent
from veil.train._engine import TrainingReport, predict_logits, train
from veil.train._plan import DPConfig, plan_training

__all__ = [
    "MODEL_KINDS",
    "DPLogisticRegression",
    "DPMLPClassifier",
    "FeatureEncoder",
    "build_model",
    "fixed_features",
    "trainable_part",
]

MODEL_KINDS = ("logreg", "mlp", "cnn", "scatternet")
_PAIR = 2


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """The model a spec describes: ``{"kind", "input_shape", "n_classes", ["hidden"]}``."""
    kind = spec.get("kind")
    shape = tuple(int(s) for s in spec["input_shape"])
    classes = int(spec["n_classes"])
    features = math.prod(shape)
    if kind == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))
    if kind == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = features
        for hidden in spec.get("hidden", (128,)):
            layers += [nn.Linear(width, int(hidden)), nn.Tanh()]
            width = int(hidden)
        layers.append(nn.Linear(width, classes))
        return nn.Sequential(*layers)
    if kind == "cnn":
        if shape != (1, 28, 28):
            raise InvalidInputError(
                "the cnn model is for 28x28 single-channel images",
                expected="input shape (1, 28, 28), e.g. MNIST",
                got=f"input shape {shape}",
                fix="use --model mlp or --model logreg for tables and other shapes",
            )
        # The MNIST CNN of Papernot et al. 2021 / Tramer and Boneh 2021 (tanh), as in Opacus's example.
        return nn.Sequential(
            nn.Conv2d(1, 16, 8, stride=2, padding=3),
            nn.Tanh(),
            nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, stride=2),
            nn.Tanh(),
            nn.MaxPool2d(2, 1),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 32),
            nn.Tanh(),
            nn.Linear(32, classes),
        )
    if kind == "scatternet":
        return ScatterNetClassifier(shape, classes)
    raise InvalidInputError(
        "unknown model kind",
        expected=" | ".join(MODEL_KINDS),
        got=repr(kind),
        fix="pass --model mlp",
    )


@dataclass(frozen=True)
class FeatureEncoder:
    """Turns table columns into model inputs using declared bounds and categories only.

    Attributes:
        numeric: ``{column: (lo, hi)}``.
        categorical: ``{column: categories}``.
        order: Column order of the encoded features.
    """

    numeric: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return sum(1 if c in self.numeric else len(self.categorical[c]) for c in self.order)

    def feature_names(self) -> list[str]:
        names: list[str] = []
        for column in self.order:
            if column in self.numeric:
                names.append(column)
            else:
                names += [f"{column}={v}" for v in self.categorical[column]]
        return names

    def encode(self, frame: pd.DataFrame) -> torch.Tensor:
        missing = [c for c in self.order if c not in frame.columns]
        if missing:
            raise InvalidInputError(
                "columns missing from the data",
                expected=", ".join(self.order),
                got=f"no {', '.join(missing)}",
            )
        parts: list[npt.NDArray[np.float32]] = []
        for column in self.order:
            if column in self.numeric:
                lo, hi = self.numeric[column]
                values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
                scaled = 2.0 * (np.clip(values, lo, hi) - lo) / (hi - lo) - 1.0
                parts.append(np.nan_to_num(scaled, nan=0.0).astype(np.float32)[:, None])
            else:
                cats = self.categorical[column]
                lookup = {c: i for i, c in enumerate(cats)}
                codes = (
                    frame[column].astype("string").map(lookup).fillna(-1).to_numpy(dtype=np.int64)
                )
                onehot = np.zeros((len(frame), len(cats)), dtype=np.float32)
                known = codes >= 0
                onehot[np.nonzero(known)[0], codes[known]] = 1.0
                parts.append(onehot)
        return torch.from_numpy(
            np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0), np.float32)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": {k: list(v) for k, v in self.numeric.items()},
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "order": list(self.order),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        return cls(
            numeric={k: (float(v[0]), float(v[1])) for k, v in data["numeric"].items()},
            categorical={k: tuple(v) for k, v in data["categorical"].items()},
            order=tuple(data["order"]),
        )


def _check_bounds(bounds: Any, n_features: int) -> list[tuple[float, float]]:
    if bounds is None:
        raise InvalidInputError(
            "feature bounds must be declared",
            expected="feature_bounds=(lo, hi) for all features, or one (lo, hi) per feature",
            got="None",
            fix="declare them from domain knowledge (e.g. age (17, 90)); Veil never reads them "
            "from the data, since the extremes of the data are themselves private",
        )
    pairs = (
        [tuple(bounds)] * n_features
        if len(bounds) == _PAIR and np.isscalar(bounds[0])
        else [tuple(b) for b in bounds]
    )
    if len(pairs) != n_features:
        raise InvalidInputError(
            "one bound pair per feature",
            expected=f"{n_features} (lo, hi) pairs",
            got=str(len(pairs)),
        )
    out = []
    for i, pair in enumerate(pairs):
        lo, hi = float(pair[0]), float(pair[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidInputError(
                f"bad bounds for feature {i}", expected="finite lo < hi", got=f"({lo}, {hi})"
            )
        out.append((lo, hi))
    return out


class _DPClassifier:
    """Shared fit/predict of the private classifiers (scikit-learn's estimator interface).

    Not a subclass of scikit-learn's ``BaseEstimator`` on purpose: its
    ``get_params`` machinery is all we would use, and ``fit`` here must refuse
    to read classes or bounds from the data, which scikit-learn's checks expect.
    """

    _kind = "logreg"

    def __init__(
        self,
        *,
        epsilon: float | None = 1.0,
        delta: float = 1e-5,
        feature_bounds: Any = None,
        classes: Sequence[Any] | None = None,
        epochs: int = 10,
        batch_size: int = 256,
        max_grad_norm: float = 1.0,
        learning_rate: float = 0.5,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        noise_multiplier: float | None = None,
        private: bool = True,
        seed: int | None = None,
    ) -> None:
        self.epsilon = epsilon
        self.delta = delta
        self.feature_bounds = feature_bounds
        self.classes = classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_grad_norm = max_grad_norm
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.noise_multiplier = noise_multiplier
        self.private = private
        self.seed = seed

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        del deep
        return {
            k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")
        }

    def _spec(self, n_features: int, n_classes: int) -> dict[str, Any]:
        return {"kind": self._kind, "input_shape": [n_features], "n_classes": n_classes}

    def _config(self) -> DPConfig:
        return DPConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            max_grad_norm=self.max_grad_norm,
            epsilon=self.epsilon if self.private and self.noise_multiplier is None else None,
            delta=self.delta,
            noise_multiplier=self.noise_multiplier if self.private else None,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            momentum=self.momentum,
            private=self.private,
            sampling="poisson" if self.private else "shuffle",
            seed=self.seed,
        )

    def _scale(self, x: Any) -> torch.Tensor:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2:  # noqa: PLR2004
            raise InvalidInputError(
                "X must be a 2-D array",
                expected="shape (n_samples, n_features)",
                got=f"shape {arr.shape}",
            )
        if hasattr(self, "bounds_") and arr.shape[1] != len(self.bounds_):
            raise InvalidInputError(
                "wrong number of features", expected=str(len(self.bounds_)), got=str(arr.shape[1])
            )
        if np.isnan(arr).any() or np.isinf(arr).any():
            raise InvalidInputError(
                "X holds NaN or infinite values",
                expected="finite features",
                got="NaN or infinite values",
                fix="impute missing values at a declared value first",
            )
        lo = np.array([b[0] for b in self.bounds_])
        hi = np.array([b[1] for b in self.bounds_])
        return torch.from_numpy(
            (2.0 * (np.clip(arr, lo, hi) - lo) / (hi - lo) - 1.0).astype(np.float32)
        )

    def fit(self, X: Any, y: Any) -> _DPClassifier:  # noqa: N803 - scikit-learn's names
        """Train with DP-SGD on ``X`` (scaled by the declared bounds) and labels ``y``."""
        if self.classes is None:
            raise InvalidInputError(
                "the classes must be declared",
                expected="classes=[...] (every label the model may predict)",
                got="None",
                fix="pass classes=... : reading them from y would reveal rare labels",
            )
        n_features = np.asarray(X).shape[1] if np.asarray(X).ndim == 2 else -1  # noqa: PLR2004
        self.bounds_ = _check_bounds(self.feature_bounds, max(n_features, 0))
        inputs = self._scale(X)
        self.classes_ = np.asarray(list(self.classes))
        lookup = {c: i for i, c in enumerate(self.classes_.tolist())}
        labels = np.asarray(y).tolist()
        unknown = sum(1 for v in labels if v not in lookup)
        if unknown:
            raise InvalidInputError(
                "labels outside the declared classes",
                expected=f"one of {self.classes_.tolist()}",
                got=f"{unknown} labels outside them",
                fix="declare every class, or drop those rows",
            )
        targets = torch.tensor([lookup[v] for v in labels], dtype=torch.long)
        self.spec_ = self._spec(inputs.shape[1], len(self.classes_))
        self.model_ = build_model(self.spec_)
        self.plan_ = plan_training(self._config(), inputs.shape[0])
        self.report_: TrainingReport = train(
            self.model_, inputs, targets, self.plan_, n_classes=len(self.classes_)
        )
        return self

    @property
    def privacy_(self) -> dict[str, Any] | None:
        """The accounting of the fit (epsilon by PLD, RDP and PRV; None when not private)."""
        accounting = self.plan_.accounting
        return None if accounting is None else accounting.to_dict()

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:  # noqa: N803
        logits = predict_logits(self.model_, self._scale(X))
        return torch.softmax(logits, dim=1).double().numpy()

    def predict(self, X: Any) -> npt.NDArray[Any]:  # noqa: N803
        labels: npt.NDArray[Any] = self.classes_[self.predict_proba(X).argmax(axis=1)]
        return labels

    def score(self, X: Any, y: Any) -> float:  # noqa: N803
        return float(np.mean(self.predict(X) == np.asarray(y)))


class DPLogisticRegression(_DPClassifier):
    """Multinomial logistic regression trained with DP-SGD.

    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0]] * 200); y = np.array([0, 1] * 200)
    >>> clf = DPLogisticRegression(epsilon=2.0, delta=1e-4, feature_bounds=(0, 1), classes=[0, 1],
    ...                            epochs=5, batch_size=40, seed=0)
    >>> import warnings; warnings.simplefilter("ignore")  # seeded: not private, and it says so
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    """

    _kind = "logreg"


class DPMLPClassifier(_DPClassifier):
    """A one-hidden-layer (tanh) neural network classifier trained with DP-SGD."""

    _kind = "mlp"

    def __init__(self, *, hidden_layer_sizes: Sequence[int] = (64,), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_layer_sizes = tuple(hidden_layer_sizes)

    def _spec(self, n_features: int, n_classes: int) -> dict[str, Any]:
        spec = super()._spec(n_features, n_classes)
        spec["hidden"] = list(self.hidden_layer_sizes)
        return spec


class ScatterNetClassifier(nn.Module):
    """Scattering-transform features and a linear classifier (Tramer and Boneh 2021).

    ``features`` is fixed: a wavelet scattering transform (Kymatio, ``J = 2``, 8
    angles: 81 channels at a quarter of the resolution) followed by a
    per-example GroupNorm without parameters. It has no trainable weights and
    looks at one example at a time, so it is pre-processing: it costs no
    privacy, and :func:`veil.train.fit_private` applies it once to every image
    before DP-SGD trains ``head``.
    """

    def __init__(self, shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        if len(shape) != 3 or shape[0] != 1 or shape[1] % 4 or shape[2] % 4:  # noqa: PLR2004
            raise InvalidInputError(
                "the scatternet model is for single-channel images with sides divisible by 4",
                expected="input shape (1, H, W), e.g. MNIST's (1, 28, 28)",
                got=f"input shape {shape}",
                fix="use --model mlp or --model logreg for tables",
            )
        self.features = ScatterNetFeatures(shape[1], shape[2])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.features.width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.features(x))
        return result


class ScatterNetFeatures(nn.Module):
    """The fixed scattering front end of :class:`ScatterNetClassifier` (no trainable weights)."""

    channels = 81  # 1 + J L + L^2 J (J - 1) / 2 for J = 2, L = 8
    groups = 27

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        frontend = require(
            "kymatio.scattering2d.frontend.torch_frontend",
            extra="train",
            purpose="the scatternet model",
        )
        # Kymatio's filters are fixed buffers (saved with the model, rebuilt identically).
        self.scattering = frontend.ScatteringTorch2D(J=2, shape=(height, width), L=8)
        self.norm = nn.GroupNorm(self.groups, self.channels, affine=False)
        self.out_shape = (self.channels, height // 4, width // 4)
        self.width = math.prod(self.out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inputs arrive in [-1, 1] (scaled by the declared bounds); the transform wants [0, 1].
        scattered = self.scattering(((x + 1.0) / 2.0).contiguous())
        out: torch.Tensor = self.norm(scattered.reshape(x.shape[0], *self.out_shape))
        return out

    @torch.no_grad()
    def transform(self, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        """Features of every example, computed in chunks."""
        return torch.cat([self(chunk) for chunk in x.split(batch_size)]) if len(x) else x


def trainable_part(model: nn.Module) -> nn.Module:
    """What DP-SGD trains: the head after a fixed front end, or the whole model."""
    return model.head if isinstance(model, ScatterNetClassifier) else model


def fixed_features(
    model: nn.Module, inputs: torch.Tensor, progress: ProgressCallback | None = None
) -> tuple[nn.Module, torch.Tensor]:
    """The part of ``model`` DP-SGD trains, and the inputs it sees.

    A model with a fixed, per-example front end (:class:`ScatterNetClassifier`)
    has it applied once here, so that training runs on the features; any other
    model is returned as it is.
    """
    if not isinstance(model, ScatterNetClassifier):
        return model, inputs
    chunks = []
    total = len(inputs)
    for start in range(0, total, 2000):
        chunks.append(model.features.transform(inputs[start : start + 2000]))
        if progress is not None:
            progress(
                ProgressEvent("scattering features", min(start + 2000, total), total, "images")
            )
    return model.head, torch.cat(chunks) if chunks else inputs
