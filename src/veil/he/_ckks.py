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

This module holds what the client and the server share: the error bound,
the envelopes and the SEAL context. The client (:class:`HEClient`, which
holds the secret key) is in :mod:`veil.he._client`, the server
(:class:`HEServer`, which holds the model) in :mod:`veil.he._server`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.he._layout import layer_shapes
from veil.he._plan import HEPlan
from veil.he._program import HEProgram
from veil.he._seal import seal
from veil.he._steps import Affine

__all__ = ["MAGIC", "TAIL", "Context", "check_layout", "error_bound", "pack", "unpack"]

FloatArray = npt.NDArray[np.float64]
MAGIC = b"VEILHE\x01"
_KINDS = ("context", "secret", "request", "response")
_SIGMA = 3.2  # SEAL's error standard deviation
TAIL = 6.0  # bounds are at six standard deviations per slot


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
    fresh = (TAIL * _SIGMA * math.sqrt(degree) + TAIL * math.sqrt(degree / 12)) / scale
    rescale = math.sqrt(degree / 3) * (3 + 8 * math.sqrt(2 * degree / 3)) / scale
    switch = 2 * rescale
    weight_rounding = TAIL * math.sqrt(degree / 12) / scale
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


# ----------------------------------------------------------------------------- envelopes


def pack(kind: str, header: dict[str, Any], sections: Sequence[bytes]) -> bytes:
    body = b"".join(sections)
    meta = dict(header, kind=kind, sizes=[len(s) for s in sections])
    meta["sha256"] = hashlib.sha256(body).hexdigest()
    encoded = json.dumps(meta, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(encoded)) + encoded + body


def unpack(data: bytes, kind: str) -> tuple[dict[str, Any], list[bytes]]:
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


class Context:
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


def check_layout(layout: str, plan: HEPlan) -> None:
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
