"""Hardening a CKKS response: noise flooding, then re-randomisation under the client's public key.

Both are opt-in on :class:`~veil.he.HEServer` (``rerandomize``,
``flood_sigma``); the threat model is in :mod:`veil.he._ckks`. Flooding adds
fresh Gaussian noise to every slot so that the CKKS error, which carries
information about the weights, is masked; re-randomising adds a fresh
encryption of zero so that a response's components are no longer a
deterministic function of the request and the weights.

The Gaussian draws are Box-Muller on ``os.urandom`` in float64, not
:class:`veil._random.SecureRandom` (whose normals are float32): the noise is
encoded at the ciphertext's scale, where float32's resolution would show.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.he._ckks import TAIL, Context
from veil.he._plan import HEPlan
from veil.he._seal import load_object, save_object

__all__ = ["ResponseHardener", "secure_gaussian"]

FloatArray = npt.NDArray[np.float64]


def secure_gaussian(count: int, sigma: float) -> FloatArray:
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


class ResponseHardener:
    """Floods (when ``flood_sigma`` is set) and re-randomises response ciphertexts.

    Args:
        ctx: The server's SEAL objects for the plan.
        plan: The plan the client's keys were made for.
        public_key: The public key's section of the client's public context,
            or ``None`` when the context holds none (refused).
        flood_sigma: The noise's standard deviation in the outputs' units, or
            ``None`` to re-randomise only (checked positive and finite by the server).
    """

    def __init__(
        self, ctx: Context, plan: HEPlan, public_key: bytes | None, flood_sigma: float | None
    ) -> None:
        if public_key is None:
            raise InvalidInputError(
                "the public context holds no public key, so responses cannot be "
                "re-randomised or noise-flooded",
                expected="a public context with a public key (made by this version of Veil)",
                got="relinearisation and Galois keys only (a context from an earlier version)",
                fix="have the client export its context again: "
                "HEClient.from_bytes(secret).public_context(), or `veil he keygen` anew",
            )
        # the first prime holds twice the planned magnitude: leave the honest outputs room
        limit = plan.magnitude
        if flood_sigma is not None and limit > 0 and TAIL * flood_sigma > limit:
            raise InvalidInputError(
                "flood_sigma is too large for the plan's range",
                expected=f"at most {limit / TAIL:.4g} "
                f"(the planned output magnitude {limit:.4g} / {TAIL:g})",
                got=f"{flood_sigma:.4g}",
                fix="choose a smaller sigma, or recompile with a larger safety factor",
            )
        self._ctx = ctx
        self.flood_sigma = flood_sigma
        public = load_object("PublicKey", ctx.context, public_key)
        self._encryptor: Any = ctx.api.Encryptor(ctx.context, public)

    def harden(self, section: bytes, noise: npt.NDArray[np.complex128] | None) -> bytes:
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

    def harden_all(self, sections: list[bytes]) -> list[bytes]:
        """Every response ciphertext hardened, each with its own fresh noise."""
        slots = self._ctx.slots
        hardened = []
        for section in sections:
            noise = None
            if self.flood_sigma is not None:
                # complex: the slots' imaginary parts hold half of the error's dimensions
                draws = secure_gaussian(2 * slots, self.flood_sigma)
                noise = draws[:slots] + 1j * draws[slots:]
            hardened.append(self.harden(section, noise))
        return hardened
