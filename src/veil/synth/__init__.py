"""DP synthetic data: AIM and MST, charged through the one budget gate, then attacked.

A marginal-based generator measures a set of marginals (counts over a few
columns) with Gaussian noise, chooses which with the exponential mechanism,
and fits a graphical model to the noisy measurements (private-pgm's ``mbi``,
used for estimation only); the synthetic rows are sampled from that model.
Every measurement and selection is a mechanism of the release's ledger
event, charged before the first one runs (:mod:`veil.synth._plan`). The
domain (bins, categories) comes from the declared schema, never from the
rows (:mod:`veil.synth._encode`).

>>> from veil.synth import workload_cliques
>>> workload_cliques({"a": 3, "b": 4, "c": 5}, "2-way")
[('a', 'b'), ('a', 'c'), ('b', 'c')]
"""

from veil.synth._aim import RunTrace, candidates_of
from veil.synth._attacks import (
    AttributeAttack,
    DcrDiagnostic,
    MembershipAttack,
    attribute_attack,
    distance_to_closest_record,
    membership_attack,
)
from veil.synth._encode import DEFAULT_BINS, ColumnCoding, Encoder
from veil.synth._evaluate import SynthEvaluation, Utility, evaluate_release, marginal_tvd
from veil.synth._model import load_mbi
from veil.synth._plan import SynthPlan, plan_for
from veil.synth._release import (
    OUTPUT_SUFFIXES,
    SynthCard,
    SynthResult,
    SynthSettings,
    fit_nonprivate,
    synthesize_dataset,
    synthesize_frame,
    write_release,
)
from veil.synth._report import render_report, report_html
from veil.synth._workload import (
    DEFAULT_MAX_CELLS,
    MAX_DOMAIN_CELLS,
    marginal,
    workload_cliques,
    workload_tvd,
)

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_MAX_CELLS",
    "MAX_DOMAIN_CELLS",
    "OUTPUT_SUFFIXES",
    "AttributeAttack",
    "ColumnCoding",
    "DcrDiagnostic",
    "Encoder",
    "MembershipAttack",
    "RunTrace",
    "SynthCard",
    "SynthEvaluation",
    "SynthPlan",
    "SynthResult",
    "SynthSettings",
    "Utility",
    "attribute_attack",
    "candidates_of",
    "distance_to_closest_record",
    "evaluate_release",
    "fit_nonprivate",
    "load_mbi",
    "marginal",
    "marginal_tvd",
    "membership_attack",
    "plan_for",
    "render_report",
    "report_html",
    "synthesize_dataset",
    "synthesize_frame",
    "workload_cliques",
    "workload_tvd",
    "write_release",
]
