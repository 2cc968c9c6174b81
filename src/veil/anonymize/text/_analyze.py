"""Detection: the engine run over texts in batches, long texts in pieces, every span refined."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from veil.anonymize.text._engine import get_engine
from veil.anonymize.text._entities import (
    DEFAULT_THRESHOLD,
    NER_ENTITIES,
    PiiEntity,
    check_entities,
    check_threshold,
)
from veil.anonymize.text._refine import refine
from veil.progress import ProgressCallback, emit

__all__ = ["BATCH_LINES", "MAX_PIECE_CHARS", "analyze", "analyze_texts"]

BATCH_LINES = 256
# spaCy refuses texts above nlp.max_length (10**6 characters); longer lines are
# analysed in pieces cut at whitespace.
MAX_PIECE_CHARS = 100_000


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


def analyze(
    texts: Sequence[str], entities: tuple[str, ...], threshold: float
) -> list[list[PiiEntity]]:
    engine = get_engine(any(e in NER_ENTITIES for e in entities))
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
            for e in refine(piece, result, threshold)
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
    chosen = check_entities(entities)
    cut = check_threshold(threshold)
    found: list[list[PiiEntity]] = []
    for start in range(0, len(texts), BATCH_LINES * 4):
        found.extend(analyze(texts[start : start + BATCH_LINES * 4], chosen, cut))
        emit(progress, "analyse texts", len(found), len(texts), unit="texts")
    return found
