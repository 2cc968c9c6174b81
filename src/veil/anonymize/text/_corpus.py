"""Labelled PII corpora: the record format, reading a file, and finding Veil's own corpus.

A corpus is a JSON-lines file of sentences with their labelled spans (the
format :func:`load_corpus` reads). Veil's own corpus of clinical and
financial notes is benchmark and test data: it lives in the repository, in
``benchmarks/pii/`` (``pii_corpus.jsonl``, and ``corpus.py``, the generator
that wrote it), and is not part of the wheel. :func:`pii_benchmark_folder`
finds that folder: ``VEIL_BENCH_DATA`` names the folder that holds ``pii/``
(a copy anywhere); otherwise it is looked for in the folders above this
module (a source checkout, or an editable install of one).

**Parts.** Each record belongs to the ``tune`` part (the only one any rule or
threshold was tuned on) or to the held-out ``test`` part; Veil's corpus is
split by template, so every sentence of a template lands in the same part.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.anonymize.text._entities import PII_ENTITIES
from veil.errors import InvalidInputError, NotFoundError

__all__ = [
    "BENCH_DATA_VARIABLE",
    "CORPUS_FILE",
    "PARTS",
    "PiiRecord",
    "PiiSpan",
    "builtin_corpus",
    "load_corpus",
    "pii_benchmark_folder",
]

BENCH_DATA_VARIABLE = "VEIL_BENCH_DATA"
CORPUS_FILE = "pii_corpus.jsonl"
PARTS = ("tune", "test")


@dataclass(frozen=True)
class PiiSpan:
    """A labelled (or predicted) span: ``text[start:end]`` is an entity of ``entity_type``."""

    start: int
    end: int
    entity_type: str


@dataclass(frozen=True)
class PiiRecord:
    """One sentence of the corpus with its gold spans."""

    id: str
    template: str
    domain: str
    part: str
    text: str
    spans: tuple[PiiSpan, ...]

    def to_dict(self) -> dict[str, Any]:
        """The record as one line of ``pii_corpus.jsonl``."""
        return {
            "id": self.id,
            "template": self.template,
            "domain": self.domain,
            "part": self.part,
            "text": self.text,
            "spans": [
                {
                    "start": s.start,
                    "end": s.end,
                    "type": s.entity_type,
                    "value": self.text[s.start : s.end],
                }
                for s in self.spans
            ],
        }


def pii_benchmark_folder() -> Path:
    """The folder of Veil's labelled PII corpus and its generator (``benchmarks/pii``).

    ``$VEIL_BENCH_DATA/pii`` when the variable is set; otherwise the first
    ``benchmarks/pii`` holding the corpus in a folder above this module.

    Raises:
        NotFoundError: The folder is not there (an installed wheel without a
            checkout, or ``VEIL_BENCH_DATA`` naming a folder without ``pii/``).
    """
    wanted = f"benchmarks/pii/{CORPUS_FILE}"
    named = os.environ.get(BENCH_DATA_VARIABLE)
    if named:
        folder = Path(named) / "pii"
        if (folder / CORPUS_FILE).is_file():
            return folder
        raise NotFoundError(
            "Veil's labelled PII corpus is not where VEIL_BENCH_DATA says",
            expected=f"{folder / CORPUS_FILE} ({BENCH_DATA_VARIABLE} names the folder that holds pii/)",
            got="no such file",
            fix=f"point {BENCH_DATA_VARIABLE} at the benchmarks/ folder of a checkout of Veil's repository",
        )
    here = Path(__file__).resolve()
    for parent in here.parents:
        folder = parent / "benchmarks" / "pii"
        if (folder / CORPUS_FILE).is_file():
            return folder
    raise NotFoundError(
        "Veil's labelled PII corpus is not here: it is benchmark data, kept in the repository, not in the wheel",
        expected=f"{wanted} in a folder above {here.parent} (a checkout of Veil's repository)",
        got=f"no {wanted} found, and {BENCH_DATA_VARIABLE} is not set",
        fix=(
            f"work from a checkout (pip install -e .), or set {BENCH_DATA_VARIABLE} to its "
            "benchmarks/ folder; to score your own labelled sentences, pass a corpus file "
            "(veil redact --evaluate --corpus FILE)"
        ),
    )


def builtin_corpus() -> Path:
    """The file of Veil's labelled corpus (see :func:`pii_benchmark_folder`)."""
    return pii_benchmark_folder() / CORPUS_FILE


