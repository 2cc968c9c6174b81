"""The recognisers of the engine: Presidio's where they fit, Veil's where they do not.

* The Dutch BSN (11-proof) has no Presidio recogniser. Presidio's NHS
  recogniser gives every number that passes mod 11 a score of 1.0, so one US
  phone number in eleven became an NHS number; here a valid checksum keeps
  the pattern's score and context words decide.
* Presidio's phone recogniser runs libphonenumber's matcher once per region
  over every text (several milliseconds a line); here a regular expression
  finds candidates and libphonenumber validates only them.
* Presidio's e-mail recogniser calls ``tldextract``, which downloads the
  public-suffix list on first use: here it uses the snapshot bundled with
  tldextract (no network).
* Patterns for institutions ("St Mary's Hospital"), a name after a title
  ("Dr Munoz"), clock times and written-out dates, and Mastercard's
  2-series, where spaCy's small model or Presidio's patterns stop short.

Presidio's classes are imported when the recognisers are built (the ``text``
extra), so each recogniser class is declared inside the step that builds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from veil.anonymize.text._entities import NER_ENTITIES, bsn_valid, nhs_valid, only_digits
from veil.errors import require

__all__ = [
    "INSTITUTION_RECOGNIZER",
    "MONTH",
    "NER_RECOGNIZERS",
    "PHONE_RECOGNIZER",
    "TITLE_NAME_RECOGNIZER",
    "recognizers",
    "suffix_extractor",
]

TITLE_NAME_RECOGNIZER = "VeilTitleNameRecognizer"
PHONE_RECOGNIZER = "VeilPhoneRecognizer"
INSTITUTION_RECOGNIZER = "VeilInstitutionRecognizer"
# Spans of these recognisers are guesses about names, places and organisations:
# they are refined like spaCy's NER (see veil.anonymize.text._refine).
NER_RECOGNIZERS = frozenset({"SpacyRecognizer", TITLE_NAME_RECOGNIZER, INSTITUTION_RECOGNIZER})
MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_PHONE_CONTEXT = (
    "phone", "telephone", "tel", "mobile", "cell", "call", "called", "rang", "phoned",
    "contact", "fax", "line", "sms", "text", "reached", "reach",
)  # fmt: skip
_BSN_CONTEXT = ("bsn", "burgerservicenummer", "citizen", "sofinummer", "sofi", "dutch")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PHONE_EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,5}$")
_NANP_LAYOUT = re.compile(r"(?:\+1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[.-])\d{3}[.-]\d{4}")
_MASTERCARD_2_SERIES = (
    r"\b(?:222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b"
)


def suffix_extractor() -> Any:
    tldextract = require("tldextract", extra="text", purpose="e-mail address recognition")
    # No suffix-list URL and no cache: the snapshot shipped inside tldextract, no network.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def recognizers() -> list[Any]:
    """Presidio's recognisers that fit, and Veil's where they do not, in the registry's order."""
    from presidio_analyzer import Pattern  # noqa: PLC0415
    from presidio_analyzer.predefined_recognizers import (  # noqa: PLC0415
        CaSinRecognizer,
        CreditCardRecognizer,
        DateRecognizer,
        IbanRecognizer,
        IpRecognizer,
        SpacyRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    phone = _phone_recognizer()
    email = _email_recognizer()
    nhs, bsn = _checksum_recognizers()
    return [
        SpacyRecognizer(
            supported_entities=list(NER_ENTITIES),
            ner_strength=0.85,
        ),
        email,
        UrlRecognizer(),
        phone,
        CreditCardRecognizer(),
        CreditCardRecognizer(
            # Presidio's pattern knows Mastercard's 51-55 only, not its 2-series
            # (2221-2720, issued since 2017); Luhn-checked the same way.
            patterns=[Pattern("Mastercard 2-series", _MASTERCARD_2_SERIES, 0.3)],
            name="VeilMastercard2SeriesRecognizer",
        ),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        nhs,
        CaSinRecognizer(context=["sin", "social", "insurance", "canada", "canadian"]),
        bsn,
        DateRecognizer(),
        *_veil_patterns(),
    ]


def _email_recognizer() -> Any:
    """Presidio's e-mail recogniser, with the suffix list bundled in tldextract."""
    from presidio_analyzer.predefined_recognizers import EmailRecognizer  # noqa: PLC0415

    extractor = suffix_extractor()

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recogniser, checking the domain against the bundled suffix list."""

        def validate_result(self, pattern_text: str) -> bool:
            return bool(extractor(pattern_text).fqdn)

    return OfflineEmailRecognizer()


def _checksum_recognizers() -> tuple[Any, Any]:
    """The NHS number (mod 11) and the Dutch BSN (11-proof): a pattern, then its checksum."""
    from presidio_analyzer import Pattern, PatternRecognizer  # noqa: PLC0415

    class ChecksumRecognizer(PatternRecognizer):
        """A pattern whose digits must pass a checksum; a pass keeps the pattern's score."""

        check: Callable[[str], bool]

        def invalidate_result(self, pattern_text: str) -> bool:
            return not type(self).check(only_digits(pattern_text))

    class NhsRecognizer(ChecksumRecognizer):
        check = staticmethod(nhs_valid)

    class BsnRecognizer(ChecksumRecognizer):
        check = staticmethod(bsn_valid)

    nhs = NhsRecognizer(
        supported_entity="UK_NHS",
        name="VeilNhsRecognizer",
        patterns=[
            Pattern("NHS (grouped)", r"\b\d{3}[- ]\d{3}[- ]\d{4}\b", 0.4),
            Pattern("NHS (plain)", r"\b\d{10}\b", 0.3),
        ],
        context=["nhs", "health"],
    )
    bsn = BsnRecognizer(
        supported_entity="NL_BSN",
        name="VeilBsnRecognizer",
        patterns=[
            Pattern("BSN (dotted)", r"\b\d{4}\.\d{2}\.\d{3}\b", 0.4),
            Pattern("BSN (grouped)", r"\b\d{3}[ -]\d{3}[ -]\d{3}\b", 0.2),
            Pattern("BSN (plain)", r"\b\d{9}\b", 0.2),
        ],
        context=list(_BSN_CONTEXT),
    )
    return nhs, bsn


def _phone_recognizer() -> Any:
    """Phone numbers: candidates by regular expression, validated by libphonenumber."""
    require("phonenumbers", extra="text", purpose="phone number recognition")
    from presidio_analyzer import (  # noqa: PLC0415
        AnalysisExplanation,
        EntityRecognizer,
        RecognizerResult,
    )

    class PhoneRecognizer(EntityRecognizer):
        """Candidates by regular expression, validated by libphonenumber (US, UK, or +CC)."""

        candidate = re.compile(
            r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,5}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,6}){1,4}"
            r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w/]|[.:-]\d)"
            r"|(?<![\w+/.-])\+?\d{10,13}(?![\w/]|[.:-]\d)",
        )

        def load(self) -> None:
            return None

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            del entities, nlp_artifacts  # one entity type; no NLP artefacts needed
            if sum(ch.isdigit() for ch in text) < 7:  # noqa: PLR2004
                return []
            results = []
            for match in self.candidate.finditer(text):
                score = _phone_score(match.group())
                if score:
                    results.append(
                        RecognizerResult(
                            "PHONE_NUMBER",
                            match.start(),
                            match.end(),
                            score,
                            analysis_explanation=AnalysisExplanation(
                                recognizer=PHONE_RECOGNIZER,
                                original_score=score,
                                textual_explanation="phone number validated by libphonenumber",
                            ),
                            recognition_metadata={
                                RecognizerResult.RECOGNIZER_NAME_KEY: PHONE_RECOGNIZER,
                                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                            },
                        )
                    )
            return results

    return PhoneRecognizer(
        supported_entities=["PHONE_NUMBER"],
        name=PHONE_RECOGNIZER,
        context=list(_PHONE_CONTEXT),
    )


