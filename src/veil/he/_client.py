"""The CKKS client: it makes the keys, encrypts inputs and decrypts the server's answers.

It is the only party that holds the secret key (see :mod:`veil.he._ckks` for
the protocol). The secret key never passes through a named file: SEAL's
serialisation reads and writes paths, so the key goes through an anonymous
in-memory file (``memfd_create``) that the kernel frees when the process
ends, even under ``kill -9``.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.he._ckks import TAIL, Context, check_layout, pack, unpack
from veil.he._layout import next_pow2
from veil.he._plan import HEPlan
from veil.he._seal import galois_element, load_object, save_object, seal

__all__ = ["HEClient"]

FloatArray = npt.NDArray[np.float64]


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
        self._ctx = Context(plan)
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
        ctx = Context(plan)
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
        blob = pack("context", header, sections)
        self.timings["public_context_s"] = time.perf_counter() - started
        return blob

    def to_bytes(self) -> bytes:
        """The secret key and plan, for storage the caller protects."""
        header = {"key_id": self.key_id, "plan": self.plan.to_dict()}
        return pack("secret", header, [_save_secret(self._secret)])

    @classmethod
    def from_bytes(cls, data: bytes) -> HEClient:
        """Read :meth:`to_bytes` back."""
        meta, sections = unpack(data, "secret")
        plan = HEPlan.from_dict(meta["plan"])
        ctx = Context(plan)
        secret = _load_secret(ctx.context, sections[0])
        return cls(plan, secret, str(meta["key_id"]))

    def encrypt(self, inputs: npt.ArrayLike, *, layout: str = "vector") -> bytes:
        """Encrypt inputs (one row per input) into a request.

        The vector layout takes exactly one input; the batch layout takes
        any number and packs ``N/2`` per ciphertext group.
        """
        check_layout(layout, self.plan)
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
        blob = pack("request", header, sections)
        self.timings["encrypt_s"] = time.perf_counter() - started
        return blob

    def _encrypt_slots(self, values: FloatArray) -> bytes:
        plain = self._ctx.encode(values, 0, self.plan.scale)
        # symmetric encryption with the secret key: SEAL stores a seed for half of it
        return save_object(self._encryptor.encrypt_symmetric(plain))

    def decrypt(self, response: bytes) -> FloatArray:
        """Decrypt a response into one row of outputs per input (before the output transform)."""
        meta, sections = unpack(response, "response")
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
        limit = self.plan.magnitude / TAIL if self.plan.magnitude > 0 else math.inf
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
