"""The runner's checks of a computation before any party starts: operation, protocol, inputs.

Everything a caller can get wrong (an unknown operation or protocol, a
threshold that gives no secrecy, inputs of different shapes, values outside
what the fixed-point ring can hold without wrapping) is refused here, with
the fix, before a single process is launched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.mpc._sharing import FixedPoint, check_threshold, product_limit

__all__ = [
    "OPERATIONS",
    "PROTOCOLS",
    "InputLike",
    "Operation",
    "Protocol",
    "as_array",
    "check_ranges",
    "validate",
]

Protocol = Literal["additive", "shamir"]
Operation = Literal["sum", "mean", "dot", "mul"]
PROTOCOLS = ("additive", "shamir")
OPERATIONS = ("sum", "mean", "dot", "mul")
InputLike = npt.ArrayLike | Path | None


def validate(
    operation: str, parties: int, protocol: str, threshold: int | None, timeout: float
) -> int:
    if operation not in OPERATIONS:
        raise InvalidInputError(
            "unknown secure operation",
            expected=f"one of {', '.join(OPERATIONS)}",
            got=repr(operation),
            fix="use sum, mean, dot or mul",
        )
    if protocol not in PROTOCOLS:
        raise InvalidInputError(
            "unknown MPC protocol",
            expected="'additive' (n-of-n) or 'shamir' (t-of-n)",
            got=repr(protocol),
            fix="pass --protocol additive or --protocol shamir",
        )
    if parties < 2:  # noqa: PLR2004 - a secret needs two holders
        raise InvalidInputError(
            "a secure computation needs at least 2 parties",
            expected="2 or more parties (one input each)",
            got=f"{parties} part{'y' if parties == 1 else 'ies'}",
            fix="give one input per party, at least two",
        )
    if not timeout > 0:
        raise InvalidInputError(
            "timeout must be positive",
            expected="seconds > 0",
            got=str(timeout),
            fix="pass a timeout such as 30",
        )
    if protocol == "additive":
        if threshold not in (None, parties):
            raise InvalidInputError(
                "additive sharing has no threshold below the number of parties",
                expected=f"no threshold, or {parties} (every party is needed)",
                got=f"threshold {threshold}",
                fix="drop --threshold, or use --protocol shamir for t-of-n",
            )
        return parties
    chosen = parties // 2 + 1 if threshold is None else threshold
    check_threshold(chosen, parties)
    return chosen


def as_array(value: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    try:
        array = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} are not numbers",
            expected="an array of real numbers",
            got=f"{type(value).__name__} ({exc})",
            fix="pass a list or NumPy array of numbers",
        ) from None
    if not np.isfinite(array).all():
        raise InvalidInputError(
            f"{what} contain NaN or infinite numbers",
            expected="finite real numbers",
            got=f"{int((~np.isfinite(array)).sum())} non-finite value(s)",
            fix="drop or impute the missing values before the secure computation",
        )
    return array


def check_ranges(
    operation: str,
    arrays: list[npt.NDArray[np.float64] | None],
    seconds: list[npt.NDArray[np.float64] | None],
    fixed: FixedPoint,
    *,
    elementwise: bool,
) -> None:
    """The parties' own range checks, run here first when the runner holds the arrays."""
    n = len(arrays)
    for i, (x, y) in enumerate(zip(arrays, seconds, strict=True)):
        if x is None:
            continue
        what = f"party {i}'s values"
        if operation in ("dot", "mul"):
            limit = product_limit(fixed.domain, n, x.size if operation == "dot" else 1)
            for name, v in (("x", x), ("y", y)):
                if v is not None and np.abs(np.rint(v * fixed.scale)).max(initial=0) > limit:
                    raise InvalidInputError(
                        f"party {i}'s {name} is out of the fixed-point range",
                        expected=f"|{name}| <= {limit / fixed.scale:.6g} for a product of "
                        f"{fixed.frac_bits}-bit fixed-point values over {n} parties",
                        got=f"|{name}| up to {float(np.abs(v).max()):.6g}",
                        fix="rescale the values or pass fewer fractional bits (frac_bits)",
                    )
        elif elementwise:
            fixed.to_integers(x, terms=n, what=what)
        else:
            terms = n * max(1, x.size)
            fixed.to_integers(x if y is None else x * y, terms=terms, what=what)