def _phone_score(candidate: str) -> float:
    """The score of a phone-number candidate: 0.6 valid, 0.5 North American layout, 0.3 possible."""
    import phonenumbers  # noqa: PLC0415 - the text extra, checked by _phone_recognizer

    # The extension ("x745", "ext. 12") is part of the value but not of the number.
    number = _PHONE_EXTENSION.sub("", candidate)
    digits = only_digits(number)
    if _ISO_DATE.match(number) or not 7 <= len(digits) <= 15:  # noqa: PLR2004
        return 0.0  # a date (or the date of a timestamp), or no phone number's length
    if number.startswith("00"):  # "001-473-...": the international prefix dialled from the US
        number = "+" + number[2:]
    best = 0.0
    for region in ("US", "GB"):
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return 0.6
        if phonenumbers.is_possible_number(parsed):
            best = 0.3
    if _NANP_LAYOUT.fullmatch(number):
        # The North American layout, (293)967-5751 or 293.967.5751: a phone number
        # to any reader, even where the area code is not assigned (invented numbers
        # in forms and test data), which libphonenumber calls invalid.
        return 0.5
    return best


def _veil_patterns() -> list[Any]:
    """Institutions, a name after a title, clock times and written-out dates."""
    from presidio_analyzer import Pattern, PatternRecognizer  # noqa: PLC0415

    return [
        PatternRecognizer(
            # Capitalised words before an institution's kind are its name ("St Mary's
            # Hospital", "Leeds Royal Infirmary"), where the model stops short.
            supported_entity="ORGANIZATION",
            name=INSTITUTION_RECOGNIZER,
            patterns=[
                Pattern(
                    "institution",
                    r"(?-i:\b(?:(?:St\.?|[A-Z][\w\u2019'&.-]*)\s+){1,4}"
                    r"(?:Hospital|Infirmary|Clinic|Hospice|Medical Centre|Health Centre"
                    r"|Institute|University|Bank)\b)",
                    0.6,
                )
            ],
        ),
        PatternRecognizer(
            # A capitalised word after a title is a name, even where spaCy's
            # small model misses it ("reported by Dr Munoz"); refined as NER.
            supported_entity="PERSON",
            name=TITLE_NAME_RECOGNIZER,
            patterns=[
                Pattern(
                    "title and name",
                    r"(?-i:\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof)\.?\s+[A-Z][\w'\u2019-]+(?:\s[A-Z][\w'\u2019-]+)?)",
                    0.6,
                )
            ],
        ),
        PatternRecognizer(
            supported_entity="DATE_TIME",
            name="VeilDateTimeRecognizer",
            patterns=[
                Pattern("clock time", r"\b(?:[01]?\d|2[0-3]):[0-5]\d(?:\s?[ap]\.?m\b\.?)?", 0.6),
                Pattern("hour am/pm", r"\b(?:1[0-2]|0?[1-9])\s?[ap]\.?m\b\.?", 0.5),
                Pattern(
                    "day month year",
                    rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s(?:{MONTH})\.?,?\s\d{{4}}\b",
                    0.6,
                ),
                Pattern(
                    "month day year",
                    rf"\b(?:{MONTH})\.?\s\d{{1,2}}(?:st|nd|rd|th)?,?\s\d{{4}}\b",
                    0.6,
                ),
            ],
            context=["date", "time", "on", "at", "born", "dob", "since", "until", "due"],
        ),
    ]
