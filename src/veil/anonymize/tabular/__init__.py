"""Anonymisation of tables: hierarchies, k / l / t, generalisation algorithms, operators, risk.

The modules, one concern each:

- ``_hierarchy``: generalisation hierarchies as declared (the file format,
  the bundled ``hierarchies/`` folder);
- ``_domain``: the ordered code space of each quasi-identifier, built from them;
- ``_risk``: equivalence classes, re-identification risk, l-diversity,
  t-closeness, delta-presence, population uniqueness;
- ``_constraints``: the k / l / t test that the algorithms search under;
- ``_recoding``: a generalisation of every quasi-identifier and its utility;
- ``_mondrian`` and ``_flash``: strict and relaxed Mondrian, and the optimal
  full-domain generalisation with a suppression limit;
- ``_operators``: column operators (masking, rank swapping, noise,
  micro-aggregation, keyed pseudonyms, per-person date shifting);
- ``_scan``: ``veil scan``, a table measured as it stands, and the linkage attack;
- ``_anonymize``: ``veil anonymize``, all of the above in one call.

:mod:`veil.anonymize` re-exports what users need; the algorithms' building
blocks (:class:`Constraints`, :func:`mondrian`, :func:`full_domain`) are
exported here for the benchmarks.
"""

from veil.anonymize.tabular._anonymize import (
    ALGORITHMS,
    OPERATORS,
    AnonymizationAlgorithm,
    AnonymizationResult,
    ColumnOperation,
    anonymize,
)
from veil.anonymize.tabular._constraints import Constraints
from veil.anonymize.tabular._domain import build_domains
from veil.anonymize.tabular._flash import full_domain
from veil.anonymize.tabular._hierarchy import (
    BUNDLED_HIERARCHIES,
    HierarchySpec,
    load_hierarchies,
)
from veil.anonymize.tabular._mondrian import mondrian
from veil.anonymize.tabular._operators import (
    add_noise,
    mask,
    microaggregate,
    pseudonymize,
    rank_swap,
    shift_dates,
)
from veil.anonymize.tabular._recoding import Recoding, Utility
from veil.anonymize.tabular._risk import (
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
from veil.anonymize.tabular._scan import (
    LinkageResult,
    ScanReport,
    classifier_accuracy,
    linkage_attack,
    scan_table,
)

__all__ = [
    "ALGORITHMS",
    "BUNDLED_HIERARCHIES",
    "OPERATORS",
    "AnonymizationAlgorithm",
    "AnonymizationResult",
    "ClassStats",
    "ColumnOperation",
    "Constraints",
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
    "full_domain",
    "l_diversity",
    "linkage_attack",
    "load_hierarchies",
    "mask",
    "microaggregate",
    "mondrian",
    "population_uniqueness",
    "pseudonymize",
    "rank_swap",
    "reidentification_risk",
    "scan_table",
    "shift_dates",
    "t_closeness",
]
