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

The server works under a key the client chose, so the key is checked before
any exponentiation: the modulus must be odd, between 2048 and 4096 bits by
default (a 65,536-bit modulus once made one 4-feature score cost 243 s), free
of small prime factors and not a square; a request holds at most 4,096
ciphertexts, each with a bounded exponent.

A malicious client can pack its inputs (feature ``i`` the integer
``2^(64 (i+1))``) so that one score holds every weight in its own bit field:
the server cannot see the size of an encrypted input. With a declared input
bound, :func:`paillier_linear` masks each score: it adds ``T + r M`` for a
fresh uniform ``r``, where ``M = 2T + 1`` and ``T`` bounds the score's integer
encoding over in-range inputs at the declared precision. An honest client
recovers the score as the residue modulo ``M``; a packed query yields no more
than that residue, as many bits as one honest score (Veil's own construction,
in the spirit of the output masking of Bost et al., NDSS 2015).
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, MissingDependencyError

__all__ = ["PaillierClient", "paillier_linear", "paillier_sum"]

FloatArray = npt.NDArray[np.float64]
_MIN_BITS = 2048  # NIST SP 800-57: 2048-bit moduli for 112-bit security; 3072 for 128-bit
_MAX_BITS = 4096  # the default ceiling on a client's modulus: the server's work grows as bits^3
_LIMIT_BITS = 16384  # no setting may raise the ceiling beyond this
_MAX_VALUES = 4096  # ciphertexts in one request
_MAX_KEY_BYTES = 1 << 20  # a public key's JSON: read, then refused by its bit length
_BASE = 16  # python-paillier's encoding base
# the primes below 2,000: a real Paillier modulus is the product of two large primes
_SMALL_PRIMES = math.prod(p for p in range(3, 2000, 2) if all(p % d for d in range(3, p, 2)))
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
        if len(payload["values"]) > _MAX_VALUES:
            raise InvalidInputError(
                "a Paillier message holds too many ciphertexts",
                expected=f"at most {_MAX_VALUES} values in one message",
                got=f"{len(payload['values'])} values",
                fix="split the vector over several requests",
            )
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
        if bits > _LIMIT_BITS:
            raise InvalidInputError(
                "the Paillier modulus is too large",
                expected=f"at most {_LIMIT_BITS} bits (servers refuse more than {_MAX_BITS} "
                "by default)",
                got=str(bits),
                fix="use 3072 bits (128-bit security)",
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

    def encrypt(
        self, values: npt.ArrayLike, *, precision: float = 1e-6, bound: float | None = None
    ) -> bytes:
        """Encrypt a vector (each value to within ``precision``).

        Args:
            values: The vector.
            precision: The encoding precision (the server's declared one when it masks).
            bound: The server's declared input bound: values beyond it are refused here,
                because a masked score of an out-of-range input decrypts to garbage.
        """
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        if array.size == 0 or not np.all(np.isfinite(array)):
            raise InvalidInputError(
                "Paillier encrypts finite numbers",
                expected="a non-empty vector of finite values",
                got=f"{array.size} values, finite: {bool(np.all(np.isfinite(array)))}",
            )
        if array.size > _MAX_VALUES:
            raise InvalidInputError(
                "too many values for one Paillier request",
                expected=f"at most {_MAX_VALUES}",
                got=str(array.size),
                fix="split the vector over several requests",
            )
        if bound is not None and float(np.max(np.abs(array))) > bound:
            raise InvalidInputError(
                "an input value is outside the server's declared range",
                expected=f"|x| <= {bound:.6g}",
                got=f"max |x| = {float(np.max(np.abs(array))):.6g}",
                fix="scale the inputs as the server's model expects",
            )
        started = time.perf_counter()
        numbers = [self.public.encrypt(float(v), precision=precision) for v in array]
        self.timings["encrypt_s"] = time.perf_counter() - started
        return _dump("paillier-request", self.public.n, numbers)

    def decrypt(self, message: bytes) -> FloatArray:
        """Decrypt a request or a result into floats."""
        payload, numbers = _load(message, self.public, ("paillier-result", "paillier-request"))
        masks = _read_masks(payload, len(numbers), self.public.n)
        started = time.perf_counter()
        if masks is None:
            decoded = [self._private.decrypt(number) for number in numbers]
        else:
            decoded = []
            for number, modulus in zip(numbers, masks, strict=True):
                raw = int(self._private.decrypt_encoded(number).encoding)
                shift = (modulus - 1) // 2
                decoded.append(
                    float(Fraction(raw % modulus - shift) * Fraction(_BASE) ** number.exponent)
                )
        values = np.array(decoded, dtype=np.float64)
        self.timings["decrypt_s"] = time.perf_counter() - started
        return values


def _read_masks(payload: dict[str, Any], count: int, n: int) -> list[int] | None:
    if "masks" not in payload:
        return None
    try:
        masks = [int(text, 16) for text in payload["masks"]]
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            "the Paillier result's masks are unreadable", got=f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(masks) != count or any(not 1 < m < n or m % 2 == 0 for m in masks):
        raise InvalidInputError(
            "the Paillier result's masks are malformed",
            expected=f"{count} odd moduli between 1 and n",
            got=f"{len(masks)} values",
            fix="the message was tampered with or truncated",
        )
    return masks


def _check_max_bits(max_bits: int) -> None:
    if not _MIN_BITS <= max_bits <= _LIMIT_BITS:
        raise InvalidInputError(
            "max_bits is out of range",
            expected=f"{_MIN_BITS} <= max_bits <= {_LIMIT_BITS}",
            got=str(max_bits),
            fix=f"keep the default ({_MAX_BITS})",
        )


def _public_from(public_bytes: bytes, max_bits: int = _MAX_BITS) -> Any:
    """The client's public key, refused unless it is a plausible modulus of a bounded size.

    Every check here is cheap (a bit length, a gcd, an integer square root) and runs
    before any exponentiation under the key.
    """
    _check_max_bits(max_bits)
    paillier = _phe()
    if len(public_bytes) > _MAX_KEY_BYTES:
        raise InvalidInputError(
            "the Paillier public key is too large",
            expected=f"a modulus of at most {max_bits} bits",
            got=f"{len(public_bytes)} bytes",
        )
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
    if n.bit_length() > max_bits:
        raise InvalidInputError(
            "the Paillier modulus is too large: the server's work grows with its cube",
            expected=f"a modulus of {_MIN_BITS} to {max_bits} bits",
            got=f"a {n.bit_length()}-bit modulus",
            fix="make keys with `veil he keygen --scheme paillier` (3072 bits by default)",
        )
    reason = None
    if n % 2 == 0:
        reason = "it is even, and a Paillier modulus is odd"
    elif math.gcd(n, _SMALL_PRIMES) != 1:
        reason = "it has a small prime factor"
    elif math.isqrt(n) ** 2 == n:
        reason = "it is a square"
    if reason is not None:
        raise InvalidInputError(
            "the Paillier modulus is malformed",
            expected="the product of two large distinct primes",
            got=f"a {n.bit_length()}-bit modulus: {reason}",
            fix="make keys with `veil he keygen --scheme paillier`",
        )
    return paillier.PaillierPublicKey(n)


def _mask_modulus(row: FloatArray, offset: float, input_bound: float, exponent: int) -> int:
    """``2T + 1``, where ``T`` bounds ``|sum w_i x_i + b|`` in the result's integer encoding.

    Weights and bias are encoded at base-16 exponent -10 and inputs at ``exponent``;
    the result is at ``exponent - 10``, so the bias is scaled by ``16^-exponent``.
    """
    scale = Fraction(_BASE) ** -_WEIGHT_EXPONENT
    input_scale = Fraction(_BASE) ** -exponent
    largest_input = math.floor(Fraction(input_bound) * input_scale) + 1
    total = sum(abs(round(Fraction(float(w)) * scale)) + 1 for w in row) * largest_input
    total += (abs(round(Fraction(float(offset)) * scale)) + 1) * math.ceil(input_scale)
    return 2 * int(total) + 1


def paillier_linear(
    public_bytes: bytes,
    request: bytes,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike,
    *,
    max_bits: int = _MAX_BITS,
    input_bound: float | None = None,
    input_precision: float = 1e-6,
) -> bytes:
    """Server side: ``W x + b`` on an encrypted ``x``, with ``W`` and ``b`` in the clear.

    Args:
        public_bytes: The client's :meth:`PaillierClient.public_bytes`.
        request: The client's encrypted vector.
        weight: ``(outputs, features)`` or ``(features,)``.
        bias: ``(outputs,)`` or a scalar.
        max_bits: The largest client modulus served (default 4096; at most 16384).
        input_bound: The declared bound on ``|x_i|``. When given, each score is
            masked (see the module docstring), so that a packed query learns
            no more than one honest score; inputs beyond it decrypt to garbage
            (the client refuses them: ``PaillierClient.encrypt(bound=...)``).
        input_precision: The declared encoding precision of the inputs (masked
            scores only): requests at any other exponent are refused.

    Raises:
        InvalidInputError: For a key outside the allowed sizes or malformed, a
            request of more than 4,096 values, or (masked) at another precision.
    """
    public = _public_from(public_bytes, max_bits)
    _, numbers = _load(request, public, "paillier-request")
    expected_exponent = math.floor(math.log(input_precision, _BASE))
    if input_bound is not None:
        if not (math.isfinite(input_bound) and input_bound > 0 and 0 < input_precision < 1):
            raise InvalidInputError(
                "the declared input range is invalid",
                expected="input_bound > 0 and 0 < input_precision < 1",
                got=f"input_bound={input_bound}, input_precision={input_precision}",
            )
        if any(number.exponent != expected_exponent for number in numbers):
            raise InvalidInputError(
                "a Paillier value is not at the declared precision's exponent",
                expected=f"every exponent {expected_exponent} (precision {input_precision:g})",
                got=str(sorted({int(number.exponent) for number in numbers})),
                fix=f"encrypt with PaillierClient.encrypt(values, precision={input_precision:g})",
            )
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
    masks = []
    for row, offset in zip(matrix, offsets, strict=True):
        total = public.encrypt(
            paillier.EncodedNumber.encode(public, float(offset), precision=_WEIGHT_PRECISION)
        )
        for w, number in zip(row, numbers, strict=True):
            encoded = paillier.EncodedNumber.encode(public, float(w), precision=_WEIGHT_PRECISION)
            total = total + number * encoded
        total = total.decrease_exponent_to(target)
        if input_bound is not None:
            modulus = _mask_modulus(row, float(offset), input_bound, expected_exponent)
            if 2 * modulus > public.n:
                raise InvalidInputError(
                    "the declared input range is too wide to mask under this key",
                    expected=f"a score bound below n/4 ({public.n.bit_length() - 2} bits)",
                    got=f"{modulus.bit_length()} bits",
                )
            # T + r M, r uniform below (n - M) / M: an honest score + T stays in [0, M)
            mask = (modulus - 1) // 2 + secrets.randbelow((public.n - modulus) // modulus) * modulus
            total = total + public.encrypt(paillier.EncodedNumber(public, mask, target))
            masks.append(format(modulus, "x"))
        total.obfuscate()
        results.append(total)
    extra = {"masks": masks} if input_bound is not None else {}
    return _dump("paillier-result", public.n, results, **extra)


def paillier_sum(
    public_bytes: bytes, requests: Sequence[bytes], *, max_bits: int = _MAX_BITS
) -> bytes:
    """Server side: the element-wise sum of vectors encrypted under one key.

    The key is checked as in :func:`paillier_linear`; each vector holds at most
    4,096 values.
    """
    public = _public_from(public_bytes, max_bits)
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
