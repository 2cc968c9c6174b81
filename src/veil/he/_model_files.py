"""Model files, read without unpickling unless the caller trusts the file.

Model files are read without unpickling (:func:`load_model_file`): a PyTorch
state dict with ``torch.load(weights_only=True)`` plus a JSON architecture of
allow-listed layers, or a linear model's coefficients in an ``.npz`` read with
``allow_pickle=False``. A pickle (a whole ``torch.save``'d module, a joblib
file) runs whatever code it holds when it is loaded, so it is read only with
``trust_pickle=True``, and then with a warning.
"""

from __future__ import annotations

import json
import pickle
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.he._compile import compile_model, poly_activation, torch_module
from veil.he._program import OUTPUTS, HEProgram
from veil.he._steps import Affine

__all__ = ["PickleTrustWarning", "load_model_file"]


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
    torch = torch_module()
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
    torch = torch_module()
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
    if output not in OUTPUTS or weight.ndim != 2 or not np.all(np.isfinite(weight)):  # noqa: PLR2004
        raise InvalidInputError(
            "the coefficients file is not a linear model",
            expected=f"finite 2-D coef and output in {list(OUTPUTS)}",
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
        model = torch_module().load(
            path, weights_only=False, map_location="cpu", pickle_module=_moved_pickle
        )
    else:
        import joblib  # noqa: PLC0415 - scikit-learn's own dependency

        model = joblib.load(path)
    return compile_model(model, input_shape=input_shape, calibration=calibration)
