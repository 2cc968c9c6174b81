"""Additively homomorphic encryption with Paillier (python-paillier): sums and linear scores.

Paillier ciphertexts add, and multiply by plaintext scalars, with no noise
and no depth limit, so they suit what CKKS is heavy for: a linear score
``w . x + b`` of one record, and sums of values encrypted by several data
owners under one key. The client keeps the private key; the server gets the
public modulus and returns results it cannot read. Results are re-randomised
(``obfuscate``) before they leave the server, and weights and biases are
encoded at one fixed exponent, so a returned ciphertext says nothing about how
it was computed beyond the value the client decrypts. Messages are JSON: a kind, the key id
(a hash of the modulus) and the ciphertexts as ``[hex, exponent]`` pairs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, MissingDependencyError

__all__ = ["PaillierClient", "paillier_linear", "paillier_sum"]

FloatArray = npt.NDArray[np.float64]
_MIN_BITS = 2048  # NIST SP 800-57: 2048-bit moduli for 112-bit security; 3072 for 128-bit
_WEIGHT_PRECISION = 2.0**-40  # weights and biases are encoded to 2^-40 ...
_WEIGHT_EXPONENT = -10  # ... which is base-16 exponent -10 in python-paillier
_MAX_EXPONENT = 64  # |exponent| of a request value; beyond it decoding costs 16^|e|


def _phe() -> Any:
    try:
        from phe import paillier  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise MissingDependencyError(
            "Paillier encryption needs python-paillier",
            expected="the `he` extra installed",
            got=f"ImportError: {exc}",
            fix='pip install "veil[he]"',
        ) from exc
    return paillier


def _key_id(n: int) -> str:
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()[:32]


def _expect_kind(payload: Any, kinds: tuple[str, ...]) -> None:
    if not isinstance(payload, dict) or payload.get("kind") not in kinds:
        raise KeyError("kind")


def _dump(kind: str, n: int, numbers: Sequence[Any], **extra: Any) -> bytes:
    values = [[format(e.ciphertext(be_secure=False), "x"), int(e.exponent)] for e in numbers]
    payload = {"kind": kind, "key_id": _key_id(n), "values": values, **extra}
    return json.dumps(payload).encode()


def _load(
    data: bytes, public: Any, kind: str | tuple[str, ...]
) -> tuple[dict[str, Any], list[Any]]:
    kinds = (kind,) if isinstance(kind, str) else kind
    try:
        payload = json.loads(data)
        _expect_kind(payload, kinds)
        raw = [(int(text, 16), int(exponent)) for text, exponent in payload["values"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(
            "not a Paillier message Veil can read",
            expected=f"JSON of kind {' or '.join(kinds)}",
            got=f"{type(exc).__name__}: {exc}",
        ) from exc
    if payload.get("key_id") != _key_id(public.n):
        raise InvalidInputError(
            "the Paillier ciphertexts were made under another key",
            expected=f"key id {_key_id(public.n)[:12]}...",
            got=f"key id {str(payload.get('key_id'))[:12]}...",
            fix="encrypt with the public key this party holds",
        )
    paillier = _phe()
    numbers = []
    for value, exponent in raw:
        if abs(exponent) > _MAX_EXPONENT:
            raise InvalidInputError(
                "a Paillier value has an out-of-range exponent",
                expected=f"|exponent| <= {_MAX_EXPONENT}",
                got=str(exponent),
                fix="encrypt with PaillierClient.encrypt (precision 1e-6 gives exponent -5)",
            )
        if not 0 < value < public.nsquare:
            raise InvalidInputError(
                "a Paillier ciphertext is out of range",
                expected="0 < c < n^2",
                got=f"a {value.bit_length()}-bit value",
                fix="the message was tampered with or truncated",
            )
        numbers.append(paillier.EncryptedNumber(public, value, exponent))
    return payload, numbers


class PaillierClient:
    """The key holder: makes keys, encrypts vectors, decrypts results."""

    def __init__(self, public: Any, private: Any) -> None:
        self.public = public
        self._private = private
        self.timings: dict[str, float] = {}

    @classmethod
    def generate(cls, bits: int = 3072) -> PaillierClient:
        """A fresh key pair (3072-bit modulus by default: 128-bit security)."""
        if bits < _MIN_BITS:
            raise InvalidInputError(
                "the Paillier modulus is too small",
                expected=f"at least {_MIN_BITS} bits",
                got=str(bits),
            )
        started = time.perf_counter()
        public, private = _phe().generate_paillier_keypair(n_length=bits)
        client = cls(public, private)
        client.timings["keygen_s"] = time.perf_counter() - started
        return client

    @property
    def key_id(self) -> str:
        """A hash of the public modulus."""
        return _key_id(self.public.n)

    def public_bytes(self) -> bytes:
        """The public key as JSON (all the server needs)."""
        return json.dumps({"kind": "paillier-public", "n": format(self.public.n, "x")}).encode()

    def to_bytes(self) -> bytes:
        """The key pair as JSON, for storage the caller protects."""
        return json.dumps(
            {
                "kind": "paillier-secret",
                "n": format(self.public.n, "x"),
                "p": format(self._private.p, "x"),
                "q": format(self._private.q, "x"),
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PaillierClient:
        """Read :meth:`to_bytes` back."""
        paillier = _phe()
        try:
            payload = json.loads(data)
            _expect_kind(payload, ("paillier-secret",))
            n, p, q = (int(payload[k], 16) for k in ("n", "p", "q"))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(
                "not a Paillier key file",
                expected="the JSON written by `veil he keygen --scheme paillier`",
                got=f"{type(exc).__name__}: {exc}",
            ) from exc
        if p * q != n:
            raise InvalidInputError("the Paillier key file is inconsistent", got="p * q != n")
        public = paillier.PaillierPublicKey(n)
        return cls(public, paillier.PaillierPrivateKey(public, p, q))

    def encrypt(self, values: npt.ArrayLike, *, precision: float = 1e-6) -> bytes:
        """Encrypt a vector (each value to within ``precision``)."""
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        if array.size == 0 or not np.all(np.isfinite(array)):
            raise InvalidInputError(
                "Paillier encrypts finite numbers",
                expected="a non-empty vector of finite values",
                got=f"{array.size} values, finite: {bool(np.all(np.isfinite(array)))}",
            )
        started = time.perf_counter()
        numbers = [self.public.encrypt(float(v), precision=precision) for v in array]
        self.timings["encrypt_s"] = time.perf_counter() - started
        return _dump("paillier-request", self.public.n, numbers)

    def decrypt(self, message: bytes) -> FloatArray:
        """Decrypt a request or a result into floats."""
        _, numbers = _load(message, self.public, ("paillier-result", "paillier-request"))
        started = time.perf_counter()
        values = np.array([self._private.decrypt(number) for number in numbers], dtype=np.float64)
        self.timings["decrypt_s"] = time.perf_counter() - started
        return values


def _public_from(public_bytes: bytes) -> Any:
    paillier = _phe()
    try:
        payload = json.loads(public_bytes)
        _expect_kind(payload, ("paillier-public",))
        n = int(payload["n"], 16)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(
            "not a Paillier public key",
            expected="the JSON of PaillierClient.public_bytes()",
            got=f"{type(exc).__name__}: {exc}",
        ) from exc
    if n.bit_length() < _MIN_BITS:
        raise InvalidInputError(
            "the Paillier modulus is too small",
            expected=f">= {_MIN_BITS} bits",
            got=str(n.bit_length()),
        )
    return paillier.PaillierPublicKey(n)


def paillier_linear(
    public_bytes: bytes, request: bytes, weight: npt.ArrayLike, bias: npt.ArrayLike
) -> bytes:
    """Server side: ``W x + b`` on an encrypted ``x``, with ``W`` and ``b`` in the clear.

    Args:
        public_bytes: The client's :meth:`PaillierClient.public_bytes`.
        request: The client's encrypted vector.
        weight: ``(outputs, features)`` or ``(features,)``.
        bias: ``(outputs,)`` or a scalar.
    """
    public = _public_from(public_bytes)
    _, numbers = _load(request, public, "paillier-request")
    matrix = np.atleast_2d(np.asarray(weight, dtype=np.float64))
    offsets = np.broadcast_to(np.asarray(bias, dtype=np.float64), (matrix.shape[0],))
    if matrix.shape[1] != len(numbers) or not np.all(np.isfinite(matrix)):
        raise InvalidInputError(
            "the encrypted vector does not fit the weights",
            expected=f"{matrix.shape[1]} encrypted features and finite weights",
            got=f"{len(numbers)} features",
        )
    paillier = _phe()
    # weights and bias at one public exponent: a result's exponent then depends on the
    # request alone, never on the size of a weight (which it would otherwise reveal)
    target = min(number.exponent for number in numbers) + _WEIGHT_EXPONENT
    results = []
    for row, offset in zip(matrix, offsets, strict=True):
        total = public.encrypt(
            paillier.EncodedNumber.encode(public, float(offset), precision=_WEIGHT_PRECISION)
        )
        for w, number in zip(row, numbers, strict=True):
            encoded = paillier.EncodedNumber.encode(public, float(w), precision=_WEIGHT_PRECISION)
            total = total + number * encoded
        total = total.decrease_exponent_to(target)
        total.obfuscate()
        results.append(total)
    return _dump("paillier-result", public.n, results)


def paillier_sum(public_bytes: bytes, requests: Sequence[bytes]) -> bytes:
    """Server side: the element-wise sum of vectors encrypted under one key."""
    public = _public_from(public_bytes)
    vectors = [_load(message, public, "paillier-request")[1] for message in requests]
    if not vectors or len({len(v) for v in vectors}) != 1:
        raise InvalidInputError(
            "Paillier sums need vectors of one length",
            expected="at least one request, all of the same length",
            got=str([len(v) for v in vectors]),
        )
    totals = []
    for column in zip(*vectors, strict=True):
        total = column[0]
        for number in column[1:]:
            total = total + number
        total.obfuscate()
        totals.append(total)
    return _dump("paillier-result", public.n, totals)
