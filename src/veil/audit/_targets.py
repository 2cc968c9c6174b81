"""What an attack may ask of a model: log-probabilities per class, and nothing else.

Attacks are black-box: they see a model only through :class:`Classifier`
(``log_proba(x) -> (n, classes)``). :func:`as_classifier` adapts a PyTorch
module (log-softmax of its logits, in float64 so that confident answers keep
their precision), a scikit-learn estimator (``predict_proba``) or any object
with ``log_proba``. A :data:`Trainer` trains a fresh model of the same kind
on given data; attacks that need reference (shadow) models call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError

__all__ = ["Classifier", "Trainer", "as_classifier", "true_class_log_proba"]

Array = npt.NDArray[np.float64]


@runtime_checkable
class Classifier(Protocol):
    """A model as an attacker sees it."""

    def log_proba(self, x: npt.NDArray[Any]) -> Array:
        """Natural-log class probabilities, shape ``(len(x), n_classes)``."""
        ...


Trainer = Callable[[npt.NDArray[Any], npt.NDArray[np.int64], int], Classifier]
"""``trainer(x, y, seed)`` trains a new model like the target on ``(x, y)``."""


class _Torch:
    def __init__(self, module: Any, batch_size: int = 4096) -> None:
        self.module = module
        self.batch_size = batch_size

    def log_proba(self, x: npt.NDArray[Any]) -> Array:
        import torch  # noqa: PLC0415 - torch is an optional extra

        self.module.eval()
        out = []
        with torch.no_grad():
            tensor = torch.as_tensor(np.asarray(x), dtype=torch.float32)
            for chunk in tensor.split(self.batch_size):
                logits = self.module(chunk).double()
                out.append(torch.log_softmax(logits, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


class _Sklearn:
    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def log_proba(self, x: npt.NDArray[Any]) -> Array:
        flat = np.asarray(x).reshape(len(x), -1)
        proba = np.asarray(self.estimator.predict_proba(flat), dtype=np.float64)
        # Trees and k-NN answer exact 0s and 1s: floor them at 1e-12 so that logit-scaled
        # confidences stay finite (|phi| <= 27.6).
        return np.log(np.clip(proba, 1e-12, 1.0))


def as_classifier(model: Any) -> Classifier:
    """Wrap a PyTorch module, a scikit-learn classifier or a :class:`Classifier`."""
    if isinstance(model, Classifier):
        return model
    try:
        from torch import nn  # noqa: PLC0415 - optional

        if isinstance(model, nn.Module):
            return _Torch(model)
    except ImportError:  # pragma: no cover - torch is in the audit extra
        pass
    if hasattr(model, "predict_proba"):
        return _Sklearn(model)
    raise InvalidInputError(
        "the model cannot be queried for class probabilities",
        expected="a torch.nn.Module, a scikit-learn classifier with predict_proba, "
        "or an object with log_proba(x)",
        got=type(model).__name__,
    )


def true_class_log_proba(log_proba: Array, y: npt.NDArray[np.int64]) -> tuple[Array, Array]:
    """``(log p_y, log (1 - p_y))`` per row, the second computed without cancellation."""
    rows = np.arange(len(y))
    own = log_proba[rows, y]
    others = log_proba.copy()
    others[rows, y] = -np.inf
    rest = np.logaddexp.reduce(others, axis=1)
    return own, rest
