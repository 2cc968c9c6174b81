"""Consent records as they arrive: one checked line per record, from the API or a CSV file.

Every field is checked before anything is written (:meth:`veil.data.Consent.import_csv`
writes a file in one transaction, or nothing): the purpose is a term of the
vocabulary, the status ``granted`` or ``withdrawn``, the time ISO 8601 (a time
without a zone is UTC), the source 1-256 characters, the person a non-empty
identifier. A refusal names the file's line.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from veil.data._consent_rule import GRANTED, STATUSES, WITHDRAWN
from veil.data._persons import canonical_person
from veil.errors import InvalidInputError

__all__ = ["Line", "check_line", "check_status", "read_csv"]

_SOURCE_CHARS = 256
_COLUMNS = ("person", "purpose", "status")
_OPTIONAL = ("at", "source")


class Line(NamedTuple):
    """One checked record (the person canonical, not yet a token)."""

    person: str
    purpose: str
    status: str
    at: datetime
    source: str


def check_status(status: str, *, what: str = "status") -> str:
    if status not in STATUSES:
        raise InvalidInputError(
            f"unknown consent {what}",
            expected=f"{GRANTED} or {WITHDRAWN}",
            got=repr(status),
            fix=f"use --{GRANTED} or --{WITHDRAWN}"
            if what == "status"
            else f"--default {WITHDRAWN}",
        )
    return status


def _time(value: datetime | str | None, where: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInputError(
                f"{where}not a time",
                expected="an ISO 8601 time such as 2026-03-01 or 2026-03-01T09:30:00+01:00",
                got=repr(value),
                fix="write the time the person decided, in ISO 8601",
            ) from None
    if not isinstance(value, datetime):
        raise InvalidInputError(
            f"{where}not a time", expected="a datetime or ISO 8601 text", got=repr(value)
        )
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_line(
    person: Any,
    purpose: str,
    status: str,
    *,
    at: datetime | str | None,
    source: str,
    vocabulary: set[str],
    where: str,
) -> Line:
    """One record, checked: every refusal names ``where`` (the file line) and changes nothing."""
    try:
        canonical = canonical_person(person)
        check_status(status)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"{where}{exc.message}", expected=exc.expected, got=exc.got, fix=exc.fix
        ) from None
    if purpose not in vocabulary:
        raise InvalidInputError(
            f"{where}undeclared consent purpose",
            expected=f"one of {', '.join(sorted(vocabulary))}",
            got=repr(purpose),
            fix="declare it first: veil consent purposes add NAME --description TEXT",
        )
    if not source or len(source) > _SOURCE_CHARS:
        raise InvalidInputError(
            f"{where}a consent record needs a source",
            expected=f"1-{_SOURCE_CHARS} characters (a form, a system, a file)",
            got=f"{len(source)} characters",
        )
    return Line(canonical, purpose, status, _time(at, where), source)


def read_csv(path: Path, vocabulary: set[str], *, fallback: str) -> list[Line]:
    """Every line of a consent file, checked; the first bad one refuses the whole file."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}",
            expected="a readable CSV file",
            got=exc.strerror or type(exc).__name__,
            fix="check the path",
        ) from None
    try:
        with handle:
            return _parse(handle, path.name, vocabulary, fallback=fallback)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(
            f"{path.name} is not a readable CSV file",
            expected="UTF-8 text, comma-separated, with a header line",
            got=str(exc)[:200] or type(exc).__name__,  # e.g. a field over csv's size limit
            fix="save the file as CSV (UTF-8)",
        ) from None


def _parse(handle: TextIO, name: str, vocabulary: set[str], *, fallback: str) -> list[Line]:
    now = datetime.now(UTC)  # for lines without a time
    reader = csv.DictReader(handle)
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in _COLUMNS if c not in header]
    extra = [c for c in header if c not in _COLUMNS + _OPTIONAL]
    if missing or extra:
        raise InvalidInputError(
            f"{name}: unexpected columns",
            expected=f"columns {', '.join(_COLUMNS)} [, at][, source]",
            got=", ".join(header) or "no header",
            fix="name the header line person,purpose,status,at,source",
        )
    reader.fieldnames = header
    lines: list[Line] = []
    for number, raw in enumerate(reader, start=2):
        if None in raw:
            raise InvalidInputError(
                f"{name} line {number}: more fields than columns",
                expected=f"{len(header)} fields",
                got=f"{len(header) + len(raw[None])} fields",
                fix="quote fields that hold commas",
            )
        lines.append(
            check_line(
                raw.get("person"),
                (raw.get("purpose") or "").strip(),
                (raw.get("status") or "").strip(),
                at=(raw.get("at") or "").strip() or now,
                source=(raw.get("source") or "").strip() or fallback,
                vocabulary=vocabulary,
                where=f"{name} line {number}: ",
            )
        )
    return lines
