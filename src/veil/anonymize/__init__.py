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

>>> from veil.anonymize import anonymize
>>> from veil.data import load_table
>>> patients = load_table("sklearn:diabetes")
>>> result = anonymize(patients, ["age", "sex", "bmi", "bp"], k=5)
>>> result.before.classes.k, result.after.classes.k >= 5
(1, True)
"""

from veil.anonymize._anonymize import (
    ALGORITHMS,
    OPERATORS,
    AnonymizationResult,
    ColumnOperation,
    anonymize,
)
from veil.anonymize._hierarchy import HierarchySpec, build_domains, load_hierarchies
from veil.anonymize._operators import (
    add_noise,
    mask,
    microaggregate,
    pseudonymize,
    rank_swap,
    shift_dates,
)
from veil.anonymize._recoding import Recoding, Utility
from veil.anonymize._risk import (
    ClassStats,
    LDiversity,
    PopulationUniqueness,
    RiskReport,
    class_ids,
    delta_presence,
    l_diversity,
    population_uniqueness,
    reidentification_risk,
    t_closeness,
)
from veil.anonymize._scan import (
    LinkageResult,
    ScanReport,
    classifier_accuracy,
    linkage_attack,
    scan_table,
)

__all__ = [
    "ALGORITHMS",
    "OPERATORS",
    "AnonymizationResult",
    "ClassStats",
    "ColumnOperation",
    "HierarchySpec",
    "LDiversity",
    "LinkageResult",
    "PopulationUniqueness",
    "Recoding",
    "RiskReport",
    "ScanReport",
    "Utility",
    "add_noise",
    "anonymize",
    "build_domains",
    "class_ids",
    "classifier_accuracy",
    "delta_presence",
    "l_diversity",
    "linkage_attack",
    "load_hierarchies",
    "mask",
    "microaggregate",
    "population_uniqueness",
    "pseudonymize",
    "rank_swap",
    "reidentification_risk",
    "scan_table",
    "shift_dates",
    "t_closeness",
]
