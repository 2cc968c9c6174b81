"""Refinement of Presidio's spans: trimmed, relabelled or dropped, and overlaps resolved.

Titles and possessives are trimmed from names and a title marks a person; a
capitalised word after a title is a name and capitalised words before
"Hospital", "Infirmary", "Bank"... are an organisation (two patterns of
:mod:`veil.anonymize.text._recognizers`, refined like NER); a one-word name
after "in/from/to" or before "branch/clinic" is a place; ``DATE_TIME`` keeps
calendar dates and clock times (not durations, ages or bare years); names
made mostly of digits, and abbreviations that spaCy's small model mistakes
for entities in clinical and financial notes, are dropped. Every rule and
the deny-list were tuned on the ``tune`` part of Veil's labelled corpus only
(``benchmarks/pii`` in the repository). Overlapping spans are resolved:
pattern matches (formats, checksums) before NER guesses, then the higher
score, then the longer span.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from veil.anonymize.text._entities import PiiEntity
from veil.anonymize.text._recognizers import MONTH, NER_RECOGNIZERS

__all__ = ["refine"]

_WEEKDAY = r"mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:rs(?:day)?)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?"
_SPECIFIC_DATE = re.compile(
    rf"\b(?:{MONTH}|{_WEEKDAY})\b"  # a month or weekday name
    r"|\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b"  # 12/03/2024, 2024-03-12
    r"|\b\d{1,2}:\d{2}\b"  # 14:30
    r"|\b\d{1,2}\s?(?:am|pm|a\.m\.|p\.m\.)",  # 3 pm
    re.IGNORECASE,
)
_TITLES = re.compile(
    r"(?:(?:dr|mr|mrs|ms|miss|mx|prof|sir|dame|nurse|pharmacist|auditor|optometrist)\.?\s+)+",
    re.IGNORECASE,
)
_LEADING_ARTICLE = re.compile(r"the\s+", re.IGNORECASE)
_PLACE_BEFORE = re.compile(r"\b(?:in|from|near|to)\s+$", re.IGNORECASE)
_ORG_WORDS = (
    r"Hospital|Infirmary|Clinic|Hospice|Institute|Bank|University|College|Ltd|PLC|LLC|Inc"
    r"|Holdings|Partners|Group|GmbH|Corporation|Corp|Company|Co"
)
_ORG_AFTER = re.compile(rf"(?:'s|\u2019s)?\s+(?:{_ORG_WORDS})\b\.?")
_ORG_INSIDE = re.compile(rf"\b(?:{_ORG_WORDS})\b\.?$")
_TITLE_BEFORE = re.compile(r"\b(?:dr|mr|mrs|ms|miss|mx|prof|sir|dame|nurse)\.?\s+$", re.IGNORECASE)
_PLACE_AFTER = re.compile(r"^\s+(?:branch|clinic|office)\b", re.IGNORECASE)
_EDGE_STRIP = " \t\r\n,;:()[]{}\"'"
# Words that spaCy's small model tags as names, places or organisations in
# clinical and financial notes but that identify nobody: abbreviations and
# labels of the two domains. The list was grown from the errors on the tune
# part of the corpus (never the test part), plus the domains' common acronyms.
_NOT_NAMES = frozenset(
    word.casefold()
    for word in (
        # clinical
        "ICU", "ED", "ER", "A&E", "GP", "MRI", "CT", "ECG", "EKG", "BP", "HR", "DOB", "NHS",
        "ICD", "ICD-10", "HbA1c", "SpO2", "COVID", "COVID-19", "DNR", "OT", "PT", "IV",
        "Ward", "Theatre", "Discharge", "Allergies", "Consent", "Nurse", "Patient",
        # financial and identifiers
        "SSN", "SIN", "BSN", "IBAN", "BIC", "SWIFT", "KYC", "AML", "SMS", "PIN", "OTP", "API",
        "CVV", "ATM", "VAT", "PAYE", "W-2", "IP", "URL", "ID", "Social Security",
        "Social Security Number", "Social Insurance", "Social Insurance Number",
        "Burgerservicenummer", "Password", "Chargeback", "Payroll", "Invoice", "Statement",
        "Payee", "Beneficiary", "Merchant", "Client", "Customer", "Policy", "Ref", "Order",
    )
)  # fmt: skip


def _has_numbers(value: str) -> bool:
    digits = sum(ch.isdigit() for ch in value)
    return digits > 0 and (digits * 3 > len(value) or "/" in value or "." in value)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _EDGE_STRIP:
        start += 1
    while end > start and text[end - 1] in _EDGE_STRIP + ".":
        end -= 1
    if text[start:end].endswith(("'s", "\u2019s")):
        end -= 2
    return start, end


def _refine_ner(  # noqa: C901 - one rule after the other, each commented
    text: str, kind: str, start: int, end: int
) -> tuple[str, int, int] | None:
    """Trim and relabel a span of spaCy's NER; ``None`` drops it."""
    start, end = _trim(text, start, end)
    title = _TITLES.match(text, start, end)
    if title:  # "Dr Smith", "Nurse Ann": a person, whatever the model said
        kind, start = "PERSON", title.end()
    elif _TITLE_BEFORE.search(text, max(0, start - 12), start):
        kind = "PERSON"
    if kind != "DATE_TIME" and _has_numbers(text[start:end]):
        return None  # "BP 99/104", "K80.4": codes and readings, not names
    if kind == "ORGANIZATION":
        article = _LEADING_ARTICLE.match(text, start, end)
        if article:
            start = article.end()
    if kind == "DATE_TIME" and not _SPECIFIC_DATE.search(text, start, end):
        return None  # durations, ages, frequencies, bare years
    value = text[start:end]
    if end <= start or value.casefold() in _NOT_NAMES:
        return None
    if kind in ("PERSON", "LOCATION") and _ORG_INSIDE.search(value):
        kind = "ORGANIZATION"  # "Clark LLC", "Jenkins Holdings"
    if kind in ("PERSON", "LOCATION"):
        suffix = _ORG_AFTER.match(text, end)
        if suffix:  # "St Luke's Hospital": the model stopped at the saint
            return "ORGANIZATION", start, suffix.end()
    one_word = " " not in value and "-" not in value
    if (
        kind in ("PERSON", "ORGANIZATION")
        and one_word
        and (_PLACE_BEFORE.search(text, 0, start) or _PLACE_AFTER.match(text[end:]))
    ):
        kind = "LOCATION"  # "born in Leeds", "the York branch": the model's coin toss
    return kind, start, end


