"""The PyTorch activation that CKKS can evaluate (imported only when torch is wanted).

A module-level class, so that models using it pickle with ``torch.save`` and
load again wherever Veil is installed.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["PolyActivation"]


class PolyActivation(torch.nn.Module):
    """``c0 + c1 x + c2 x^2``: a degree-2 activation CKKS evaluates at one level."""

    def __init__(self, coefficients: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> None:
        super().__init__()
        c0, c1, c2 = (float(c) for c in coefficients)
        self.he_polynomial = (c0, c1, c2)

    def forward(self, x: Any) -> Any:
        c0, c1, c2 = self.he_polynomial
        return c0 + c1 * x + c2 * x * x

    def extra_repr(self) -> str:
        c0, c1, c2 = self.he_polynomial
        return f"{c0} + {c1}x + {c2}x^2"
