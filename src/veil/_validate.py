"""One set of argument checks, each refusing bad input with expected / got / fix.

Every check returns the value in its plain Python type (an ``int``, a
``float``) so that a caller can write ``self.steps = whole_number(steps,
"steps")``, and raises :class:`~veil.errors.InvalidInputError` (or the
subclass passed as ``error``) with a message of one shape::

    steps must be a whole number >= 1. Expected >= 1. Got 0.

Booleans are refused wherever a number is expected (``True`` is an ``int`` in
Python, and ``epochs=True`` is always a mistake). The message parts can be
given in the caller's words; the defaults are the ones most callers used.

>>> whole_number(3, "epochs")
3
>>> whole_number(0, "epochs")
Traceback (most recent call last):
...
veil.errors.InvalidInputError: epochs must be a whole number >= 1. Expected >= 1. Got 0.
>>> probability(0.5, "alpha")
0.5
"""

from __future__ import annotations

import math
import numbers
from typing import Final

from veil.errors import InvalidInputError

__all__ = ["finite_number", "positive_number", "probability", "whole_number"]


class _Default:
    """Marks a message part the caller left to the default (``None`` leaves it out)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()


def _part(given: str | _Default | None, default: str | None) -> str | None:
    return default if isinstance(given, _Default) else given


def whole_number(
    value: object,
    name: str,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    message: str | None = None,
    expected: str | _Default | None = DEFAULT,
    fix: str | None = None,
    error: type[InvalidInputError] = InvalidInputError,
    numpy: bool = False,
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``, or an error.

    Args:
        value: What the caller received.
        name: The parameter's name, for the message.
        minimum: The least value accepted.
        maximum: The largest value accepted, or ``None`` for no limit.
        message: The first sentence; by default ``"{name} must be a whole
            number >= {minimum}"`` (``"... in [minimum, maximum]"`` with a maximum).
        expected: The "Expected" part; by default ``">= {minimum}"`` (or the
            interval); ``None`` leaves it out.
        fix: The "Fix" part, or ``None``.
        error: The class raised: :class:`InvalidInputError` or a subclass.
        numpy: Accept NumPy integers too (any :class:`numbers.Integral`).
    """
    in_range = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif numpy and isinstance(value, numbers.Integral):
        number = int(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        raise error(
            message if message is not None else f"{name} must be a whole number {in_range}",
            expected=_part(expected, in_range),
            got=repr(value),
            fix=fix,
        )
    return number


def finite_number(
    value: object, name: str, *, expected: str = "a finite number", fix: str | None = None
) -> float:
    """``value`` as a finite ``float``: refuses booleans, non-numbers, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(
            f"{name} must be a number", expected=expected, got=repr(value), fix=fix
        )
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(
            f"{name} must be finite", expected=expected, got=repr(value), fix=fix
        )
    return number


def positive_number(value: object, name: str, *, fix: str | None = None) -> float:
    """A finite, strictly positive number (a scale, a sensitivity, a clipping norm)."""
    fix = fix if fix is not None else f"pass a positive finite {name}"
    number = finite_number(value, name, fix=fix)
    if number <= 0:
        raise InvalidInputError(
            f"{name} must be positive", expected="a number > 0", got=repr(value), fix=fix
        )
    return number


def probability(
    value: object, name: str, *, low: float = 0.0, high: float = 1.0, fix: str | None = None
) -> float:
    """A finite number strictly inside ``(low, high)`` (by default a probability in (0, 1))."""
    fix = fix if fix is not None else f"pass a {name} strictly between {low} and {high}"
    number = finite_number(value, name, fix=fix)
    if not low < number < high:
        raise InvalidInputError(
            f"{name} out of range", expected=f"{low} < {name} < {high}", got=repr(value), fix=fix
        )
    return number