def load_corpus(part: str | None = None, path: Path | str | None = None) -> list[PiiRecord]:
    """The records of a labelled corpus, all of them or those of one part (``tune``/``test``).

    The file holds one JSON object a line (blank lines are skipped), with the
    sentence under ``"text"`` and its labelled spans under ``"spans"``, each
    either ``[start, end, "TYPE"]`` or ``{"start": ..., "end": ..., "type": ...}``
    (character offsets, ``end`` excluded; ``TYPE`` one of
    :data:`~veil.anonymize.PII_ENTITIES`). ``"id"``, ``"template"``,
    ``"domain"`` and ``"part"`` are optional: a record without a part belongs
    to ``test`` (Veil was never tuned on it). Without ``path``, Veil's own
    corpus is read (see :func:`pii_benchmark_folder`).

    Raises:
        NotFoundError: ``path`` does not exist, or no ``path`` was given and
            Veil's corpus is not here (an installed wheel without a checkout).
        InvalidInputError: An unknown part, or a line that is not such a record
            (the error names the line and what is wrong with it).
    """
    if part is not None and part not in PARTS:
        raise InvalidInputError(
            "unknown corpus part",
            expected=f"one of {', '.join(PARTS)} (or None for both)",
            got=repr(part),
            fix="evaluate on 'test'; tune on 'tune'",
        )
    path = builtin_corpus() if path is None else Path(path)
    if not path.is_file():
        raise NotFoundError(
            "the corpus file does not exist",
            expected="a JSON-lines file of labelled sentences",
            got=str(path),
            fix="check the path (see 'Your own corpus' in docs/redact.md for the format)",
        )
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = _parse_record(line, number, path)
            if part is None or record.part == part:
                records.append(record)
    return records


_RECORD_FORMAT = (
    'one JSON object a line: {"text": "...", "spans": [[start, end, "TYPE"], ...]} '
    '(or spans as {"start", "end", "type"} objects)'
)


def _corpus_error(path: Path, number: int, problem: str) -> InvalidInputError:
    return InvalidInputError(
        f"{path.name} is not a labelled corpus Veil can read",
        expected=f"{_RECORD_FORMAT}; TYPE one of {', '.join(PII_ENTITIES)}",
        got=f"line {number}: {problem}",
        fix="see 'Your own corpus' in docs/redact.md; map your labels to Veil's types first",
    )


def _parse_span(raw: Any, text: str, fail: Callable[[str], InvalidInputError]) -> PiiSpan:
    if isinstance(raw, dict) and {"start", "end"} <= raw.keys():
        triple = [raw["start"], raw["end"], raw.get("type", raw.get("entity_type"))]
    elif isinstance(raw, list) and len(raw) == 3:  # noqa: PLR2004
        triple = raw
    else:
        raise fail(f"span {raw!r} is not [start, end, TYPE]")
    start, end, kind = triple
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise fail(f"span {raw!r} has offsets that are not whole numbers")
    if not 0 <= start < end <= len(text):
        raise fail(f"span {raw!r} lies outside the text ({len(text)} characters)")
    if kind not in PII_ENTITIES:
        raise fail(f"span type {kind!r} is not one of Veil's entity types")
    return PiiSpan(start, end, kind)


def _parse_record(line: str, number: int, path: Path) -> PiiRecord:
    def fail(problem: str) -> InvalidInputError:
        return _corpus_error(path, number, problem)

    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise fail(f"not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise fail(f"a JSON {type(raw).__name__}, not an object")
    if not isinstance(raw.get("text"), str):
        raise fail(f"no 'text' string (keys: {', '.join(sorted(raw)) or 'none'})")
    if not isinstance(raw.get("spans"), list):
        raise fail(f"no 'spans' list (keys: {', '.join(sorted(raw)) or 'none'})")
    text = raw["text"]
    spans = tuple(_parse_span(s, text, fail) for s in raw["spans"])
    part = raw.get("part", "test")
    if part not in PARTS:
        raise fail(f"part {part!r} is neither 'tune' nor 'test'")
    ident = str(raw.get("id", f"line-{number}"))
    return PiiRecord(
        ident, str(raw.get("template", ident)), str(raw.get("domain", "")), part, text, spans
    )
