"""Compile a trained PyTorch or scikit-learn model into a program CKKS can evaluate.

CKKS adds and multiplies, nothing else, so the compiler lowers a model to two
kinds of step: an affine map ``y = W x + b`` (linear and convolution layers,
average pooling, batch norm in eval mode, flattening: anything linear,
probed column by column so that stride, padding and channels need no special
code) and an elementwise square. A degree-2 activation ``a h^2 + b h + c`` is
rewritten as ``a (h + b/2a)^2 + c - b^2/4a``: the shift joins the previous
affine step's bias and ``a`` and the constant join the next one, so every
activation costs one level. Consecutive affine steps are multiplied together.
What is not a polynomial (ReLU, max pooling, sigmoid inside the network) is
refused with the HE-friendly replacement to train with instead. A final
softmax, log-softmax or sigmoid is left to the client, after decryption.

Model files are read without unpickling (:func:`load_model_file`): a PyTorch
state dict with ``torch.load(weights_only=True)`` plus a JSON architecture of
allow-listed layers, or a linear model's coefficients in an ``.npz`` read with
``allow_pickle=False``. A pickle (a whole ``torch.save``'d module, a joblib
file) runs whatever code it holds when it is loaded, so it is read only with
``trust_pickle=True``, and then with a warning.
"""

from __future__ import annotations

import copy
import io
import json
import math
import pickle
import types
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, MissingDependencyError
from veil.he._layout import vector_rotations
from veil.he._plan import HEPlan, plan_parameters
from veil.he._steps import Affine, Square, Step

__all__ = [
    "HEProgram",
    "PickleTrustWarning",
    "compile_model",
    "load_model_file",
    "poly_activation",
]

FloatArray = npt.NDArray[np.float64]
_OUTPUTS = ("none", "softmax", "sigmoid")
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


# ----------------------------------------------------------------------------- PyTorch


