"""The files of an encrypted-inference exchange: inputs, a client's secret key, the server's answer.

What ``veil he encrypt``, ``infer`` and ``decrypt`` do besides reading and
writing files, as library calls: :func:`load_inputs` reads rows of features,
:func:`client_from_bytes` opens a secret key of either scheme, and
:func:`respond` answers a request with the scheme its public context names
(CKKS for a compiled program, Paillier for one affine step).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, NotFoundError
from veil.he._client import HEClient
from veil.he._paillier import PaillierClient, paillier_linear
from veil.he._program import HEProgram
from veil.he._server import HEServer
from veil.he._steps import Affine

__all__ = ["client_from_bytes", "load_inputs", "respond"]


def load_inputs(path: str | Path, scale: float = 1.0) -> npt.NDArray[np.float64]:
    """Rows of features from ``.npy`` or ``.csv``/``.txt`` (no header), divided by ``scale``.

    Raises:
        NotFoundError: No file at ``path``.
        InvalidInputError: Another format, or values that are not numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError("input not found", expected=f"a file at {path}", got="nothing there")
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif path.suffix in (".csv", ".txt"):
            values = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise InvalidInputError(
                "unknown input format",
                expected="a .npy array or a .csv of numbers (one input per row, no header)",
                got=path.suffix or "no suffix",
            )
    except ValueError as exc:
        raise InvalidInputError(
            "the input is not a numeric array",
            expected="numbers only, one input per row",
            got=str(exc),
        ) from exc
    return np.asarray(values, dtype=np.float64) / scale


def client_from_bytes(data: bytes) -> HEClient | PaillierClient:
    """The client whose secret key ``data`` holds: Paillier (JSON) or CKKS."""
    if data.startswith(b"{"):
        return PaillierClient.from_bytes(data)
    return HEClient.from_bytes(data)


def respond(
    program: HEProgram,
    public_context: bytes,
    request: bytes,
    *,
    workers: int | None = None,
    rerandomize: bool = False,
    flood_sigma: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> bytes:
    """The server's encrypted response to ``request``, with no secret key.

    A Paillier public key (JSON) gets a linear score, for a program of one
    affine step; a CKKS public context goes to :class:`HEServer` (with its
    ``workers``, ``rerandomize``, ``flood_sigma`` and ``progress``).

    Raises:
        InvalidInputError: ``rerandomize`` or ``flood_sigma`` with a Paillier
            key, or a Paillier key for a program that is not one affine step.
    """
    if public_context.startswith(b"{") and (rerandomize or flood_sigma is not None):
        raise InvalidInputError(
            "--rerandomize and --flood-sigma apply to CKKS responses",
            expected="a CKKS public context",
            got="a Paillier public key",
            fix="drop the options (Paillier scores have their own opt-in mask)",
        )
    if public_context.startswith(b"{"):  # a Paillier public key: affine programs only
        if program.depth != 1 or not isinstance(program.steps[0], Affine):
            raise InvalidInputError(
                "Paillier evaluates linear models only",
                expected="a program of one affine step (a linear or logistic model)",
                got=f"depth {program.depth}",
                fix="use CKKS keys (`veil he keygen --plan ...`) for this model",
            )
        step = program.steps[0]
        return paillier_linear(public_context, request, step.weight, step.bias)
    server = HEServer(
        program, public_context, workers=workers, rerandomize=rerandomize, flood_sigma=flood_sigma
    )
    return server.infer(request, progress=progress)
