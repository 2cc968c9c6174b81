"""Durations and moments typed at the command line: ``90d``, ``24h``, ``2026-01-31T12:00``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from veil.errors import InvalidInputError

__all__ = ["parse_duration", "parse_since"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_EXAMPLES = "a number and a unit (s, m, h, d, w) such as 30m, 24h, 7d or 90d"


def parse_duration(text: str, *, option: str) -> timedelta:
    """The positive duration ``text`` names (``30m``, ``24h``, ``90d``, ``2w``).

    Raises:
        InvalidInputError: ``text`` is not a positive duration.

    >>> parse_duration("90d", option="--expires-in")
    datetime.timedelta(days=90)
    """
    match = _DURATION.fullmatch(text)
    amount = float(match.group(1)) if match else 0.0
    if match is None or amount <= 0:
        raise InvalidInputError(
            f"{option} is not a positive duration",
            expected=_EXAMPLES,
            got=repr(text),
            fix=f"pass for example {option} 90d",
        )
    return timedelta(**{_UNITS[match.group(2)]: amount})


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """The moment ``text`` names: a duration back from ``now``, or an ISO date or time (UTC).

    A time without a zone is read as UTC, like every time Veil prints.

    Raises:
        InvalidInputError: ``text`` is neither.

    >>> parse_since("2026-01-31")
    datetime.datetime(2026, 1, 31, 0, 0, tzinfo=datetime.timezone.utc)
    >>> parse_since("24h", now=datetime(2026, 2, 1, tzinfo=UTC))
    datetime.datetime(2026, 1, 31, 0, 0, tzinfo=datetime.timezone.utc)
    """
    if _DURATION.fullmatch(text):
        return (now or datetime.now(UTC)) - parse_duration(text, option="--since")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            "--since is neither a duration nor a date",
            expected=f"{_EXAMPLES} (that long ago), or an ISO date or time such as "
            "2026-01-31 or 2026-01-31T12:00Z (UTC unless a zone is given)",
            got=repr(text),
            fix="pass for example --since 24h or --since 2026-01-31",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
