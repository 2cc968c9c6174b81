"""Encrypted inference with CKKS: the client holds the keys, the server holds the model.

Two ciphertext layouts, both exact evaluations of a compiled :class:`HEProgram`:

``vector`` (one input, lowest latency)
    The input, zero-padded to a power of two ``P``, is repeated across all
    ``N/2`` slots, so a rotation of the whole ciphertext is a cyclic rotation
    of every copy. An affine step ``m x n`` is the hybrid diagonal method
    (Halevi and Shoup 2014; Juvekar et al., GAZELLE 2018): ``m'`` diagonals
    (``m`` rounded up to a power of two) multiplied with rotations of the
    input, combined with baby-step/giant-step (``B`` baby rotations by one
    slot, ``m'/B`` giant rotations by ``B`` in Horner form), then folded by
    ``m', 2m', ... P/2``. The result is the output repeated every ``m'``
    slots: the same layout again, so steps chain without re-encryption. Only
    the rotation steps the program uses get Galois keys.

``batch`` (many inputs, lowest cost per input)
    Ciphertext ``i`` holds feature ``i`` of up to ``N/2`` inputs, one per
    slot. An affine step is a sum of ciphertext-times-scalar products (zero
    weights are skipped, so a convolution costs its non-zero weights), and no
    rotation is ever needed: the keys carry no Galois keys at all. Groups of
    ``N/2`` inputs are evaluated in parallel worker processes.

Every plaintext multiplier is encoded at the scale of the prime the next
rescale drops, so affine steps leave the scale exactly as they found it.

Bytes on the wire are envelopes: a magic, a JSON header (kind, key id,
layout, count, section sizes, SHA-256 of the sections) and SEAL's own
serialisations. The public context holds the plan, relinearisation keys, the
chosen Galois keys and the public key, never the secret key. A response encrypted for other
keys is refused by key id; one whose bytes were altered fails its checksum or
SEAL's validation; and decrypted values are checked against the plan's range
and (vector layout) the agreement of their copies, which catches decryption
under the wrong key, transport damage and overflow. None of this is integrity
against the server itself: it can return any affine function of the request
as a well-formed response. The threat model is an honest-but-curious server.
Against a client that deviates from the protocol, a server may opt in to
re-randomising its responses with the client's public key and flooding them
with Gaussian noise (``HEServer``'s ``rerandomize`` and ``flood_sigma``);
``docs/he.md`` says what that hides and what it does not.

The server checks, before it evaluates anything, that a vector-layout context
holds a Galois key for every rotation the program needs (a context may claim
keys it lacks). The secret key never passes through a named file: SEAL's
serialisation reads and writes paths, so the key goes through an anonymous
in-memory file (``memfd_create``) that the kernel frees when the process
ends, even under ``kill -9``.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.he._layout import LayerShape, layer_shapes, next_pow2, vector_rotations
from veil.he._plan import HEPlan
from veil.he._program import HEProgram
from veil.he._seal import galois_element, load_object, save_object, seal
from veil.he._steps import Affine, Square

__all__ = [
    "HEClient",
    "HEServer",
    "error_bound",
]

FloatArray = npt.NDArray[np.float64]
MAGIC = b"VEILHE\x01"
_KINDS = ("context", "secret", "request", "response")
_SIGMA = 3.2  # SEAL's error standard deviation
_TAIL = 6.0  # bounds are at six standard deviations per slot


def error_bound(program: HEProgram, plan: HEPlan, *, layout: str = "vector") -> float:
    """A bound on ``|decrypted - plaintext|`` for any output, derived from the parameters.

    The noise terms are the canonical-embedding bounds of Cheon, Kim, Kim and
    Song (2017, Lemmas 1-3), divided by the scale:

    - a fresh ciphertext: ``6 sigma sqrt(N)`` (encryption noise) plus
      ``6 sqrt(N/12)`` (rounding the encoded input);
    - a rescale: ``sqrt(N/3) (3 + 8 sqrt(h))`` with ``h = 2N/3``, the expected
      Hamming weight of SEAL's ternary secret. The rounding error is ``r0 +
      r1 s``: a product of two near-Gaussian slots has exponential, not
      Gaussian, tails, so six standard deviations would not be enough;
    - a key switch (rotation, relinearisation): twice a rescale's bound (the
      special prime is at least as large as every data prime);
    - an encoded weight: ``6 sqrt(N/12)`` over the scale it is encoded at, per
      product summed into a slot.

    They are carried through the program with the row sums of ``|W|`` (a worst
    case over signs) and the calibrated magnitudes (a square turns ``e`` at
    magnitude ``M`` into ``2 M e + e^2``).
    """
    degree = plan.poly_modulus_degree
    scale = plan.scale
    fresh = (_TAIL * _SIGMA * math.sqrt(degree) + _TAIL * math.sqrt(degree / 12)) / scale
    rescale = math.sqrt(degree / 3) * (3 + 8 * math.sqrt(2 * degree / 3)) / scale
    switch = 2 * rescale
    weight_rounding = _TAIL * math.sqrt(degree / 12) / scale
    shapes = layer_shapes(program.steps, program.input_dim)
    error = fresh
    magnitude = max(program.input_bound, 1e-12)
    for step, shape, after in zip(program.steps, shapes, program.magnitudes, strict=True):
        if isinstance(step, Affine):
            row_sum = float(np.max(np.sum(np.abs(step.weight), axis=1)))
            if layout == "vector" and shape is not None:
                # baby rotations are multiplied by the weights; every slot sums `period`
                # encoded-weight products; each giant group is rescaled on its own and
                # Horner adds G - 1 rotations; each fold doubles what came before it
                doubling = 2 ** len(shape.folds)
                before_folds = shape.giant * rescale + (shape.giant - 1) * switch
                error = (
                    row_sum * (error + (shape.baby - 1) * switch)
                    + shape.period * magnitude * weight_rounding
                    + doubling * before_folds
                    + (doubling - 1) * switch
                )
            else:
                terms = int(np.max(np.count_nonzero(step.weight, axis=1)))
                error = row_sum * error + terms * magnitude * weight_rounding + rescale
        else:
            error = 2 * magnitude * error + error * error + switch + rescale
        magnitude = after
    return error


def _secure_gaussian(count: int, sigma: float) -> FloatArray:
    """``count`` draws from ``N(0, sigma^2)``: Box-Muller on 53-bit uniforms from ``os.urandom``.

    No seedable or global generator is involved. Floating-point Box-Muller is
    not exact in the far tails; the draws are rounded to integers at the
    ciphertext's scale when encoded, far below the noise itself.
    """
    pairs = (count + 1) // 2
    words = np.frombuffer(os.urandom(16 * pairs), dtype=np.uint64) >> np.uint64(11)
    uniform = words.astype(np.float64) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log1p(-uniform[:pairs]))  # 1 - u lies in (0, 1]
    angle = 2.0 * math.pi * uniform[pairs:]
    draws = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return np.asarray(sigma * draws, dtype=np.float64)


# ----------------------------------------------------------------------------- envelopes


def _pack(kind: str, header: dict[str, Any], sections: Sequence[bytes]) -> bytes:
    body = b"".join(sections)
    meta = dict(header, kind=kind, sizes=[len(s) for s in sections])
    meta["sha256"] = hashlib.sha256(body).hexdigest()
    encoded = json.dumps(meta, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(encoded)) + encoded + body


def _unpack(data: bytes, kind: str) -> tuple[dict[str, Any], list[bytes]]:
    what = {
        "context": "a public context (`veil he keygen` writes public.ctx)",
        "secret": "a secret key file (`veil he keygen` writes secret.key)",
        "request": "an encrypted request (`veil he encrypt`)",
        "response": "an encrypted response (`veil he infer`)",
    }[kind]
    prefix = len(MAGIC) + 4
    if len(data) < prefix or not data.startswith(MAGIC):
        raise InvalidInputError(
            "not a Veil HE file",
            expected=what,
            got=f"{len(data)} bytes without Veil's HE header",
        )
    (length,) = struct.unpack(">I", data[len(MAGIC) : prefix])
    try:
        meta = json.loads(data[prefix : prefix + length])
        sizes = [int(size) for size in meta["sizes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(
            "the HE file's header is damaged",
            expected=what,
            got=f"an unreadable header ({exc})",
            fix="the file is truncated or tampered with; ask its sender for a fresh copy",
        ) from exc
    if meta.get("kind") != kind:
        raise InvalidInputError(
            "wrong kind of HE file", expected=what, got=f"a {meta.get('kind')!r} file"
        )
    body = data[prefix + length :]
    if len(body) != sum(sizes) or hashlib.sha256(body).hexdigest() != meta.get("sha256"):
        raise InvalidInputError(
            "the HE file does not match its checksum",
            expected=f"{sum(sizes)} bytes with SHA-256 {str(meta.get('sha256'))[:16]}...",
            got=f"{len(body)} bytes that differ",
            fix="the file is truncated or tampered with; ask its sender for a fresh copy",
        )
    sections, offset = [], 0
    for size in sizes:
        sections.append(body[offset : offset + size])
        offset += size
    return meta, sections


# ----------------------------------------------------------------------------- SEAL context


class _Context:
    """SEAL objects for one plan (no keys)."""

    def __init__(self, plan: HEPlan) -> None:
        self.api = seal()
        self.plan = plan
        params = self.api.EncryptionParameters(self.api.SCHEME_TYPE.CKKS)
        params.set_poly_modulus_degree(plan.poly_modulus_degree)
        params.set_coeff_modulus(
            self.api.CoeffModulus.Create(plan.poly_modulus_degree, list(plan.coeff_mod_bit_sizes))
        )
        # SEAL itself refuses parameters below 128-bit security here
        self.context = self.api.SEALContext(params, True, self.api.SEC_LEVEL_TYPE.TC128)  # noqa: FBT003 - pybind11 takes it positionally
        if not self.context.parameters_set():
            raise InvalidInputError(
                "SEAL rejects the CKKS parameters",
                expected="parameters valid at 128-bit security",
                got=self.context.parameters_error_message(),
            )
        self.encoder = self.api.CKKSEncoder(self.context)
        self.evaluator = self.api.Evaluator(self.context)
        self.slots = int(self.encoder.slot_count())
        self.levels: list[Any] = []  # parms ids, from fresh to last
        data = self.context.first_context_data()
        while data is not None:
            self.levels.append(data.parms_id())
            data = data.next_context_data()

    def dropped_prime(self, level: int) -> float:
        """The prime the rescale at ``level`` removes."""
        data = self.context.get_context_data(self.levels[level])
        return float(data.parms().coeff_modulus()[-1].value())

    def encode(self, values: npt.NDArray[Any] | float, level: int, scale: float) -> Any:
        plain = self.api.Plaintext()
        payload = values if isinstance(values, float) else values.tolist()
        self.encoder.encode(payload, self.levels[level], scale, plain)
        return plain

    def ciphertext(self) -> Any:
        return self.api.Ciphertext()


def _check_layout(layout: str, plan: HEPlan) -> None:
    if layout not in ("vector", "batch"):
        raise InvalidInputError(
            "unknown ciphertext layout", expected="'vector' or 'batch'", got=repr(layout)
        )
    if layout not in plan.layouts:
        raise InvalidInputError(
            f"these keys were not made for the {layout} layout",
            expected=f"one of {list(plan.layouts)}",
            got=layout,
            fix="generate keys with both layouts (the default)",
        )


# ----------------------------------------------------------------------------- the secret key


def _anonymous_files() -> bool:
    return hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir()


@contextmanager
def _memory_file(data: bytes = b"") -> Iterator[tuple[int, str]]:
    """An anonymous in-memory file and a path SEAL can open; it has no name on any disk."""
    handle = os.memfd_create("veil-he-secret", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view) :]
        yield handle, f"/proc/self/fd/{handle}"
    finally:
        os.close(handle)


def _save_secret(secret: Any) -> bytes:
    """SEAL's serialisation of the secret key, without a named file where Linux allows."""
    if not _anonymous_files():  # pragma: no cover - not Linux: SEAL's scratch file, mode 0600
        return save_object(secret)
    with _memory_file() as (handle, path):
        secret.save(path)
        return os.pread(handle, os.fstat(handle).st_size, 0)


