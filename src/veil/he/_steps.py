"""The two instructions of a compiled program: an affine map and an elementwise square.

CKKS adds and multiplies, nothing else, so :class:`~veil.he.HEProgram` is a
sequence of these two steps. They sit in their own module because the
program, the compiler that builds it, the vector layout (which the program's
planner and the CKKS evaluator both read) and the evaluator all need them,
and none of these should import another just to get them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Affine", "Square", "Step"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Affine:
    """``y = weight @ x + bias``."""

    weight: FloatArray
    bias: FloatArray


@dataclass(frozen=True)
class Square:
    """``y = x * x``, elementwise."""


Step = Affine | Square
