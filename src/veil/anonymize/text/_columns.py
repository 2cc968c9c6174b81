"""PII columns of a table: each column sampled, analysed with its name as context, then judged."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from veil._validate import whole_number
from veil.anonymize.text._analyze import BATCH_LINES
from veil.anonymize.text._engine import get_engine
from veil.anonymize.text._entities import (
    DEFAULT_THRESHOLD,
    NER_ENTITIES,
    check_entities,
    check_threshold,
)
from veil.anonymize.text._refine import refine
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PiiColumn", "find_pii_columns"]


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
    chosen = check_entities(entities)
    cut = check_threshold(threshold)
    sample_size = whole_number(
        sample_size, "sample_size", expected="how many values to analyse per column, e.g. 200"
    )
    if not 0.0 < min_share <= 1.0:
        raise InvalidInputError(
            "min_share must lie in (0, 1]",
            expected="the smallest share of values that must hold PII, e.g. 0.3",
            got=repr(min_share),
        )
    engine = get_engine(any(e in NER_ENTITIES for e in chosen))
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
        emit(progress, "find PII columns", index + 1, len(columns), unit="columns")
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
        for e in refine(value, result, threshold):
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