def _load_secret(context: Any, data: bytes) -> Any:
    """:func:`_save_secret`'s bytes back into a SEAL ``SecretKey``."""
    if not _anonymous_files():  # pragma: no cover - not Linux
        return load_object("SecretKey", context, data)
    secret = seal().SecretKey()
    with _memory_file(data) as (_, path):
        try:
            secret.load(context, path)
        except (RuntimeError, ValueError, OSError) as exc:
            raise InvalidInputError(
                "the secret key could not be read",
                expected="a SEAL SecretKey made for these encryption parameters",
                got=f"{len(data)} bytes that SEAL rejects ({exc})",
                fix="the key file is damaged; restore it from its backup",
            ) from exc
    return secret


# ----------------------------------------------------------------------------- client


class HEClient:
    """The data owner's side: key generation, encryption, decryption.

    The secret key never leaves this object except through :meth:`to_bytes`
    (which the CLI writes with mode 0600 or seals in the vault).
    """

    def __init__(self, plan: HEPlan, secret_key: Any, key_id: str) -> None:
        self.plan = plan
        self.key_id = key_id
        self._ctx = _Context(plan)
        self._secret = secret_key
        api = self._ctx.api
        self._encryptor = api.Encryptor(self._ctx.context, secret_key)
        self._decryptor = api.Decryptor(self._ctx.context, secret_key)
        self.timings: dict[str, float] = {}
        self._generator: Any = None

    @classmethod
    def generate(cls, plan: HEPlan) -> HEClient:
        """Fresh keys for ``plan`` (the plan is public: the server publishes it)."""
        plan.check()
        ctx = _Context(plan)
        started = time.perf_counter()
        generator = ctx.api.KeyGenerator(ctx.context)
        client = cls(plan, generator.secret_key(), secrets.token_hex(16))
        client._generator = generator
        client.timings["keygen_s"] = time.perf_counter() - started
        return client

    def public_context(self) -> bytes:
        """What the server needs: the plan, relinearisation, Galois and public keys.

        No secret key. The public key (the last section, flagged in the
        header) lets a server re-randomise its responses
        (``HEServer(..., rerandomize=True)`` or ``flood_sigma``); it encrypts,
        it cannot decrypt. Contexts from earlier versions have no public key
        and are still read.
        """
        started = time.perf_counter()
        generator = self._generator or self._ctx.api.KeyGenerator(self._ctx.context, self._secret)
        relin = save_object(generator.create_relin_keys())
        sections = [relin]
        if self.plan.galois_steps:
            elements = [
                galois_element(step, self.plan.poly_modulus_degree)
                for step in self.plan.galois_steps
            ]
            sections.append(save_object(generator.create_galois_keys(elements)))
        public = self._ctx.api.PublicKey()
        generator.create_public_key(public)
        sections.append(save_object(public))
        header = {"key_id": self.key_id, "plan": self.plan.to_dict(), "public_key": True}
        blob = _pack("context", header, sections)
        self.timings["public_context_s"] = time.perf_counter() - started
        return blob

    def to_bytes(self) -> bytes:
        """The secret key and plan, for storage the caller protects."""
        header = {"key_id": self.key_id, "plan": self.plan.to_dict()}
        return _pack("secret", header, [_save_secret(self._secret)])

    @classmethod
    def from_bytes(cls, data: bytes) -> HEClient:
        """Read :meth:`to_bytes` back."""
        meta, sections = _unpack(data, "secret")
        plan = HEPlan.from_dict(meta["plan"])
        ctx = _Context(plan)
        secret = _load_secret(ctx.context, sections[0])
        return cls(plan, secret, str(meta["key_id"]))

    def encrypt(self, inputs: npt.ArrayLike, *, layout: str = "vector") -> bytes:
        """Encrypt inputs (one row per input) into a request.

        The vector layout takes exactly one input; the batch layout takes
        any number and packs ``N/2`` per ciphertext group.
        """
        _check_layout(layout, self.plan)
        values = np.asarray(inputs, dtype=np.float64)
        if values.ndim == 1:
            values = values[None, :]
        if values.ndim > 2:  # noqa: PLR2004 - images
            values = values.reshape(values.shape[0], -1)
        width = self.plan.input_dim
        if values.ndim != 2 or values.shape[1] != width or values.shape[0] == 0:  # noqa: PLR2004
            raise InvalidInputError(
                "the input has the wrong shape",
                expected=f"rows of {width} features",
                got=f"shape {tuple(np.shape(inputs))}",
                fix="flatten each input and apply the model's preprocessing first",
            )
        if not np.all(np.isfinite(values)):
            raise InvalidInputError(
                "the input holds NaN or infinite values", expected="finite numbers", got="NaN/inf"
            )
        limit = self.plan.input_limit
        if limit and float(np.max(np.abs(values))) > limit:
            raise InvalidInputError(
                "an input value is outside the range the parameters were planned for",
                expected=f"|x| <= {limit:.4g} (twice the largest calibration input)",
                got=f"max |x| = {float(np.max(np.abs(values))):.4g}",
                fix="scale inputs as in training, or recompile with wider calibration data",
            )
        started = time.perf_counter()
        if layout == "vector":
            if values.shape[0] != 1:
                raise InvalidInputError(
                    "the vector layout encrypts one input",
                    expected="one row",
                    got=f"{values.shape[0]} rows",
                    fix="use layout='batch' (`--batch`) for many inputs",
                )
            period = next_pow2(width)
            padded = np.zeros(period)
            padded[:width] = values[0]
            sections = [self._encrypt_slots(np.tile(padded, self._ctx.slots // period))]
        else:
            slots = self._ctx.slots
            sections = []
            for start in range(0, values.shape[0], slots):
                group = values[start : start + slots]
                for feature in range(width):
                    column = np.zeros(slots)
                    column[: group.shape[0]] = group[:, feature]
                    sections.append(self._encrypt_slots(column))
        header = {"key_id": self.key_id, "layout": layout, "count": int(values.shape[0])}
        blob = _pack("request", header, sections)
        self.timings["encrypt_s"] = time.perf_counter() - started
        return blob

    def _encrypt_slots(self, values: FloatArray) -> bytes:
        plain = self._ctx.encode(values, 0, self.plan.scale)
        # symmetric encryption with the secret key: SEAL stores a seed for half of it
        return save_object(self._encryptor.encrypt_symmetric(plain))

    def decrypt(self, response: bytes) -> FloatArray:
        """Decrypt a response into one row of outputs per input (before the output transform)."""
        meta, sections = _unpack(response, "response")
        if meta.get("key_id") != self.key_id:
            raise InvalidInputError(
                "the response was computed for other keys",
                expected=f"key id {self.key_id[:12]}...",
                got=f"key id {str(meta.get('key_id'))[:12]}...",
                fix="decrypt with the secret key whose public context the server used",
            )
        started = time.perf_counter()
        count, outputs = self._check_response(meta, sections)
        decoded = [self._decrypt_slots(section) for section in sections]
        if meta["layout"] == "vector":
            period = next_pow2(outputs)
            copies = decoded[0].reshape(-1, period)[:, :outputs]
            result = np.median(copies, axis=0)[None, :]
            spread = float(np.max(np.abs(copies - result)))
        else:
            slots = self._ctx.slots
            groups = len(decoded) // outputs
            rows = []
            for group in range(groups):
                block = np.stack(decoded[group * outputs : (group + 1) * outputs], axis=1)
                rows.append(block[: min(slots, count - group * slots)])
            result = np.concatenate(rows, axis=0)
            spread = 0.0
        self.timings["decrypt_s"] = time.perf_counter() - started
        limit = self.plan.magnitude
        if not np.all(np.isfinite(result)) or float(np.max(np.abs(result))) > limit:
            raise InvalidInputError(
                "decryption gave values far outside the planned range",
                expected=f"outputs within +-{limit:.4g}",
                got=f"max |output| = {float(np.max(np.abs(result))):.4g}",
                fix="the response was made for another key, tampered with, or the input left "
                "the calibrated range; do not use these values",
            )
        if spread > max(1e-3 * limit, 1e-6, 8 * self._flood_sigma(meta)):
            raise InvalidInputError(
                "the copies of the result disagree",
                expected="copies in every slot block that agree up to the flooding noise "
                "(the vector layout)",
                got=f"a spread of {spread:.3g}",
                fix="the response was tampered with or made with another key; do not use it",
            )
        return result

    def _flood_sigma(self, meta: dict[str, Any]) -> float:
        """The flooding noise the server declares (0 when none); at most what it may add."""
        value = meta.get("flood_sigma", 0.0)
        limit = self.plan.magnitude / _TAIL if self.plan.magnitude > 0 else math.inf
        if not isinstance(value, (int, float)) or not 0 <= value <= limit:
            raise InvalidInputError(
                "the response declares flooding noise beyond the plan's range",
                expected=f"flood_sigma between 0 and {limit:.4g}",
                got=repr(value),
                fix="the response was tampered with or made by a misconfigured server",
            )
        return float(value)

    def _check_response(self, meta: dict[str, Any], sections: list[bytes]) -> tuple[int, int]:
        """The shape a response must have for this plan, whatever its header says."""
        outputs = self.plan.output_dim
        try:
            count, layout = int(meta["count"]), str(meta["layout"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                "the response header is incomplete", expected="count and layout", got=str(exc)
            ) from exc
        if layout == "vector":
            expected = (1, 1, next_pow2(outputs))
            got = (count, len(sections), int(meta.get("period", 0)))
        else:
            groups = -(-count // self._ctx.slots) if count > 0 else 0
            expected = (count, groups * outputs, 0) if count > 0 else (1, 0, 0)
            got = (count, len(sections), 0)
        if layout not in ("vector", "batch") or got != expected:
            raise InvalidInputError(
                "the response does not have the shape this plan gives",
                expected=f"{layout}: (inputs, ciphertexts, period) = {expected}",
                got=str(got),
                fix="the response was truncated or made for another plan; do not use it",
            )
        return count, outputs

    def predict(self, response: bytes) -> FloatArray:
        """:meth:`decrypt`, then the model's output transform (softmax or sigmoid) if it has one."""
        values = self.decrypt(response)
        if self.plan.output == "softmax":
            shifted = np.exp(values - values.max(axis=1, keepdims=True))
            return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
        if self.plan.output == "sigmoid":
            return np.asarray(1.0 / (1.0 + np.exp(-values)))
        return values

    def _decrypt_slots(self, section: bytes) -> FloatArray:
        ciphertext = load_object("Ciphertext", self._ctx.context, section)
        plain = self._ctx.api.Plaintext()
        self._decryptor.decrypt(ciphertext, plain)
        return np.asarray(self._ctx.encoder.decode_double(plain), dtype=np.float64)


# ----------------------------------------------------------------------------- server


class HEServer:
    """The model owner's side: evaluates a program on ciphertexts, with no secret key.

    Args:
        program: The compiled, calibrated program (the model's weights).
        public_context: The client's :meth:`HEClient.public_context` bytes.
        workers: Processes for the batched layout (default: one per CPU, at
            most 8); the vector layout runs in this process.
        rerandomize: Add a fresh encryption of zero under the client's public
            key to every response ciphertext, so its components are no longer
            a deterministic function of the request and the weights. Needs a
            context with a public key. Off by default.
        flood_sigma: Before re-randomising, add fresh Gaussian noise of this
            standard deviation (in the outputs' units, drawn from
            ``os.urandom``) to the real and the imaginary part of every slot,
            independently (every copy of the vector layout too; the client's
            median over the copies then shrinks it by about their square
            root). It masks the CKKS error, which carries information about
            the weights, when it is much larger than that error
            (:func:`error_bound`); every output then carries that much added
            error. The response declares it, so the client's check of the
            copies allows for it. Implies ``rerandomize``. Off (``None``) by
            default.
            Both assume the client's public key was honestly generated: a
            client that crafts its public key can undo the re-randomisation
            (see ``docs/he.md``).
    """

    def __init__(
        self,
        program: HEProgram,
        public_context: bytes,
        *,
        workers: int | None = None,
        rerandomize: bool = False,
        flood_sigma: float | None = None,
    ) -> None:
        if flood_sigma is not None and not (math.isfinite(flood_sigma) and flood_sigma > 0):
            raise InvalidInputError(
                "flood_sigma must be a positive finite number",
                expected="a standard deviation in the outputs' units, such as 1e-3, or None",
                got=repr(flood_sigma),
                fix="pass a value much larger than error_bound(program, plan) (--flood-sigma)",
            )
        meta, sections = _unpack(public_context, "context")
        self.plan = HEPlan.from_dict(meta["plan"])
        self.key_id = str(meta["key_id"])
        self.program = program
        if (self.plan.input_dim, self.plan.output_dim, self.plan.depth) != (
            program.input_dim,
            program.output_dim,
            program.depth,
        ):
            raise InvalidInputError(
                "the public context was planned for another model",
                expected=f"{program.input_dim} inputs, {program.output_dim} outputs, depth "
                f"{program.depth}",
                got=f"{self.plan.input_dim} inputs, {self.plan.output_dim} outputs, depth "
                f"{self.plan.depth}",
                fix="publish this model's plan (`veil he compile --plan-out`) and make keys for it",
            )
        self._ctx = _Context(self.plan)
        has_public = meta.get("public_key") is True and len(sections) > 1
        keys = sections[:-1] if has_public else sections
        self._relin = load_object("RelinKeys", self._ctx.context, keys[0])
        self._galois = (
            load_object("GaloisKeys", self._ctx.context, keys[1]) if len(keys) > 1 else None
        )
        self.flood_sigma = flood_sigma
        self.rerandomize = rerandomize or flood_sigma is not None
        self._encryptor: Any = None
        if self.rerandomize:
            self._encryptor = self._public_encryptor(sections[-1] if has_public else None)
        if "vector" in self.plan.layouts:
            self._check_rotation_keys()
        self.context_bytes = len(public_context)
        self.workers = workers or max(1, min(len(os.sched_getaffinity(0)), 8))
        self._vector_plain: list[Any] | None = None
        self.timings: dict[str, float] = {}

    def _public_encryptor(self, section: bytes | None) -> Any:
        """An encryptor under the client's public key, for re-randomising responses."""
        if section is None:
            raise InvalidInputError(
                "the public context holds no public key, so responses cannot be "
                "re-randomised or noise-flooded",
                expected="a public context with a public key (made by this version of Veil)",
                got="relinearisation and Galois keys only (a context from an earlier version)",
                fix="have the client export its context again: "
                "HEClient.from_bytes(secret).public_context(), or `veil he keygen` anew",
            )
        # the first prime holds twice the planned magnitude: leave the honest outputs room
        sigma, limit = self.flood_sigma, self.plan.magnitude
        if sigma is not None and limit > 0 and _TAIL * sigma > limit:
            raise InvalidInputError(
                "flood_sigma is too large for the plan's range",
                expected=f"at most {limit / _TAIL:.4g} "
                f"(the planned output magnitude {limit:.4g} / {_TAIL:g})",
                got=f"{sigma:.4g}",
                fix="choose a smaller sigma, or recompile with a larger safety factor",
            )
        public = load_object("PublicKey", self._ctx.context, section)
        return self._ctx.api.Encryptor(self._ctx.context, public)

    def _harden(self, section: bytes, noise: npt.NDArray[np.complex128] | None) -> bytes:
        """Flood (``noise`` added to the message), then re-randomise one response ciphertext."""
        ctx = self._ctx
        ciphertext = load_object("Ciphertext", ctx.context, section)
        parms = ciphertext.parms_id()
        if noise is not None:
            level = ctx.levels.index(parms)
            ctx.evaluator.add_plain_inplace(ciphertext, ctx.encode(noise, level, ciphertext.scale))
        zero = ctx.ciphertext()
        self._encryptor.encrypt_zero(parms, zero)
        zero.scale = ciphertext.scale
        ctx.evaluator.add_inplace(ciphertext, zero)
        return save_object(ciphertext)

    def _harden_all(self, sections: list[bytes]) -> list[bytes]:
        slots = self._ctx.slots
        hardened = []
        for section in sections:
            noise = None
            if self.flood_sigma is not None:
                # complex: the slots' imaginary parts hold half of the error's dimensions
                draws = _secure_gaussian(2 * slots, self.flood_sigma)
                noise = draws[:slots] + 1j * draws[slots:]
            hardened.append(self._harden(section, noise))
        return hardened

    def _check_rotation_keys(self) -> None:
        """Every rotation the vector layout needs must have its key: checked, not trusted."""
        steps, needed = vector_rotations(self.program.steps, self.program.input_dim)
        if needed > self._ctx.slots:
            raise InvalidInputError(
                "the public context's ring is too small for the vector layout",
                expected=f"at least {needed} slots",
                got=f"{self._ctx.slots} slots",
                fix="make keys for this model's plan (`veil he compile --plan-out`)",
            )
        degree = self.plan.poly_modulus_degree
        missing = [
            step
            for step in steps
            if self._galois is None or not self._galois.has_key(galois_element(step, degree))
        ]
        if missing:
            raise InvalidInputError(
                "the public context lacks rotation keys the vector layout needs",
                expected=f"Galois keys for the rotations {list(steps)}",
                got=f"none for {missing}",
                fix="make keys for this model's plan (`veil he keygen --plan`), or send "
                "batched requests with keys made for the batch layout only",
            )

    # -- the vector layout --------------------------------------------------

    def _prepare_vector(self) -> list[Any]:
        """Encode every diagonal and bias once, at the level and scale it will meet."""
        if self._vector_plain is not None:
            return self._vector_plain
        if self._galois is None:
            raise InvalidInputError(
                "the public context has no rotation keys",
                expected="keys made for the vector layout",
                got="a batch-only context",
                fix="send a batched request, or make keys with the vector layout",
            )
        ctx = self._ctx
        prepared: list[Any] = []
        for level, (step, shape) in enumerate(
            zip(
                self.program.steps,
                layer_shapes(self.program.steps, self.program.input_dim),
                strict=True,
            )
        ):
            if shape is None:
                prepared.append(None)
                continue
            assert isinstance(step, Affine)  # noqa: S101 - shapes mirror steps
            rows, period = shape.rows, shape.period
            weight = np.zeros((rows, period))
            weight[: step.weight.shape[0], : step.weight.shape[1]] = step.weight
            j = np.arange(period)
            drop = ctx.dropped_prime(level)
            groups = []
            for g in range(shape.giant):
                row: list[Any] = []
                for b in range(shape.baby):
                    k = g * shape.baby + b
                    diagonal = weight[j % rows, (j + k) % period]
                    if not np.any(diagonal):
                        row.append(None)
                        continue
                    full = np.tile(diagonal, ctx.slots // period)
                    # pre-rotate by -gB so that one giant rotation serves the whole group
                    full = np.roll(full, g * shape.baby)
                    row.append(ctx.encode(full, level, drop))
                groups.append(row)
            bias = np.zeros(rows)
            bias[: step.bias.shape[0]] = step.bias
            prepared.append((shape, groups, np.tile(bias, ctx.slots // rows)))
        self._vector_plain = prepared
        return prepared

    def _rotate(self, ciphertext: Any, step: int) -> Any:
        out = self._ctx.ciphertext()
        try:
            self._ctx.evaluator.rotate_vector(ciphertext, step, self._galois, out)
        except (ValueError, RuntimeError) as exc:  # checked up front; SEAL's word as a backstop
            raise InvalidInputError(
                "the public context lacks a rotation key",
                expected=f"a Galois key for a rotation by {step}",
                got=str(exc),
                fix="make keys for this model's plan (`veil he keygen --plan`)",
            ) from exc
        return out

    def _vector_affine(
        self,
        ciphertext: Any,
        shape: LayerShape,
        groups: list[list[Any]],
        bias: FloatArray,
        level: int,
    ) -> Any:
        evaluator = self._ctx.evaluator
        rotated = [ciphertext]
        for _ in range(1, shape.baby):
            rotated.append(self._rotate(rotated[-1], 1))
        result = None
        for row in reversed(groups):  # Horner over the giant steps
            if result is not None:
                result = self._rotate(result, shape.baby)
            total = self._dot_plain(rotated, row)
            if total is not None:
                evaluator.rescale_to_next_inplace(total)
                result = self._accumulate(result, total)
        if result is None:
            raise InvalidInputError("an affine step has only zero weights", got="W = 0")
        for fold in shape.folds:
            evaluator.add_inplace(result, self._rotate(result, fold))
        evaluator.add_plain_inplace(result, self._ctx.encode(bias, level + 1, result.scale))
        return result

    def _accumulate(self, total: Any, term: Any) -> Any:
        if total is None:
            return term
        self._ctx.evaluator.add_inplace(total, term)
        return total

    def _dot_plain(self, ciphertexts: Sequence[Any], plains: Sequence[Any]) -> Any:
        """``sum_i c_i * p_i`` over the non-zero plaintexts (None when all are zero)."""
        total = None
        for ciphertext, plain in zip(ciphertexts, plains, strict=False):
            if plain is None:
                continue
            product = self._ctx.ciphertext()
            self._ctx.evaluator.multiply_plain(ciphertext, plain, product)
            total = self._accumulate(total, product)
        return total

    def _square(self, ciphertext: Any) -> Any:
        evaluator = self._ctx.evaluator
        out = self._ctx.ciphertext()
        evaluator.square(ciphertext, out)
        evaluator.relinearize_inplace(out, self._relin)
        evaluator.rescale_to_next_inplace(out)
        return out

    def _infer_vector(self, sections: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
        prepared = self._prepare_vector()
        ciphertext = load_object("Ciphertext", self._ctx.context, sections[0])
        self._check_fresh(ciphertext)
        period = 0
        for level, item in enumerate(prepared):
            if item is None:
                ciphertext = self._square(ciphertext)
            else:
                shape, groups, bias = item
                ciphertext = self._vector_affine(ciphertext, shape, groups, bias, level)
                period = shape.rows
        return [save_object(ciphertext)], {"period": period}

    def _check_fresh(self, ciphertext: Any) -> None:
        if ciphertext.parms_id() != self._ctx.levels[0] or ciphertext.size() != 2:  # noqa: PLR2004
            raise InvalidInputError(
                "the request's ciphertext is not a fresh encryption",
                expected="ciphertexts at the top level of the plan",
                got=f"a ciphertext of size {ciphertext.size()} at another level",
            )
        if not math.isclose(ciphertext.scale, self.plan.scale, rel_tol=1e-9):
            raise InvalidInputError(
                "the request's scale does not match the plan",
                expected=f"scale 2^{self.plan.scale_bits}",
                got=f"scale {ciphertext.scale:.6g}",
            )

    # -- the batch layout ---------------------------------------------------

    def _splittable(self) -> bool:
        """One hidden layer (affine, square, affine): its units can be shared out."""
        return [type(step) for step in self.program.steps] == [Affine, Square, Affine]

    def _infer_group(self, sections: list[bytes], part: tuple[int, int] = (0, 1)) -> list[bytes]:
        """One group of inputs; with ``part = (p, P)`` only the p-th of P slices of the hidden
        units (one-hidden-layer programs), giving partial outputs the caller adds up.
        """
        ctx = self._ctx
        values = [load_object("Ciphertext", ctx.context, section) for section in sections]
        for ciphertext in values:
            self._check_fresh(ciphertext)
        index, parts = part
        for level, step in enumerate(self.program.steps):
            if not isinstance(step, Affine):
                if any(ciphertext is None for ciphertext in values):
                    raise InvalidInputError(
                        "a hidden unit has only zero weights",
                        expected="a program from compile_model (which folds dead units away)",
                        got="a zero weight row",
                    )
                values = [self._square(ciphertext) for ciphertext in values]
                continue
            weight, bias = step.weight, step.bias
            if parts > 1 and level == 0:  # this slice of the hidden units
                rows = np.array_split(np.arange(weight.shape[0]), parts)[index]
                weight, bias = weight[rows], bias[rows]
            elif parts > 1:  # partial sums over this slice; the bias is added once
                rows = np.array_split(np.arange(weight.shape[1]), parts)[index]
                weight, bias = weight[:, rows], bias * (index == 0)
            values = self._scalar_affine(values, weight, bias, level, allow_empty=parts > 1)
        return [b"" if ciphertext is None else save_object(ciphertext) for ciphertext in values]

    def _scalar_affine(
        self,
        values: list[Any],
        weight: FloatArray,
        bias: FloatArray,
        level: int,
        *,
        allow_empty: bool,
    ) -> list[Any]:
        ctx = self._ctx
        drop = ctx.dropped_prime(level)
        outputs: list[Any] = []
        for row, offset in zip(weight, bias, strict=True):
            plains = [None if w == 0.0 else ctx.encode(float(w), level, drop) for w in row]
            total = self._dot_plain(values, plains)
            if total is None:
                if allow_empty:
                    outputs.append(None)
                    continue
                raise InvalidInputError("an output has only zero weights", got="a zero row")
            ctx.evaluator.rescale_to_next_inplace(total)
            if offset != 0.0:
                ctx.evaluator.add_plain_inplace(
                    total, ctx.encode(float(offset), level + 1, total.scale)
                )
            outputs.append(total)
        return outputs

    def _combine(self, partials: list[list[bytes]]) -> list[bytes]:
        """Add the partial outputs of the slices of one group."""
        combined = []
        for pieces in zip(*partials, strict=True):
            total = None
            for piece in pieces:
                if piece:
                    total = self._accumulate(
                        total, load_object("Ciphertext", self._ctx.context, piece)
                    )
            if total is None:
                raise InvalidInputError("an output has only zero weights", got="a zero row")
            combined.append(save_object(total))
        return combined

    def _run_groups(
        self, chunks: list[list[bytes]], progress: Callable[[int, int], None] | None
    ) -> list[bytes]:
        """Every group, in worker processes; one-hidden-layer programs are also split by
        hidden units when the groups alone would leave a worker idle."""
        workers = self.workers
        parts = workers if self._splittable() and len(chunks) % workers and workers > 1 else 1
        tasks = [(group, (p, parts)) for group in range(len(chunks)) for p in range(parts)]
        results: list[list[bytes]] = []
        if workers == 1 or len(tasks) == 1:
            for done, (group, part) in enumerate(tasks, start=1):
                results.append(self._infer_group(chunks[group], part))
                if progress is not None:
                    progress(done, len(tasks))
        else:
            # the forked workers inherit the server and the request: tasks are only indices
            _WORKER["server"] = self
            _WORKER["chunks"] = chunks
            forked = multiprocessing.get_context("fork")
            try:
                with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=forked) as pool:
                    for done, result in enumerate(pool.map(_worker_group, tasks), start=1):
                        results.append(result)
                        if progress is not None:
                            progress(done, len(tasks))
            finally:
                _WORKER.clear()
        out_sections: list[bytes] = []
        for group in range(len(chunks)):
            pieces = results[group * parts : (group + 1) * parts]
            out_sections.extend(pieces[0] if parts == 1 else self._combine(pieces))
        return out_sections

    def infer(self, request: bytes, *, progress: Callable[[int, int], None] | None = None) -> bytes:
        """Evaluate the program on an encrypted request; the response stays encrypted."""
        meta, sections = _unpack(request, "request")
        if meta.get("key_id") != self.key_id:
            raise InvalidInputError(
                "the request was encrypted for other keys",
                expected=f"key id {self.key_id[:12]}... (this server's public context)",
                got=f"key id {str(meta.get('key_id'))[:12]}...",
                fix="send the public context that belongs to the client's secret key",
            )
        layout = str(meta.get("layout"))
        _check_layout(layout, self.plan)
        count = int(meta.get("count", 0))
        if count < 1:
            raise InvalidInputError(
                "the request holds no inputs", expected="a count of at least 1", got=str(count)
            )
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        if layout == "vector":
            if len(sections) != 1:
                raise InvalidInputError(
                    "a vector request holds one ciphertext", got=f"{len(sections)}"
                )
            out_sections, extra = self._infer_vector(sections)
        else:
            width = self.plan.input_dim
            groups = math.ceil(count / self._ctx.slots)
            if len(sections) != groups * width:
                raise InvalidInputError(
                    "the batched request has the wrong number of ciphertexts",
                    expected=f"{groups * width} ({groups} groups of {width} features)",
                    got=str(len(sections)),
                )
            chunks = [sections[g * width : (g + 1) * width] for g in range(groups)]
            out_sections = self._run_groups(chunks, progress)
        if self.rerandomize:
            out_sections = self._harden_all(out_sections)
            if self.flood_sigma is not None:
                extra["flood_sigma"] = self.flood_sigma
        self.timings["infer_s"] = time.perf_counter() - started
        header = {"key_id": self.key_id, "layout": layout, "count": count, **extra}
        return _pack("response", header, out_sections)


_WORKER: dict[str, Any] = {}


def _worker_group(task: tuple[int, tuple[int, int]]) -> list[bytes]:
    group, part = task
    server: HEServer = _WORKER["server"]
    return server._infer_group(_WORKER["chunks"][group], part)  # noqa: SLF001 - the forked copy
