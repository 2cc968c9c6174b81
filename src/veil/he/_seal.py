"""The few Microsoft SEAL calls Veil's CKKS evaluator needs, through TenSEAL's ``sealapi``.

TenSEAL's high-level tensors hide rotations: ``CKKSVector.mm`` rotates once per
matrix row, and ``Context.generate_galois_keys`` makes a key for every power of
two (tens of MB). Veil's evaluator needs a handful of chosen rotations, so it
talks to the SEAL objects TenSEAL ships (``tenseal.sealapi``) directly: the
same library, the same parameters, with keys made only for the steps a model
uses. ``sealapi`` serialises to file paths only, so bytes go through a private
scratch directory (``/dev/shm`` where it exists).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from veil.errors import InvalidInputError, MissingDependencyError

__all__ = ["galois_element", "load_object", "save_object", "seal"]

_INSTALL = 'pip install "veil[he]"'
_scratch: dict[str, Path] = {}
_lock = threading.Lock()
_counter = [0]


def seal() -> Any:
    """``tenseal.sealapi``, or an error that names the install command."""
    try:
        from tenseal import sealapi  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise MissingDependencyError(
            "homomorphic encryption needs TenSEAL",
            expected="the `he` extra installed",
            got=f"ImportError: {exc}",
            fix=_INSTALL,
        ) from exc
    return sealapi


def _scratch_dir() -> Path:
    with _lock:
        if "dir" not in _scratch:
            shm = Path("/dev/shm")  # noqa: S108 - a private 0700 directory inside it
            base = str(shm) if shm.is_dir() else None
            path = Path(tempfile.mkdtemp(prefix="veil-he-", dir=base))
            _scratch["dir"] = path
            atexit.register(shutil.rmtree, path, ignore_errors=True)
        _counter[0] += 1
        return _scratch["dir"] / f"{os.getpid()}-{_counter[0]}.bin"  # forked workers share the dir


class _Saveable(Protocol):
    def save(self, path: str) -> None: ...


def save_object(obj: _Saveable) -> bytes:
    """SEAL's own serialisation (compressed, seeded where SEAL can) as bytes."""
    path = _scratch_dir()
    try:
        obj.save(str(path))
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def load_object(kind: str, context: Any, data: bytes) -> Any:
    """Load a SEAL ``Ciphertext``, ``RelinKeys``, ``GaloisKeys``, ``PublicKey`` or ``SecretKey``.

    SEAL checks the header, the parameters and every coefficient against the
    context: truncated or garbled bytes raise :class:`InvalidInputError`.
    """
    sealapi = seal()
    obj = getattr(sealapi, kind)()
    path = _scratch_dir()
    try:
        path.write_bytes(data)
        try:
            obj.load(context, str(path))
        except (RuntimeError, ValueError, OSError) as exc:
            raise InvalidInputError(
                f"the encrypted {kind} could not be read",
                expected=f"a SEAL {kind} made for these encryption parameters",
                got=f"{len(data)} bytes that SEAL rejects ({exc})",
                fix="the file is truncated, tampered with or made for other keys; "
                "ask its sender for a fresh copy",
            ) from exc
    finally:
        path.unlink(missing_ok=True)
    return obj


def galois_element(step: int, poly_modulus_degree: int) -> int:
    """The Galois element of a left rotation by ``step`` slots (SEAL's convention).

    A rotation by ``step`` is the automorphism ``X -> X^(3^step mod 2N)``;
    negative steps go the other way round the ``N/2`` slots.
    """
    slots = poly_modulus_degree // 2
    if step == 0 or abs(step) >= slots:
        raise InvalidInputError(
            "a rotation step is out of range",
            expected=f"a non-zero step with |step| < {slots}",
            got=str(step),
        )
    exponent = step if step > 0 else slots + step
    return pow(3, exponent, 2 * poly_modulus_degree)
