"""A compiled model: affine steps and squares, their calibration, and its file format.

:class:`HEProgram` is what the compiler (:mod:`veil.he._compile`) produces,
what the planner turns into CKKS parameters (:meth:`HEProgram.plan`), and what
the server evaluates. Its file (:meth:`HEProgram.to_bytes`) is an ``.npz``
of the weights plus a JSON header, read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.he._layout import vector_rotations
from veil.he._plan import HEPlan, plan_parameters
from veil.he._steps import Affine, Square, Step

__all__ = ["OUTPUTS", "HEProgram"]

FloatArray = npt.NDArray[np.float64]
OUTPUTS = ("none", "softmax", "sigmoid")  # what the client applies after decryption
_SAFETY = 4.0  # calibrated magnitudes are multiplied by this before planning
_INPUT_MARGIN = 2.0  # inputs may reach twice the largest calibration input
_FORMAT = "veil-he-program/1"


@dataclass(frozen=True)
class HEProgram:
    """A model lowered to affine steps and squares, with its calibration.

    Attributes:
        steps: The steps, in order; the last is affine.
        output: What the client applies after decryption
            (``none``, ``softmax`` or ``sigmoid``).
        source: What the program was compiled from.
        magnitudes: The largest absolute value after each step on the
            calibration inputs (empty until :meth:`calibrate`).
        input_bound: The largest absolute input value seen in calibration.
    """

    steps: tuple[Step, ...]
    output: str = "none"
    source: str = ""
    magnitudes: tuple[float, ...] = ()
    input_bound: float = 0.0

    @property
    def input_dim(self) -> int:
        """Features of one input."""
        first = next(step for step in self.steps if isinstance(step, Affine))
        return int(first.weight.shape[1])

    @property
    def output_dim(self) -> int:
        """Outputs of one inference."""
        last = self.steps[-1]
        if not isinstance(last, Affine):
            raise InvalidInputError("a compiled program must end with an affine step")
        return int(last.weight.shape[0])

    @property
    def depth(self) -> int:
        """Rescales the program needs: one per step."""
        return len(self.steps)

    def forward(self, inputs: npt.ArrayLike) -> FloatArray:
        """The plaintext reference: exactly what the encrypted evaluation computes."""
        values = _as_matrix(inputs, self.input_dim)
        for step in self.steps:
            if isinstance(step, Affine):
                values = values @ step.weight.T + step.bias
            else:
                values = values * values
        return values

    def calibrate(self, inputs: npt.ArrayLike) -> HEProgram:
        """Record the largest value after every step on representative inputs."""
        values = _as_matrix(inputs, self.input_dim)
        if values.shape[0] == 0:
            raise InvalidInputError(
                "calibration needs data", expected="at least one input row", got="none"
            )
        bound = float(np.max(np.abs(values)))
        magnitudes = []
        for step in self.steps:
            if isinstance(step, Affine):
                values = values @ step.weight.T + step.bias
            else:
                values = values * values
            magnitudes.append(float(np.max(np.abs(values))))
        return replace(self, magnitudes=tuple(magnitudes), input_bound=bound)

    def plan(self, *, layouts: tuple[str, ...] = ("vector", "batch")) -> HEPlan:
        """CKKS parameters for this program (calibrate it first)."""
        if not self.magnitudes:
            raise InvalidInputError(
                "the program is not calibrated",
                expected="HEProgram.calibrate(inputs) before planning",
                got="no recorded magnitudes",
                fix="pass --calibrate DATA to `veil he compile`, or call .calibrate(x)",
            )
        largest = _SAFETY * max(*self.magnitudes, self.input_bound, 1.0)
        # a sign bit and a bit of headroom: the first prime holds 2x the largest value,
        # so an overflow lands outside the accepted range instead of wrapping into it
        integer_bits = math.ceil(math.log2(largest)) + 2
        needed = 1
        steps: tuple[int, ...] = ()
        if "vector" in layouts:
            steps, needed = vector_rotations(self.steps, self.input_dim)
        return plan_parameters(
            self.depth,
            integer_bits=integer_bits,
            slots_needed=needed,
            galois_steps=steps,
            layouts=layouts,
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            magnitude=largest,
            input_limit=_INPUT_MARGIN * max(self.input_bound, 1e-12),
            output=self.output,
        )

    def to_bytes(self) -> bytes:
        """The program (weights included: it is the server's secret) as one file."""
        arrays: dict[str, FloatArray] = {}
        kinds = []
        for index, step in enumerate(self.steps):
            if isinstance(step, Affine):
                arrays[f"w{index}"] = step.weight
                arrays[f"b{index}"] = step.bias
                kinds.append("affine")
            else:
                kinds.append("square")
        meta = {
            "format": _FORMAT,
            "steps": kinds,
            "output": self.output,
            "source": self.source,
            "magnitudes": list(self.magnitudes),
            "input_bound": self.input_bound,
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> HEProgram:
        """Read :meth:`to_bytes` back (no pickles are loaded)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                _expect_format(meta)
                steps: list[Step] = []
                for index, kind in enumerate(meta["steps"]):
                    if kind == "affine":
                        steps.append(
                            Affine(
                                np.asarray(archive[f"w{index}"], dtype=np.float64),
                                np.asarray(archive[f"b{index}"], dtype=np.float64),
                            )
                        )
                    else:
                        steps.append(Square())
            program = cls(
                steps=tuple(steps),
                output=str(meta["output"]),
                source=str(meta["source"]),
                magnitudes=tuple(float(m) for m in meta["magnitudes"]),
                input_bound=float(meta["input_bound"]),
            )
        except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile) as exc:
            raise InvalidInputError(
                "not a compiled HE program",
                expected=f"a file written by `veil he compile` ({_FORMAT})",
                got=f"{type(exc).__name__}: {exc}",
            ) from exc
        return program


def _expect_format(meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise KeyError("format")


def _as_matrix(inputs: npt.ArrayLike, width: int) -> FloatArray:
    values = np.asarray(inputs, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim > 2:  # noqa: PLR2004 - images: flatten each one
        values = values.reshape(values.shape[0], -1)
    if values.shape[1] != width:
        raise InvalidInputError(
            "the input has the wrong number of features",
            expected=f"{width} features per input",
            got=f"shape {tuple(np.shape(inputs))}",
            fix="flatten images and apply the model's own preprocessing before encrypting",
        )
    if not np.all(np.isfinite(values)):
        raise InvalidInputError(
            "the input holds NaN or infinite values",
            expected="finite numbers",
            got="NaN or inf",
        )
    return values
