"""The geometry of the vector layout: how each affine step of a program runs on slots.

The input, zero-padded to a power of two ``P``, is repeated across all
slots; an affine step ``m x n`` is ``m'`` diagonals (``m`` rounded up to a
power of two) in baby-step/giant-step form, then folded up to the period
(see :mod:`veil.he._ckks` for the evaluation). This module only computes the
shapes and the rotations they need, from the steps alone: the planner
(:meth:`HEProgram.plan <veil.he.HEProgram.plan>`, which must ask for the
Galois keys) and the evaluator (which uses them) both read it, so the
program (:mod:`veil.he._program`) does not have to import the evaluator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from veil.he._steps import Affine, Step

__all__ = ["LayerShape", "layer_shapes", "next_pow2", "vector_rotations"]


def next_pow2(value: int) -> int:
    """The smallest power of two at least ``value`` (1 for ``value <= 1``)."""
    return 1 << max(0, math.ceil(math.log2(max(value, 1))))


@dataclass(frozen=True)
class LayerShape:
    """How one affine step runs in the vector layout."""

    rows: int  # m' (outputs rounded up to a power of two)
    period: int  # P: the period of the input layout
    baby: int  # B
    giant: int  # G
    folds: tuple[int, ...]


def layer_shapes(steps: Sequence[Step], input_dim: int) -> list[LayerShape | None]:
    """One shape per step (``None`` for a square), for a program of ``input_dim`` features."""
    shapes: list[LayerShape | None] = []
    period = next_pow2(input_dim)
    for step in steps:
        if not isinstance(step, Affine):
            shapes.append(None)
            continue
        rows = next_pow2(step.weight.shape[0])
        full = max(period, rows)
        baby = 1 << math.ceil(math.log2(rows) / 2) if rows > 1 else 1
        giant = rows // baby
        folds = []
        step_size = rows
        while step_size < full:
            folds.append(step_size)
            step_size *= 2
        shapes.append(LayerShape(rows, full, baby, giant, tuple(folds)))
        period = rows
    return shapes


def vector_rotations(steps: Sequence[Step], input_dim: int) -> tuple[tuple[int, ...], int]:
    """The rotation steps and the slots the vector layout needs for these steps."""
    rotations: set[int] = set()
    needed = next_pow2(input_dim)
    for shape in layer_shapes(steps, input_dim):
        if shape is None:
            continue
        needed = max(needed, shape.period)
        if shape.baby > 1:
            rotations.add(1)
        if shape.giant > 1:
            rotations.add(shape.baby)
        rotations.update(shape.folds)
    return tuple(sorted(rotations)), needed
