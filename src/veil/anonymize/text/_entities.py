"""What counts as PII in text: the entity types, a detected entity, and the identifiers' checksums.

The checksums (Luhn for payment cards and Canadian SINs, mod 11 for NHS
numbers, the 11-proof for Dutch BSNs) decide whether a digit pattern is an
identifier; the redaction's surrogates use them to make fake identifiers
that still pass. The argument checks shared by detection, redaction and the
column finder live here too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from veil.errors import InvalidInputError

__all__ = [
    "DEFAULT_THRESHOLD",
    "NER_ENTITIES",
    "PATTERN_ENTITIES",
    "PII_ENTITIES",
    "PiiEntity",
    "bsn_valid",
    "check_entities",
    "check_threshold",
    "luhn_valid",
    "nhs_valid",
    "only_digits",
]

NER_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION", "DATE_TIME")
PATTERN_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "URL",
    "UK_NHS",
    "CA_SIN",
    "NL_BSN",
)
PII_ENTITIES = NER_ENTITIES + PATTERN_ENTITIES
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class PiiEntity:
    """One detected entity: ``text[start:end]`` is PII of ``entity_type``.

    Attributes:
        entity_type: One of :data:`PII_ENTITIES`.
        start: Offset of the first character in the analysed text.
        end: Offset just after the last character.
        score: The recogniser's confidence in [0, 1], after context words.
    """

    entity_type: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (positions only: the value itself is never included)."""
        return {
            "type": self.entity_type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 3),
        }


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of payment cards and Canadian SINs."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2  # noqa: PLR2004
        total += n
    return total % 10 == 0


def nhs_valid(digits: str) -> bool:
    """The NHS number's mod-11 check: weights 10..2 on the first nine digits."""
    if len(digits) != 10 or not digits.isdigit():  # noqa: PLR2004
        return False
    total = sum(int(c) * w for c, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:  # noqa: PLR2004
        check = 0
    return check != 10 and check == int(digits[9])  # noqa: PLR2004


def bsn_valid(digits: str) -> bool:
    """The Dutch BSN's 11-proof: weights 9..2 and -1, sum divisible by 11, not all zero."""
    if len(digits) != 9 or not digits.isdigit() or digits == "0" * 9:  # noqa: PLR2004
        return False
    total = sum(int(c) * w for c, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True))
    return total % 11 == 0


def only_digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def check_entities(entities: Iterable[str] | None) -> tuple[str, ...]:
    if entities is None:
        return PII_ENTITIES
    chosen = tuple(dict.fromkeys(e.strip().upper() for e in entities if e.strip()))
    unknown = [e for e in chosen if e not in PII_ENTITIES]
    if unknown or not chosen:
        raise InvalidInputError(
            "unknown entity type",
            expected=f"a subset of {', '.join(PII_ENTITIES)}",
            got=", ".join(unknown) or "an empty list",
            fix="for example --entities PERSON,EMAIL_ADDRESS,PHONE_NUMBER",
        )
    return chosen


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(
            "the score threshold must lie in [0, 1]",
            expected="a number between 0 and 1",
            got=repr(threshold),
            fix=f"use the tuned default {DEFAULT_THRESHOLD} or e.g. --threshold 0.4",
        )
    return float(threshold)
