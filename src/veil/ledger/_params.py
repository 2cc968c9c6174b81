"""Validation of privacy parameters, shared by the ledger, the mechanisms and the CLI.

Each check refuses NaN, infinities and out-of-range values with a message that
says what was expected, what arrived, and how to fix it.
"""

from __future__ import annotations

import math

from veil.errors import InvalidInputError

__all__ = ["check_delta", "check_epsilon", "check_positive", "check_probability", "check_rho"]


def _finite(value: object, name: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(
            f"{name} must be a number", expected="a finite number", got=repr(value), fix=fix
        )
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(
            f"{name} must be finite", expected="a finite number", got=repr(value), fix=fix
        )
    return number


def check_epsilon(value: object, name: str = "epsilon") -> float:
    """A privacy-loss parameter epsilon: finite and > 0."""
    fix = f"pass a positive number such as --{name.replace('_', '-')} 1.0"
    number = _finite(value, name, fix)
    if number <= 0:
        raise InvalidInputError(
            f"{name} must be positive", expected="a number > 0", got=repr(value), fix=fix
        )
    return number


def check_delta(value: object, name: str = "delta", *, allow_zero: bool = True) -> float:
    """A failure probability delta: finite, in [0, 1) (or (0, 1) without ``allow_zero``)."""
    fix = f"pass a small probability such as --{name} 1e-6 (well below 1 / number of people)"
    number = _finite(value, name, fix)
    low_ok = number >= 0 if allow_zero else number > 0
    if not low_ok or number >= 1:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise InvalidInputError(
            f"{name} must lie in {interval}",
            expected=f"0 {'<=' if allow_zero else '<'} {name} < 1",
            got=repr(value),
            fix=fix,
        )
    return number


def check_rho(value: object, name: str = "rho") -> float:
    """A zero-concentrated DP parameter rho: finite and > 0."""
    fix = f"pass a positive number such as --{name} 0.5"
    number = _finite(value, name, fix)
    if number <= 0:
        raise InvalidInputError(
            f"{name} must be positive", expected="a number > 0", got=repr(value), fix=fix
        )
    return number


def check_positive(value: object, name: str) -> float:
    """A finite, strictly positive number (a scale, a sensitivity)."""
    fix = f"pass a positive finite {name}"
    number = _finite(value, name, fix)
    if number <= 0:
        raise InvalidInputError(
            f"{name} must be positive", expected="a number > 0", got=repr(value), fix=fix
        )
    return number


def check_probability(value: object, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """A probability strictly inside ``(low, high)``."""
    fix = f"pass a {name} strictly between {low} and {high}"
    number = _finite(value, name, fix)
    if not low < number < high:
        raise InvalidInputError(
            f"{name} out of range", expected=f"{low} < {name} < {high}", got=repr(value), fix=fix
        )
    return number