def refine(text: str, results: Iterable[Any], threshold: float) -> list[PiiEntity]:
    patterns: list[PiiEntity] = []
    ner: list[PiiEntity] = []
    for r in results:
        if r.score < threshold:
            continue
        from_ner = r.recognition_metadata.get("recognizer_name") in NER_RECOGNIZERS
        if from_ner:
            refined = _refine_ner(text, r.entity_type, r.start, r.end)
            if refined is not None:
                ner.append(PiiEntity(refined[0], refined[1], refined[2], float(r.score)))
        else:
            start, end = _trim(text, r.start, r.end)
            head = text[start:end].split("(", maxsplit=1)[0]
            if start > 0 and text[start - 1] == "(" and ")" in head:
                start -= 1  # "(293)967-5751": the area code's parenthesis belongs to the number
            if end > start:
                patterns.append(PiiEntity(r.entity_type, start, end, float(r.score)))
    # Overlaps: pattern matches (formats, checksums) before NER guesses; within
    # each, the higher score wins, then the longer span, then the earlier one.
    kept: list[PiiEntity] = []
    for group in (patterns, ner):
        group.sort(key=lambda e: (-e.score, -(e.end - e.start), e.start))
        for c in group:
            if all(c.end <= k.start or k.end <= c.start for k in kept):
                kept.append(c)
    return sorted(kept, key=lambda e: e.start)
