"""Validation of privacy parameters, shared by the ledger, the mechanisms and the CLI.

Each check refuses NaN, infinities and out-of-range values with a message that
says what was expected, what arrived, and how to fix it. The general checks
(a positive number, a probability) are :mod:`veil._validate`'s, exported here
under the names the ledger has always used.

A public submodule for Veil's own packages (every mechanism, query and training
run checks its parameters here before it is charged), not a user API: users pass
their parameters to those, which refuse bad ones.
"""

from __future__ import annotations

from veil._validate import finite_number as _finite
from veil._validate import positive_number as check_positive
from veil._validate import probability as check_probability
from veil.errors import InvalidInputError

__all__ = [
    "MAX_RELEASE_EPSILON",
    "check_budget_delta",
    "check_delta",
    "check_epsilon",
    "check_positive",
    "check_probability",
    "check_release_epsilon",
    "check_rho",
]

# The largest epsilon one release may spend. At epsilon 100 an observer's odds between two
# neighbouring datasets may move by a factor e^100 (about 1e43): no protection is left, and an
# accountant asked for more only burns memory and time (a PLD of epsilon 1e4 needs gigabytes).
# A baseline without privacy is asked for as such (`veil train --non-private`), not as a huge epsilon.
MAX_RELEASE_EPSILON = 100.0


def check_epsilon(value: object, name: str = "epsilon") -> float:
    """A privacy-loss parameter epsilon: finite and > 0."""
    fix = f"pass a positive number such as --{name.replace('_', '-')} 1.0"
    number = _finite(value, name, fix=fix)
    if number <= 0:
        raise InvalidInputError(
            f"{name} must be positive", expected="a number > 0", got=repr(value), fix=fix
        )
    return number


def check_release_epsilon(value: object, name: str = "epsilon") -> float:
    """The epsilon of one release: finite, > 0 and at most :data:`MAX_RELEASE_EPSILON`."""
    number = check_epsilon(value, name)
    if number > MAX_RELEASE_EPSILON:
        raise InvalidInputError(
            f"{name} {number:g} is above the largest epsilon one release may spend",
            expected=f"0 < {name} <= {MAX_RELEASE_EPSILON:g} (beyond it a release protects nobody: "
            f"neighbouring datasets may differ in likelihood by a factor e^{MAX_RELEASE_EPSILON:g})",
            got=repr(value),
            fix=f"pass --{name.replace('_', '-')} {MAX_RELEASE_EPSILON:g} or less; for a baseline "
            "without privacy, ask for it explicitly (veil train --non-private)",
        )
    return number


def check_budget_delta(value: object, privacy_units: int, name: str = "delta") -> float:
    """A budget's delta: in [0, 1 / n) for a dataset of ``n`` privacy units.

    A mechanism that publishes each person's record with probability delta is
    (0, delta)-DP; with n people it publishes about ``n * delta`` of them. A delta
    at or above 1 / n therefore allows releasing someone's data outright, and under
    such a delta the accountant finds that almost nothing costs any epsilon.
    """
    number = check_delta(value, name)
    units = max(1, int(privacy_units))
    if number >= 1.0 / units:
        raise InvalidInputError(
            f"{name} {number:g} is not below 1 / n for a dataset of {units:,} privacy units",
            expected=f"0 <= {name} < {1.0 / units:.3g} (1 / {units:,}); usually far smaller, "
            "such as 1e-6",
            got=repr(value),
            fix=f"pass --{name} 1e-6 (or at most {0.1 / units:.1g}): a delta of 1 / n or more "
            "allows publishing one person's record in full, and makes every epsilon meaningless",
        )
    return number


def check_delta(value: object, name: str = "delta", *, allow_zero: bool = True) -> float:
    """A failure probability delta: finite, in [0, 1) (or (0, 1) without ``allow_zero``)."""
    fix = f"pass a small probability such as --{name} 1e-6 (well below 1 / number of people)"
    number = _finite(value, name, fix=fix)
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
    number = _finite(value, name, fix=fix)
    if number <= 0:
        raise InvalidInputError(
            f"{name} must be positive", expected="a number > 0", got=repr(value), fix=fix
        )
    return number
