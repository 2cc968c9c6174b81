"""Anonymisation of tables and PII redaction of text, with the re-identification risk measured.

Tables (``veil scan``, ``veil anonymize``):

- measure: equivalence classes, prosecutor / journalist / marketer risk,
  population uniqueness (Pitman), k-anonymity, l-diversity
  (distinct, entropy, recursive), t-closeness, delta-presence, utility
  (GCP, discernibility, average class size, suppression, classifier
  accuracy) and a linkage attack (:func:`scan_table`);
- reduce: strict and relaxed Mondrian, and the optimal full-domain
  generalisation with a suppression limit (:func:`anonymize`), over declared
  or automatic hierarchies (:func:`load_hierarchies`), plus column operators
  (masking, rank swapping, noise, micro-aggregation, keyed pseudonyms,
  per-person date shifting).

Text (``veil redact``): Presidio with spaCy's small English model and
checksum-validated recognisers finds names, places, organisations, dates,
e-mail addresses, phone numbers, card numbers, IBANs, US SSNs, IP addresses,
URLs and national IDs; six operators replace them (:func:`redact_text`,
:func:`redact_file`), and :func:`evaluate_pii` scores the detection on a
labelled corpus (Veil's own lives in the repository, ``benchmarks/pii``).
:func:`find_pii_columns` finds the PII columns of a table. The heavy
dependencies load on first use (the ``text`` extra).

The two sub-packages, :mod:`veil.anonymize.tabular` and
:mod:`veil.anonymize.text`, hold the implementation and export the building
blocks that the command line and the benchmarks use.

>>> from veil.anonymize import anonymize
>>> from veil.data import load_table
>>> patients = load_table("sklearn:diabetes")
>>> result = anonymize(patients, ["age", "sex", "bmi", "bp"], k=5)
>>> result.before.classes.k, result.after.classes.k >= 5
(1, True)
"""

from veil.anonymize.tabular import (
    ALGORITHMS,
    OPERATORS,
    AnonymizationAlgorithm,
    AnonymizationResult,
    ClassStats,
    ColumnOperation,
    HierarchySpec,
    LDiversity,
    LinkageResult,
    PopulationUniqueness,
    Recoding,
    RiskReport,
    ScanReport,
    Utility,
    add_noise,
    anonymize,
    build_domains,
    class_ids,
    classifier_accuracy,
    delta_presence,
    l_diversity,
    linkage_attack,
    load_hierarchies,
    mask,
    microaggregate,
    population_uniqueness,
    pseudonymize,
    rank_swap,
    reidentification_risk,
    scan_table,
    shift_dates,
    t_closeness,
)
from veil.anonymize.text import (
    DEFAULT_THRESHOLD,
    NER_ENTITIES,
    PATTERN_ENTITIES,
    PII_ENTITIES,
    REDACT_OPERATORS,
    PiiColumn,
    PiiEntity,
    PiiEvaluation,
    PiiRecord,
    PiiSpan,
    RedactedText,
    RedactionReport,
    RedactOperator,
    SpanScores,
    analyze_texts,
    decrypt_file,
    decrypt_text,
    evaluate_pii,
    find_pii_columns,
    load_corpus,
    redact_file,
    redact_lines,
    redact_text,
    score_spans,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_THRESHOLD",
    "NER_ENTITIES",
    "OPERATORS",
    "PATTERN_ENTITIES",
    "PII_ENTITIES",
    "REDACT_OPERATORS",
    "AnonymizationAlgorithm",
    "AnonymizationResult",
    "ClassStats",
    "ColumnOperation",
    "HierarchySpec",
    "LDiversity",
    "LinkageResult",
    "PiiColumn",
    "PiiEntity",
    "PiiEvaluation",
    "PiiRecord",
    "PiiSpan",
    "PopulationUniqueness",
    "Recoding",
    "RedactOperator",
    "RedactedText",
    "RedactionReport",
    "RiskReport",
    "ScanReport",
    "SpanScores",
    "Utility",
    "add_noise",
    "analyze_texts",
    "anonymize",
    "build_domains",
    "class_ids",
    "classifier_accuracy",
    "decrypt_file",
    "decrypt_text",
    "delta_presence",
    "evaluate_pii",
    "find_pii_columns",
    "l_diversity",
    "linkage_attack",
    "load_corpus",
    "load_hierarchies",
    "mask",
    "microaggregate",
    "population_uniqueness",
    "pseudonymize",
    "rank_swap",
    "redact_file",
    "redact_lines",
    "redact_text",
    "reidentification_risk",
    "scan_table",
    "score_spans",
    "shift_dates",
    "t_closeness",
]
