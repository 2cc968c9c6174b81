"""The CKKS parameter planner: ring size, modulus chain and scale from a model's needs.

CKKS consumes one prime of the coefficient modulus per rescale, so a program
of multiplicative depth ``L`` needs ``L`` primes of about the scale's size
between a first prime (which must still hold the final values: scale plus
integer bits) and a special prime for key switching. The ring size ``N`` caps
the total: the HomomorphicEncryption.org standard (Albrecht et al., 2018,
classical 128-bit security, ternary secret) allows at most ``MAX_COEFF_BITS[N]``
bits. The planner picks the smallest ``N`` whose slots hold the input and
whose budget holds the chain with at least ``min_scale_bits`` of precision, and
then the largest scale that still fits: bigger primes cost nothing in
ciphertext size (SEAL stores a 64-bit word per prime either way) and buy
precision. A plan that cannot exist is refused here, before any key is made,
instead of surfacing later as SEAL's "scale out of bounds".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from veil.errors import InvalidInputError

__all__ = ["MAX_COEFF_BITS", "HEPlan", "plan_parameters"]

# HomomorphicEncryption.org security standard (2018), Table 1, 128-bit classical, ternary
# secret: the largest log2(q) for each ring size. SEAL's CoeffModulus.MaxBitCount(N, tc128)
# returns the same numbers (a test checks it).
MAX_COEFF_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
_MAX_PRIME_BITS = 60  # SEAL's limit for one prime
_MIN_PRIME_BITS = 20
_MAX_SCALE_BITS = 52  # beyond this the float64 encoder itself is the limit
_FORMAT = 1


@dataclass(frozen=True)
class HEPlan:
    """CKKS encryption parameters chosen for one compiled program.

    Attributes:
        poly_modulus_degree: The ring size ``N``; a ciphertext has ``N/2`` slots.
        coeff_mod_bit_sizes: Bit sizes of the primes: first, ``depth`` middle
            ones (one per rescale), then the special prime.
        scale_bits: ``log2`` of the CKKS scale.
        integer_bits: Bits above the scale reserved for the largest value.
        depth: Rescales the program needs.
        galois_steps: The only rotations keys are made for (empty for the
            batched layout, which never rotates).
        layouts: Layouts the keys serve: ``vector`` (one input per ciphertext,
            replicated across the slots) and/or ``batch`` (one feature per
            ciphertext, one input per slot).
        input_dim: Features of one input.
        output_dim: Values one inference returns.
        magnitude: The largest absolute value the program produces on its
            calibration data, times the safety factor; decrypted outputs
            beyond it are refused (the first prime holds twice as much, so an
            overflow shows up there instead of wrapping silently).
        input_limit: The largest absolute input the client may encrypt.
        output: What the client applies to decrypted outputs
            (``none``, ``softmax`` or ``sigmoid``).
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    integer_bits: int
    depth: int
    galois_steps: tuple[int, ...] = ()
    layouts: tuple[str, ...] = ("vector", "batch")
    input_dim: int = 0
    output_dim: int = 0
    magnitude: float = 0.0
    input_limit: float = 0.0
    output: str = "none"
    security_bits: int = 128
    standard: str = field(default="HomomorphicEncryption.org 2018, classical, ternary secret")

    @property
    def slots(self) -> int:
        """Values one ciphertext holds."""
        return self.poly_modulus_degree // 2

    @property
    def total_coeff_bits(self) -> int:
        """``log2`` of the whole coefficient modulus, special prime included."""
        return sum(self.coeff_mod_bit_sizes)

    @property
    def max_coeff_bits(self) -> int:
        """The standard's ceiling for this ring size at 128-bit security."""
        return MAX_COEFF_BITS[self.poly_modulus_degree]

    @property
    def scale(self) -> float:
        """The CKKS scale, ``2**scale_bits``."""
        return float(2**self.scale_bits)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what a server publishes to its clients)."""
        payload = asdict(self)
        payload.update(
            format=_FORMAT,
            slots=self.slots,
            total_coeff_bits=self.total_coeff_bits,
            max_coeff_bits=self.max_coeff_bits,
        )
        payload["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        payload["galois_steps"] = list(self.galois_steps)
        payload["layouts"] = list(self.layouts)
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> HEPlan:
        """Read :meth:`to_dict`'s output back, checking the budget again."""
        try:
            plan = cls(
                poly_modulus_degree=int(payload["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(int(b) for b in payload["coeff_mod_bit_sizes"]),
                scale_bits=int(payload["scale_bits"]),
                integer_bits=int(payload["integer_bits"]),
                depth=int(payload["depth"]),
                galois_steps=tuple(int(s) for s in payload.get("galois_steps", ())),
                layouts=tuple(str(x) for x in payload.get("layouts", ("vector", "batch"))),
                input_dim=int(payload.get("input_dim", 0)),
                output_dim=int(payload.get("output_dim", 0)),
                magnitude=float(payload.get("magnitude", 0.0)),
                input_limit=float(payload.get("input_limit", 0.0)),
                output=str(payload.get("output", "none")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                "the HE plan is not readable",
                expected="the JSON written by `veil he compile --plan-out`",
                got=f"{type(exc).__name__}: {exc}",
            ) from exc
        plan.check()
        return plan

    def check(self) -> None:
        """Refuse parameters below 128-bit security or that cannot hold the program."""
        if self.poly_modulus_degree not in MAX_COEFF_BITS:
            raise InvalidInputError(
                "unsupported ring size",
                expected=f"a poly modulus degree in {sorted(MAX_COEFF_BITS)}",
                got=str(self.poly_modulus_degree),
            )
        if self.total_coeff_bits > self.max_coeff_bits:
            raise InvalidInputError(
                "the coefficient modulus is too large for 128-bit security",
                expected=f"at most {self.max_coeff_bits} bits at N={self.poly_modulus_degree}",
                got=f"{self.total_coeff_bits} bits",
                fix="let plan_parameters choose the chain",
            )
        if len(self.coeff_mod_bit_sizes) != self.depth + 2:
            raise InvalidInputError(
                "the modulus chain does not match the depth",
                expected=f"{self.depth + 2} primes (first, {self.depth} for rescales, special)",
                got=f"{len(self.coeff_mod_bit_sizes)}",
            )


def plan_parameters(
    depth: int,
    *,
    integer_bits: int,
    min_scale_bits: int = 25,
    slots_needed: int = 1,
    galois_steps: tuple[int, ...] = (),
    layouts: tuple[str, ...] = ("vector", "batch"),
    input_dim: int = 0,
    output_dim: int = 0,
    magnitude: float = 0.0,
    input_limit: float = 0.0,
    output: str = "none",
) -> HEPlan:
    """Choose CKKS parameters for a program of multiplicative ``depth``.

    Args:
        depth: Rescales the program needs (one per affine layer and square).
        integer_bits: Bits above the scale for the largest value (sign included).
        min_scale_bits: The least precision acceptable, in bits.
        slots_needed: Slots one ciphertext must hold.
        galois_steps: Rotations to make keys for.
        layouts: Ciphertext layouts the keys must serve.
        input_dim: Features of one input (recorded in the plan).
        output_dim: Outputs of one inference (recorded in the plan).
        magnitude: Largest expected absolute value (recorded in the plan).
        input_limit: Largest input the client may encrypt (recorded in the plan).
        output: The client's output transform (recorded in the plan).

    Returns:
        The smallest ring that fits, with the largest scale that fits it.

    Raises:
        InvalidInputError: When no ring size up to 32768 holds the program at
            128-bit security (the message says what would).

    >>> plan = plan_parameters(3, integer_bits=10, slots_needed=1024)
    >>> plan.poly_modulus_degree, plan.coeff_mod_bit_sizes, plan.total_coeff_bits <= 218
    (8192, (49, 39, 39, 39, 49), True)
    """
    if depth < 1 or integer_bits < 1 or slots_needed < 1:
        raise InvalidInputError(
            "invalid planning request",
            expected="depth >= 1, integer_bits >= 1 and slots_needed >= 1",
            got=f"depth={depth}, integer_bits={integer_bits}, slots_needed={slots_needed}",
        )
    tried = []
    for degree, budget in sorted(MAX_COEFF_BITS.items()):
        if degree // 2 < slots_needed or degree < 4096:  # noqa: PLR2004 - smaller rings hold no useful chain
            continue
        # first and special primes hold scale + integer bits; `depth` primes hold the scale
        scale_bits = min(
            _MAX_SCALE_BITS,
            _MAX_PRIME_BITS - integer_bits,
            math.floor((budget - 2 * integer_bits) / (depth + 2)),
        )
        tried.append(f"N={degree}: {scale_bits}-bit scale")
        if scale_bits < max(min_scale_bits, _MIN_PRIME_BITS):
            continue
        first = scale_bits + integer_bits
        plan = HEPlan(
            poly_modulus_degree=degree,
            coeff_mod_bit_sizes=(first, *([scale_bits] * depth), first),
            scale_bits=scale_bits,
            integer_bits=integer_bits,
            depth=depth,
            galois_steps=tuple(sorted(set(galois_steps))),
            layouts=layouts,
            input_dim=input_dim,
            output_dim=output_dim,
            magnitude=magnitude,
            input_limit=input_limit,
            output=output,
        )
        plan.check()
        return plan
    raise InvalidInputError(
        "no CKKS parameters hold this program at 128-bit security",
        expected=f"a depth-{depth} program with a scale of at least {min_scale_bits} bits",
        got="; ".join(tried) or f"{slots_needed} slots needed, more than N=32768 offers",
        fix="use fewer layers or polynomial activations (each affine layer and square costs "
        "one level), or smaller values (fewer integer bits)",
    )