def poly_activation(coefficients: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Any:
    """A PyTorch activation ``c0 + c1 x + c2 x^2`` that :func:`compile_model` accepts.

    The default is ``x^2``. Train with it in place of ReLU; the compiled
    program evaluates it at the cost of one CKKS level.
    """
    _torch()  # a clear error when torch is missing
    from veil.he._layers import PolyActivation  # noqa: PLC0415 - needs torch

    return PolyActivation(coefficients)


def _torch() -> Any:
    try:
        import torch  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise MissingDependencyError(
            "compiling a PyTorch model needs torch",
            expected="the `train` extra installed",
            got=f"ImportError: {exc}",
            fix='pip install "veil[train,he]"',
        ) from exc
    return torch


_REFUSED = {
    "ReLU": "ReLU is not a polynomial: train with veil.he.poly_activation() (x^2) instead",
    "ReLU6": "ReLU6 is not a polynomial: train with veil.he.poly_activation() instead",
    "LeakyReLU": "LeakyReLU is not a polynomial: train with veil.he.poly_activation()",
    "GELU": "GELU is not a polynomial: train with veil.he.poly_activation()",
    "SiLU": "SiLU is not a polynomial: train with veil.he.poly_activation()",
    "ELU": "ELU is not a polynomial: train with veil.he.poly_activation()",
    "Tanh": "tanh is not a polynomial: train with veil.he.poly_activation(), or a degree-2 "
    "fit such as (0, 0.5, 0) + (0,0,-0.02) on a bounded range",
    "Sigmoid": "a sigmoid inside the network is not a polynomial: use "
    "veil.he.poly_activation((0.5, 0.197, 0)) (its linear fit) or x^2; a final sigmoid is "
    "fine (the client applies it after decryption)",
    "Softmax": "a softmax inside the network cannot be evaluated; only a final one is allowed",
    "LogSoftmax": "a log-softmax inside the network cannot be evaluated; only a final one is "
    "allowed",
    "MaxPool1d": "max pooling needs comparisons, which CKKS cannot do: use AvgPool1d",
    "MaxPool2d": "max pooling needs comparisons, which CKKS cannot do: use AvgPool2d",
    "AdaptiveMaxPool2d": "max pooling needs comparisons, which CKKS cannot do: use AvgPool2d",
    "Dropout": "",  # identity in eval mode: accepted below
}
_LINEAR = {
    "Linear",
    "Conv1d",
    "Conv2d",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Flatten",
    "Identity",
    "Dropout",
}


def _flatten_modules(module: Any) -> list[Any]:
    torch = _torch()
    if isinstance(module, torch.nn.Sequential):
        return [leaf for child in module for leaf in _flatten_modules(child)]
    return [module]


def _probe_affine(module: Any, input_shape: tuple[int, ...]) -> tuple[Affine, tuple[int, ...]]:
    """The exact matrix of a linear module, from its outputs on the basis vectors."""
    torch = _torch()
    width = math.prod(input_shape)
    with torch.no_grad():
        zero = torch.zeros((1, *input_shape), dtype=torch.float64)
        basis = torch.eye(width, dtype=torch.float64).reshape(width, *input_shape)
        module64 = copy.deepcopy(module).double()  # the caller's model is left as it was
        bias_out = module64(zero)
        columns = module64(basis) - bias_out
    out_shape = tuple(int(d) for d in bias_out.shape[1:])
    weight = columns.reshape(width, -1).T.numpy().astype(np.float64)
    return Affine(weight, bias_out.reshape(-1).numpy().astype(np.float64)), out_shape


def _compile_torch(model: Any, input_shape: tuple[int, ...] | None) -> tuple[list[Any], str]:
    torch = _torch()
    modules = _flatten_modules(model)
    model.eval()
    shape = input_shape
    if shape is None:
        first = modules[0]
        if not isinstance(first, torch.nn.Linear):
            raise InvalidInputError(
                "the input shape is needed",
                expected="input_shape=(C, H, W) (or (features,)) for a model that does not "
                "start with nn.Linear",
                got=type(first).__name__,
            )
        shape = (int(first.in_features),)
    raw: list[Any] = []
    output = "none"
    for position, module in enumerate(modules):
        name = type(module).__name__
        last = position == len(modules) - 1
        polynomial = getattr(module, "he_polynomial", None)
        if polynomial is not None:
            raw.append(("poly", tuple(float(c) for c in polynomial)))
            continue
        if last and name in ("Softmax", "LogSoftmax", "Sigmoid"):
            output = "sigmoid" if name == "Sigmoid" else "softmax"
            continue
        if name in _LINEAR:
            affine, shape = _probe_affine(module, shape)
            raw.append(("affine", affine))
            continue
        reason = _REFUSED.get(name) or (
            f"{name} is not supported: the compiler handles Linear, Conv1d/2d, AvgPool1d/2d, "
            "BatchNorm (eval), Flatten, Dropout (eval) and veil.he.poly_activation"
        )
        raise InvalidInputError(
            f"layer {position} ({name}) cannot be evaluated under homomorphic encryption",
            expected="only additions and multiplications (affine layers, polynomial activations)",
            got=name,
            fix=reason,
        )
    return raw, output


# ----------------------------------------------------------------------------- scikit-learn


def _compile_sklearn(model: Any) -> tuple[list[Any], str]:
    name = type(model).__name__
    if not hasattr(model, "coef_") and not hasattr(model, "coefs_"):
        raise InvalidInputError(
            f"{name} is not fitted or not a linear model",
            expected="a fitted linear model (LogisticRegression, LinearRegression, Ridge, "
            "SGDClassifier, ...) or an MLP with activation='identity'",
            got=name,
        )
    if hasattr(model, "coefs_"):  # MLPClassifier / MLPRegressor
        if model.activation != "identity":
            raise InvalidInputError(
                f"{name} with activation={model.activation!r} cannot be evaluated under "
                "homomorphic encryption",
                expected="activation='identity' (scikit-learn has no polynomial activation)",
                got=repr(model.activation),
                fix="train the network in PyTorch with veil.he.poly_activation()",
            )
        raw = [
            ("affine", Affine(np.asarray(w, dtype=np.float64).T, np.asarray(b, dtype=np.float64)))
            for w, b in zip(model.coefs_, model.intercepts_, strict=True)
        ]
        output = {"softmax": "softmax", "logistic": "sigmoid"}.get(model.out_activation_, "none")
        return raw, output
    weight = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    bias = np.atleast_1d(np.asarray(getattr(model, "intercept_", 0.0), dtype=np.float64))
    bias = np.broadcast_to(bias, (weight.shape[0],)).copy()
    output = "none"
    if hasattr(model, "predict_proba"):
        output = "sigmoid" if weight.shape[0] == 1 else "softmax"
    return [("affine", Affine(weight, bias))], output


# ----------------------------------------------------------------------------- lowering


def _lower(raw: list[Any]) -> list[Step]:
    """Turn polynomials into squares and merge neighbouring affine steps."""
    steps: list[Any] = []
    for kind, item in raw:
        if kind == "affine":
            steps.append(item)
            continue
        c0, c1, c2 = item
        if c2 == 0.0:  # an affine activation
            width = _width_of(steps)
            steps.append(Affine(np.eye(width) * c1, np.full(width, c0)))
            continue
        width = _width_of(steps)
        # c2 (h + c1/(2 c2))^2 + c0 - c1^2 / (4 c2)
        steps.append(Affine(np.eye(width), np.full(width, c1 / (2 * c2))))
        steps.append(Square())
        steps.append(Affine(np.eye(width) * c2, np.full(width, c0 - c1 * c1 / (4 * c2))))
    merged: list[Step] = []
    for step in steps:
        previous = merged[-1] if merged else None
        if isinstance(step, Affine) and isinstance(previous, Affine):
            merged[-1] = Affine(
                step.weight @ previous.weight, step.weight @ previous.bias + step.bias
            )
        else:
            merged.append(step)
    if not merged or not isinstance(merged[0], Affine):
        raise InvalidInputError(
            "the model must start with an affine layer",
            expected="a Linear or convolution layer first",
            got="an activation first",
        )
    if not isinstance(merged[-1], Affine):
        width = _width_of(merged)
        merged.append(Affine(np.eye(width), np.zeros(width)))
    return _drop_dead_units(merged)


def _drop_dead_units(steps: list[Step]) -> list[Step]:
    """Fold hidden units whose weights are all zero into the next step's bias.

    Such a unit outputs its bias ``c`` for every input, so after the square it
    is the constant ``c^2``: the next affine step absorbs ``W[:, j] c^2`` and
    the unit disappears (the batched layout cannot form a ciphertext of a
    constant, and it saves work in both).
    """
    result = list(steps)
    for index in range(len(result) - 2):
        first, square, second = result[index : index + 3]
        if not (
            isinstance(first, Affine) and isinstance(square, Square) and isinstance(second, Affine)
        ):
            continue
        dead = ~np.any(first.weight, axis=1)
        if not dead.any() or dead.all():
            continue
        constant = second.weight[:, dead] @ (first.bias[dead] ** 2)
        result[index] = Affine(first.weight[~dead], first.bias[~dead])
        result[index + 2] = Affine(second.weight[:, ~dead], second.bias + constant)
    return result


def _width_of(steps: list[Any]) -> int:
    for step in reversed(steps):
        if isinstance(step, Affine):
            return int(step.weight.shape[0])
    raise InvalidInputError(
        "an activation comes before any affine layer",
        expected="a Linear or convolution layer first",
        got="an activation first",
    )


def compile_model(
    model: Any,
    *,
    input_shape: tuple[int, ...] | None = None,
    calibration: npt.ArrayLike | None = None,
) -> HEProgram:
    """Lower a trained model to an :class:`HEProgram` that CKKS can evaluate.

    Args:
        model: An ``nn.Sequential`` (nested allowed) of linear layers and
            :func:`poly_activation` activations, or a fitted scikit-learn
            linear model / identity-activation MLP.
        input_shape: The shape of one input (``(C, H, W)`` for a CNN); taken
            from the first ``nn.Linear`` when omitted.
        calibration: Representative inputs; when given, the program is
            calibrated (see :meth:`HEProgram.calibrate`) and ready to plan.

    Raises:
        InvalidInputError: For a layer CKKS cannot evaluate; the message says
            what to train with instead.
    """
    module_name = type(model).__module__
    if module_name.startswith("sklearn"):
        raw, output = _compile_sklearn(model)
        source = f"scikit-learn {type(model).__name__}"
    elif hasattr(model, "forward") and hasattr(model, "parameters"):
        raw, output = _compile_torch(model, input_shape)
        source = f"PyTorch {type(model).__name__}"
    else:
        raise InvalidInputError(
            "this model type cannot be compiled",
            expected="a torch.nn.Module or a fitted scikit-learn estimator",
            got=type(model).__name__,
        )
    if output not in _OUTPUTS:
        raise InvalidInputError("unknown output transform", got=output)
    program = HEProgram(steps=tuple(_lower(raw)), output=output, source=source)
    if calibration is not None:
        program = program.calibrate(calibration)
    return program


# ----------------------------------------------------------------------------- model files


class PickleTrustWarning(UserWarning):
    """A model was read from a pickle, which runs any code it holds when it is loaded."""


# the layers an architecture file may name, and the constructor arguments each accepts
_ARCH_LAYERS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv1d": (
        "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
        "bias",
    ),
    "Conv2d": (
        "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
        "bias",
    ),
    "AvgPool1d": ("kernel_size", "stride", "padding"),
    "AvgPool2d": ("kernel_size", "stride", "padding"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "Flatten": ("start_dim", "end_dim"),
    "Identity": (),
    "Dropout": ("p",),
    "Softmax": ("dim",),
    "LogSoftmax": ("dim",),
    "Sigmoid": (),
    "PolyActivation": ("coefficients",),
    # built so that compile_model can refuse them with its advice (train with x^2 instead)
    **dict.fromkeys(("ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "ELU", "Tanh"), ()),
    "MaxPool1d": ("kernel_size", "stride", "padding"),
    "MaxPool2d": ("kernel_size", "stride", "padding"),
}  # fmt: skip
_PICKLES = (".pt", ".pth", ".joblib", ".pkl")


def _plain_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_plain_value(item) for item in value)
    return isinstance(value, bool | int | float)


def _layer(spec: Any, position: int) -> Any:
    torch = _torch()
    if not isinstance(spec, dict) or spec.get("type") not in _ARCH_LAYERS:
        raise InvalidInputError(
            f"layer {position} of the architecture is not allowed",
            expected=f"an object whose type is one of {sorted(_ARCH_LAYERS)}",
            got=repr(spec)[:120],
        )
    kind = spec["type"]
    arguments = {key: value for key, value in spec.items() if key != "type"}
    unknown = sorted(set(arguments) - set(_ARCH_LAYERS[kind]))
    if unknown or not all(_plain_value(value) for value in arguments.values()):
        raise InvalidInputError(
            f"layer {position} ({kind}) has arguments the architecture may not set",
            expected=f"numbers (or lists of numbers) for {list(_ARCH_LAYERS[kind])}",
            got=repr(arguments)[:120],
        )
    plain = {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
    if kind == "PolyActivation":
        return poly_activation(plain.get("coefficients", (0.0, 0.0, 1.0)))
    try:
        return getattr(torch.nn, kind)(**plain)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(
            f"layer {position} ({kind}) cannot be built", got=f"{type(exc).__name__}: {exc}"
        ) from exc


def _from_state_dict(path: Path, architecture: Path) -> Any:
    torch = _torch()
    try:
        spec = json.loads(architecture.read_text())
        layers = spec["layers"]
        if not isinstance(layers, list) or not layers:
            raise TypeError("layers must be a non-empty list")  # noqa: TRY301 - one message
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(
            "not an architecture file",
            expected='JSON {"layers": [{"type": "Linear", "in_features": 64, ...}, ...]}',
            got=f"{type(exc).__name__}: {exc}",
        ) from exc
    model = torch.nn.Sequential(*(_layer(layer, i) for i, layer in enumerate(layers)))
    try:
        # weights_only: torch's restricted unpickler, which builds tensors and nothing else
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
        raise InvalidInputError(
            "the weights file is not a plain state dict",
            expected="torch.save(model.state_dict(), path): tensors only",
            got=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            fix="save the state dict, not the module; or, for a file you made yourself, pass "
            "--trust-pickle without --arch",
        ) from exc
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InvalidInputError(
            "the state dict does not fit the architecture",
            expected="the parameter names and shapes the architecture's layers have",
            got=str(exc).splitlines()[0][:200] + " ...",
        ) from exc
    return model


def _from_coefficients(path: Path) -> HEProgram:
    try:
        with np.load(path, allow_pickle=False) as archive:
            weight = np.atleast_2d(np.asarray(archive["coef"], dtype=np.float64))
            intercept = (
                np.asarray(archive["intercept"], dtype=np.float64)
                if "intercept" in archive
                else np.zeros(1)
            )
            output = str(archive["output"]) if "output" in archive else "none"
        bias = np.broadcast_to(np.atleast_1d(intercept), (weight.shape[0],)).copy()
    except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(
            "not a coefficients file",
            expected="an .npz with coef (outputs x features), and optionally intercept and "
            "output ('none', 'sigmoid' or 'softmax'); no object arrays",
            got=f"{type(exc).__name__}: {exc}",
            fix="np.savez(path, coef=model.coef_, intercept=model.intercept_, output='sigmoid')",
        ) from exc
    if output not in _OUTPUTS or weight.ndim != 2 or not np.all(np.isfinite(weight)):  # noqa: PLR2004
        raise InvalidInputError(
            "the coefficients file is not a linear model",
            expected=f"finite 2-D coef and output in {list(_OUTPUTS)}",
            got=f"coef of shape {weight.shape}, output {output!r}",
        )
    return HEProgram(
        steps=(Affine(weight, bias),), output=output, source=f"coefficients {path.name}"
    )


# A model pickled whole names the module of every class it holds. Models trained with
# poly_activation() before encrypted inference moved from veil.crypto to veil.he name
# veil.crypto._layers.PolyActivation: the unpickler finds that class at its new home, so that
# such files keep loading (there is no veil.crypto package left to find it in).
_MOVED_MODULES = {"veil.crypto._layers": "veil.he._layers"}


class _MovedClassesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED_MODULES.get(module, module), name)


def _moved_load(file: Any, **kwargs: Any) -> Any:
    return _MovedClassesUnpickler(file, **kwargs).load()


# torch.load's pickle_module: anything with an Unpickler and a load
_moved_pickle = types.SimpleNamespace(
    __name__="veil.he.pickle", Unpickler=_MovedClassesUnpickler, load=_moved_load
)


def load_model_file(
    path: Path,
    *,
    architecture: Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    calibration: npt.ArrayLike | None = None,
    trust_pickle: bool = False,
) -> HEProgram:
    """Compile a model file, never unpickling one unless told to.

    Args:
        path: ``.npz`` coefficients (a linear model), a ``.pt``/``.pth`` state
            dict (with ``architecture``), or, with ``trust_pickle``, a whole
            pickled module (``.pt``) or scikit-learn model (``.joblib``/``.pkl``).
        architecture: JSON ``{"layers": [{"type": "Linear", ...}, ...]}`` of
            allow-listed layers, for a state dict.
        input_shape: As in :func:`compile_model`.
        calibration: As in :func:`compile_model`.
        trust_pickle: Load a pickle, which runs any code it holds; warns with
            :class:`PickleTrustWarning`. Only for a file you made yourself.

    Raises:
        InvalidInputError: For a pickle without ``trust_pickle``, a state dict
            that holds anything but tensors or does not fit the architecture,
            or an architecture naming a layer outside the allow-list.
    """
    suffix = path.suffix.lower()
    if suffix == ".npz":
        program = _from_coefficients(path)
        return program if calibration is None else program.calibrate(calibration)
    if suffix in (".pt", ".pth") and architecture is not None:
        model = _from_state_dict(path, architecture)
        return compile_model(model, input_shape=input_shape, calibration=calibration)
    if suffix not in _PICKLES:
        raise InvalidInputError(
            "unknown model format",
            expected="a .npz of coefficients, or a .pt state dict with an architecture (--arch)",
            got=suffix or "no suffix",
        )
    if not trust_pickle:
        raise InvalidInputError(
            f"{path.name} would be unpickled, and unpickling runs any code the file holds",
            expected="a .pt state dict with --arch ARCH.json (torch.save(model.state_dict())), "
            "or a .npz of a linear model's coefficients",
            got=f"a {suffix} file without --arch",
            fix="save the model in a safe format; for a file you made yourself, pass "
            "--trust-pickle (trust_pickle=True)",
        )
    warnings.warn(
        f"--trust-pickle: loading {path.name} runs any code it holds; do this only with a "
        "model file you made yourself",
        PickleTrustWarning,
        stacklevel=2,
    )
    if suffix in (".pt", ".pth"):
        # reviewed: unpickling runs the file's code; reached only with --trust-pickle, after the
        # warning above (tests/cli/test_he_pickles.py: a booby-trapped pickle never runs without it)
        model = _torch().load(
            path, weights_only=False, map_location="cpu", pickle_module=_moved_pickle
        )
    else:
        import joblib  # noqa: PLC0415 - scikit-learn's own dependency

        model = joblib.load(path)
    return compile_model(model, input_shape=input_shape, calibration=calibration)
