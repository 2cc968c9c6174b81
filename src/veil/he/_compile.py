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
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, MissingDependencyError
from veil.he._program import OUTPUTS, HEProgram
from veil.he._steps import Affine, Square, Step

__all__ = ["compile_model", "poly_activation", "torch_module"]


# ----------------------------------------------------------------------------- PyTorch


def poly_activation(coefficients: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Any:
    """A PyTorch activation ``c0 + c1 x + c2 x^2`` that :func:`compile_model` accepts.

    The default is ``x^2``. Train with it in place of ReLU; the compiled
    program evaluates it at the cost of one CKKS level.
    """
    torch_module()  # a clear error when torch is missing
    from veil.he._layers import PolyActivation  # noqa: PLC0415 - needs torch

    return PolyActivation(coefficients)


def torch_module() -> Any:
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
    torch = torch_module()
    if isinstance(module, torch.nn.Sequential):
        return [leaf for child in module for leaf in _flatten_modules(child)]
    return [module]


def _probe_affine(module: Any, input_shape: tuple[int, ...]) -> tuple[Affine, tuple[int, ...]]:
    """The exact matrix of a linear module, from its outputs on the basis vectors."""
    torch = torch_module()
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
    torch = torch_module()
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
    if output not in OUTPUTS:
        raise InvalidInputError("unknown output transform", got=output)
    program = HEProgram(steps=tuple(_lower(raw)), output=output, source=source)
    if calibration is not None:
        program = program.calibrate(calibration)
    return program
