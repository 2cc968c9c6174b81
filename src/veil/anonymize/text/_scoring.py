"""Span-level evaluation of the detector: precision, recall and F2 per entity type.

**Matching.** A prediction and a gold span match when they have the same
entity type and their character ranges overlap (``overlap``), or when type,
start and end are all equal (``strict``). Precision is the share of predicted
spans that match a gold span; recall the share of gold spans matched by a
prediction; F2 weighs recall twice as much as precision (a missed name is
worse than a redacted word): ``F2 = 5PR / (4P + R)``.

The harness is written by hand: Presidio's own evaluator (presidio-evaluator)
scores tokens, not spans, and is not a maintained package on PyPI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.anonymize.text._analyze import analyze_texts
from veil.anonymize.text._corpus import PiiSpan, builtin_corpus, load_corpus
from veil.anonymize.text._entities import DEFAULT_THRESHOLD
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

__all__ = ["PiiEvaluation", "SpanScores", "evaluate_pii", "score_spans"]


@dataclass(frozen=True)
class SpanScores:
    """Counts and rates of one entity type (or of all of them) under one matching rule."""

    predicted: int
    gold: int
    correct_predicted: int
    found_gold: int

    @property
    def precision(self) -> float:
        """Share of predicted spans that match a gold span (1.0 when nothing was predicted)."""
        return self.correct_predicted / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        """Share of gold spans matched by a prediction (1.0 when there is no gold span)."""
        return self.found_gold / self.gold if self.gold else 1.0

    @property
    def f2(self) -> float:
        """F-beta with beta = 2: recall counts twice as much as precision."""
        p, r = self.precision, self.recall
        return 5 * p * r / (4 * p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Counts and rounded rates, JSON-ready."""
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f2": round(self.f2, 4),
            "predicted": self.predicted,
            "gold": self.gold,
            "correct_predicted": self.correct_predicted,
            "found_gold": self.found_gold,
        }


def _matches(a: PiiSpan, b: PiiSpan, *, strict: bool) -> bool:
    if a.entity_type != b.entity_type:
        return False
    if strict:
        return a.start == b.start and a.end == b.end
    return a.start < b.end and b.start < a.end


def score_spans(
    gold: Sequence[Sequence[PiiSpan]], predicted: Sequence[Sequence[PiiSpan]], *, strict: bool
) -> dict[str, SpanScores]:
    """Precision, recall and F2 per entity type and ``"overall"``, document by document.

    Args:
        gold: The gold spans of each document.
        predicted: The predicted spans of the same documents, in the same order.
        strict: Exact boundaries (``True``) or any overlap (``False``); the
            entity type must match either way.
    """
    if len(gold) != len(predicted):
        raise InvalidInputError(
            "gold and predicted spans must describe the same documents",
            expected=f"{len(gold)} lists of predicted spans",
            got=str(len(predicted)),
        )
    counts: dict[str, list[int]] = {}
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        for p in predicted_spans:
            row = counts.setdefault(p.entity_type, [0, 0, 0, 0])
            row[0] += 1
            row[2] += any(_matches(p, g, strict=strict) for g in gold_spans)
        for g in gold_spans:
            row = counts.setdefault(g.entity_type, [0, 0, 0, 0])
            row[1] += 1
            row[3] += any(_matches(g, p, strict=strict) for p in predicted_spans)
    scores = {kind: SpanScores(*row) for kind, row in sorted(counts.items())}
    total = [sum(column) for column in zip(*counts.values(), strict=True)] if counts else [0] * 4
    scores["overall"] = SpanScores(*total)
    return scores


@dataclass(frozen=True)
class PiiEvaluation:
    """Span-level scores of the redaction engine on one part of the corpus.

    Attributes:
        part: ``"test"`` (held out) or ``"tune"``.
        documents: Sentences scored.
        threshold: The score threshold the engine ran with.
        overlap: Scores per entity type and ``"overall"`` when overlapping spans match.
        strict: The same when only exact boundaries match.
        seconds: Time spent analysing the sentences.
        corpus: ``"built-in"`` (Veil's corpus) or the path of the file scored.
    """

    part: str
    documents: int
    threshold: float
    overlap: dict[str, SpanScores]
    strict: dict[str, SpanScores]
    seconds: float
    corpus: str = "built-in"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores and the matching rules' definitions."""
        return {
            "corpus": self.corpus,
            "part": self.part,
            "documents": self.documents,
            "threshold": self.threshold,
            "matching": {
                "overlap": "same entity type and overlapping character ranges",
                "strict": "same entity type, start and end",
            },
            "overlap": {k: v.to_dict() for k, v in self.overlap.items()},
            "strict": {k: v.to_dict() for k, v in self.strict.items()},
            "seconds": round(self.seconds, 3),
        }


def evaluate_pii(
    part: str = "test",
    *,
    threshold: float | None = None,
    limit: int | None = None,
    path: Path | str | None = None,
    progress: ProgressCallback | None = None,
) -> PiiEvaluation:
    """Run the redaction engine on one part of the corpus and score its spans.

    Args:
        part: ``"test"`` (the held-out templates, the reported numbers) or
            ``"tune"`` (the only part to tune on).
        threshold: Score threshold (default: the engine's tuned default).
        limit: Score only the first ``limit`` sentences (quick checks).
        path: The corpus file (default: Veil's own, ``benchmarks/pii`` in a
            checkout of the repository, see :func:`pii_benchmark_folder`), in the
            format :func:`load_corpus` reads: ``{"text": ..., "spans":
            [[start, end, "TYPE"], ...]}`` a line; records without a part are
            scored as ``test``.
        progress: Receives one event per batch of sentences.

    Raises:
        NotFoundError: ``path`` does not exist, or no ``path`` was given and
            Veil's corpus is not here (an installed wheel without a checkout).
        InvalidInputError: An unknown part, a line that is not a labelled
            record, or no record of ``part`` in the file.
    """
    import time  # noqa: PLC0415 - only the evaluation needs a clock

    records = load_corpus(part, path)[:limit]
    if not records:
        raise InvalidInputError(
            f"no labelled sentence of the {part!r} part to score",
            expected=f"at least one record of part {part!r} in {path or builtin_corpus()}",
            got="0 records",
            fix="records without a 'part' are 'test': evaluate the 'test' part, or label some",
        )
    chosen = DEFAULT_THRESHOLD if threshold is None else threshold
    started = time.perf_counter()
    found = analyze_texts([r.text for r in records], threshold=chosen, progress=progress)
    seconds = time.perf_counter() - started
    predicted = [[PiiSpan(e.start, e.end, e.entity_type) for e in entities] for entities in found]
    gold = [r.spans for r in records]
    return PiiEvaluation(
        part=part,
        documents=len(records),
        threshold=chosen,
        overlap=score_spans(gold, predicted, strict=False),
        strict=score_spans(gold, predicted, strict=True),
        seconds=seconds,
        corpus="built-in" if path is None else str(path),
    )
