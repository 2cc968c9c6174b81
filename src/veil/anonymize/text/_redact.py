"""Redaction of texts: a validated policy, Presidio's anonymizer with six operators, decryption.

``tag``, ``redact`` and ``mask`` are Presidio's own operators (``replace``,
``redact`` and a ``custom`` mask that keeps the last characters); ``hash``,
``encrypt`` and ``surrogate`` are ``custom`` operators built on the keyed
functions of :mod:`veil.anonymize.text._keyed`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from veil._validate import whole_number
from veil.anonymize.text._analyze import BATCH_LINES, analyze
from veil.anonymize.text._engine import get_engine, load_text_libraries
from veil.anonymize.text._entities import (
    DEFAULT_THRESHOLD,
    NER_ENTITIES,
    PII_ENTITIES,
    PiiEntity,
    check_entities,
    check_threshold,
)
from veil.anonymize.text._keyed import (
    Surrogates,
    check_key,
    decrypter,
    encrypter,
    keyed_hasher,
)
from veil.errors import InvalidInputError

__all__ = [
    "REDACT_OPERATORS",
    "Policy",
    "RedactOperator",
    "RedactedText",
    "Replacer",
    "decrypt_text",
    "redact_batch",
    "redact_lines",
    "redact_text",
]


class RedactOperator(StrEnum):
    """What replaces each value found (module docstring); a plain string (``"tag"``) works too."""

    TAG = "tag"
    REDACT = "redact"
    MASK = "mask"
    HASH = "hash"
    ENCRYPT = "encrypt"
    SURROGATE = "surrogate"


REDACT_OPERATORS = tuple(member.value for member in RedactOperator)


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the redacted text, the entities' positions (never their values), the counts."""
        return {
            "text": self.text,
            "entities": [e.to_dict() for e in self.entities],
            "counts": self.counts,
        }


def _check_operator(operator: RedactOperator | str) -> RedactOperator:
    if operator not in REDACT_OPERATORS:
        raise InvalidInputError(
            "unknown redaction operator",
            expected=f"one of {', '.join(REDACT_OPERATORS)}",
            got=repr(operator),
            fix="for example --operator tag (replace each value with <TYPE>)",
        )
    return RedactOperator(operator)


@dataclass(frozen=True)
class Policy:
    """Validated redaction settings; picklable, so worker processes get the same policy."""

    operator: RedactOperator
    key: bytes | None
    entities: tuple[str, ...]
    threshold: float
    mask_keep: int

    @classmethod
    def make(
        cls,
        operator: RedactOperator | str,
        key: bytes | None,
        entities: Iterable[str] | None,
        threshold: float,
        mask_keep: int,
    ) -> Policy:
        chosen = _check_operator(operator)
        mask_keep = whole_number(
            mask_keep,
            "mask_keep",
            minimum=0,
            expected="the count of trailing characters left visible, e.g. 4",
        )
        return cls(
            chosen,
            check_key(chosen.value, key),
            check_entities(entities),
            check_threshold(threshold),
            mask_keep,
        )


class Replacer:
    """Presidio's anonymizer with the operators of one policy."""

    def __init__(self, policy: Policy) -> None:
        load_text_libraries()
        from presidio_anonymizer.entities import OperatorConfig  # noqa: PLC0415

        self.policy = policy
        self._record = OperatorConfig
        op = policy.operator
        self.configs: dict[str, Any] = {}
        surrogates = Surrogates(policy.key) if op == "surrogate" and policy.key else None
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
                assert surrogates is not None  # noqa: S101 - Policy checked the key
                config = OperatorConfig("custom", {"lambda": self._surrogate(surrogates, kind)})
            self.configs[kind] = config

    def _mask(self, value: str) -> str:
        keep = self.policy.mask_keep
        if len(value) <= keep:
            return "*" * len(value)  # too short to show any of it
        return "*" * (len(value) - keep) + value[len(value) - keep :]

    def _hasher(self, kind: str) -> Callable[[str], str]:
        assert self.policy.key is not None  # noqa: S101 - Policy checked the key
        return keyed_hasher(self.policy.key, kind)

    def _encrypter(self, kind: str) -> Callable[[str], str]:
        assert self.policy.key is not None  # noqa: S101 - Policy checked the key
        return encrypter(self.policy.key, kind)

    @staticmethod
    def _surrogate(surrogates: Surrogates, kind: str) -> Callable[[str], str]:
        return lambda value: surrogates(kind, value)

    def apply(self, text: str, entities: Sequence[PiiEntity]) -> str:
        if not entities:
            return text
        from presidio_anonymizer.entities import RecognizerResult  # noqa: PLC0415

        engine = get_engine(any(e in NER_ENTITIES for e in self.policy.entities))
        results = [RecognizerResult(e.entity_type, e.start, e.end, e.score) for e in entities]
        done = engine.anonymizer.anonymize(
            text, results, operators=self.configs, merge_entities_with_spaces=False
        )
        return str(done.text)


def redact_lines(
    lines: Iterable[str],
    *,
    operator: RedactOperator | str = RedactOperator.TAG,
    key: bytes | None = None,
    entities: Iterable[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    mask_keep: int = 4,
) -> Iterator[RedactedText]:
    """Redact texts one by one, analysing them in batches (``nlp.pipe``).

    Takes the same arguments as :func:`redact_text`; yields one
    :class:`RedactedText` per input, in order.
    """
    policy = Policy.make(operator, key, entities, threshold, mask_keep)
    replacer = Replacer(policy)
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= BATCH_LINES:
            yield from redact_batch(replacer, batch)
            batch = []
    if batch:
        yield from redact_batch(replacer, batch)


def redact_batch(replacer: Replacer, texts: list[str]) -> list[RedactedText]:
    policy = replacer.policy
    found = analyze(texts, policy.entities, policy.threshold)
    return [
        RedactedText(replacer.apply(text, entities), tuple(entities))
        for text, entities in zip(texts, found, strict=True)
    ]


def redact_text(
    text: str,
    *,
    operator: RedactOperator | str = RedactOperator.TAG,
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
            at least 16; e.g. ``KeyStore.for_workspace().get("redact")`` from
            :mod:`veil.vault`).
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
    return decrypter(key)(text)[0]
