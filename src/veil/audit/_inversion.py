"""Model inversion: reconstruct what a class "looks like" from the model alone.

Gradient-based inversion (Fredrikson, Jha and Ristenpart 2015): start from
the average record and climb the model's log-probability of the class, with
a small L2 pull toward the start and the input kept within the model's input
bounds (Veil scales inputs to [-1, 1]). This needs gradients,
so it is the one white-box attack here: it applies to differentiable
(PyTorch) models.

The similarity to the real data is measured per class as the cosine between
the reconstruction and the class's mean record, both centred on the overall
mean; **identification** is the share of classes whose reconstruction is
closer to its own class mean than to any other (chance: one over the number
of classes). A model that leaks little gives reconstructions that look like
noise and identify classes at chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError

__all__ = ["InversionResult", "invert_classes"]


@dataclass(frozen=True)
class InversionResult:
    """Reconstructions (one per class) and how close they are to the real classes."""

    reconstructions: npt.NDArray[np.float32]  # (classes, *input_shape)
    class_means: npt.NDArray[np.float32]
    cosine_to_own_class: list[float]
    identified: list[bool]
    confidence: list[float]  # the model's probability of the class on its reconstruction
    steps: int

    @property
    def identification_rate(self) -> float:
        return float(np.mean(self.identified))

    @property
    def chance(self) -> float:
        return 1.0 / len(self.identified)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "gradient ascent on log p(class | x) from the average record, L2 pull, "
            "inputs kept in [-1, 1]",
            "steps": self.steps,
            "cosine_to_own_class": self.cosine_to_own_class,
            "mean_cosine": float(np.mean(self.cosine_to_own_class)),
            "identified": self.identified,
            "identification_rate": self.identification_rate,
            "chance": self.chance,
            "model_confidence": self.confidence,
        }


def invert_classes(
    model: Any,
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    n_classes: int,
    *,
    steps: int = 300,
    learning_rate: float = 0.05,
    l2: float = 1e-3,
    bounds: tuple[float, float] = (-1.0, 1.0),
) -> InversionResult:
    """Invert ``model`` for every class; compare with the class means of ``(x, y)``."""
    import torch  # noqa: PLC0415 - optional extra
    from torch import nn  # noqa: PLC0415

    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            "model inversion needs a differentiable model",
            expected="a torch.nn.Module (gradient-based inversion is white-box)",
            got=type(model).__name__,
            fix="leave 'inversion' out of --attacks for this model",
        )
    lo, hi = bounds
    data = np.asarray(x, dtype=np.float32)
    means = np.stack(
        [
            data[y == c].mean(axis=0) if (y == c).any() else np.zeros(data.shape[1:], np.float32)
            for c in range(n_classes)
        ]
    )
    # Start from the average record (what any member of the population looks like) and let the
    # model pull it toward each class: what moves is what the model knows about the class.
    start = np.repeat(data.mean(axis=0, keepdims=True), n_classes, axis=0).astype(np.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    try:
        inputs = torch.tensor(start, requires_grad=True)
        optimiser = torch.optim.Adam([inputs], lr=learning_rate)
        targets = torch.arange(n_classes)
        anchor = torch.tensor(start)
        for _ in range(steps):
            optimiser.zero_grad()
            logp = torch.log_softmax(model(inputs), dim=1)[targets, targets]
            loss = -logp.sum() + l2 * ((inputs - anchor) ** 2).sum()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                inputs.clamp_(lo, hi)
        with torch.no_grad():
            confidence = torch.softmax(model(inputs), dim=1)[targets, targets].tolist()
        recon = inputs.detach().numpy()
    finally:
        for p in model.parameters():
            p.requires_grad = True
    centre = data.mean(axis=0)
    flat_r = (recon - centre).reshape(n_classes, -1)
    flat_m = (means - centre).reshape(n_classes, -1)
    norm_r = np.linalg.norm(flat_r, axis=1, keepdims=True) + 1e-12
    norm_m = np.linalg.norm(flat_m, axis=1, keepdims=True) + 1e-12
    cosine = (flat_r / norm_r) @ (flat_m / norm_m).T  # (reconstruction, class mean)
    return InversionResult(
        reconstructions=recon,
        class_means=means,
        cosine_to_own_class=[float(cosine[c, c]) for c in range(n_classes)],
        identified=[bool(cosine[c].argmax() == c) for c in range(n_classes)],
        confidence=[float(v) for v in confidence],
        steps=steps,
    )
