"""PII in free text: detection with Presidio and spaCy, redaction with six operators, evaluation.

The modules, one concern each:

- ``_entities``: the entity types, a detected entity, the identifiers' checksums;
- ``_recognizers``: Presidio's recognisers where they fit, Veil's where they do not;
- ``_engine``: the analyzer over spaCy's small English model, built once per process;
- ``_refine``: spans trimmed, relabelled or dropped after Presidio, overlaps resolved;
- ``_analyze``: detection over texts in batches (:func:`analyze_texts`);
- ``_keyed``: the keyed operators (HMAC-SHA256, AES-256-GCM, surrogates);
- ``_redact``: redaction of texts (:func:`redact_text`, :func:`decrypt_text`);
- ``_stream``: redaction of files, streamed, with worker processes (:func:`redact_file`);
- ``_columns``: the PII columns of a table (:func:`find_pii_columns`);
- ``_corpus`` and ``_scoring``: labelled corpora and span-level scores (:func:`evaluate_pii`).

The heavy dependencies (spaCy, Presidio, Faker) load on first use (the
``text`` extra). :mod:`veil.anonymize` re-exports what users need; the
command line and the benchmarks also use :func:`load_text_libraries`,
:func:`load_engine`, :data:`KEYED_OPERATORS` and :func:`pii_benchmark_folder`.
"""

from veil.anonymize.text._analyze import analyze_texts
from veil.anonymize.text._columns import PiiColumn, find_pii_columns
from veil.anonymize.text._corpus import (
    BENCH_DATA_VARIABLE,
    PiiRecord,
    PiiSpan,
    load_corpus,
    pii_benchmark_folder,
)
from veil.anonymize.text._engine import load_engine, load_text_libraries
from veil.anonymize.text._entities import (
    DEFAULT_THRESHOLD,
    NER_ENTITIES,
    PATTERN_ENTITIES,
    PII_ENTITIES,
    PiiEntity,
)
from veil.anonymize.text._keyed import KEYED_OPERATORS
from veil.anonymize.text._redact import (
    REDACT_OPERATORS,
    RedactedText,
    RedactOperator,
    decrypt_text,
    redact_lines,
    redact_text,
)
from veil.anonymize.text._scoring import PiiEvaluation, SpanScores, evaluate_pii, score_spans
from veil.anonymize.text._stream import RedactionReport, decrypt_file, redact_file

__all__ = [
    "BENCH_DATA_VARIABLE",
    "DEFAULT_THRESHOLD",
    "KEYED_OPERATORS",
    "NER_ENTITIES",
    "PATTERN_ENTITIES",
    "PII_ENTITIES",
    "REDACT_OPERATORS",
    "PiiColumn",
    "PiiEntity",
    "PiiEvaluation",
    "PiiRecord",
    "PiiSpan",
    "RedactOperator",
    "RedactedText",
    "RedactionReport",
    "SpanScores",
    "analyze_texts",
    "decrypt_file",
    "decrypt_text",
    "evaluate_pii",
    "find_pii_columns",
    "load_corpus",
    "load_engine",
    "load_text_libraries",
    "pii_benchmark_folder",
    "redact_file",
    "redact_lines",
    "redact_text",
    "score_spans",
]
