"""Attacks on Veil's own models and releases, empirical DP auditing, fairness, and the audit report.

* :func:`audit_model` attacks a model of the workspace (membership, attribute
  inference, inversion, extraction, a canary DP audit, fairness) and returns an
  :class:`AuditReport`; :func:`write_report` writes it as self-contained HTML
  and JSON.
* The attacks work on any model as a :class:`Classifier` (PyTorch, scikit-learn):
  :func:`membership_inference` (threshold, shadow, LiRA, RMIA, label-only),
  :func:`attribute_inference`, :func:`invert_classes`, :func:`extraction_curve`.
* :func:`audit_mechanism`, :func:`canary_audit`, :func:`one_run_epsilon` and
  :func:`epsilon_lower_bound` bound epsilon from below, to set beside a claim.

>>> from veil.audit import epsilon_lower_bound
>>> # 9,000 of 10,000 runs on D1 and 1,000 of 10,000 on D0 fell in the event:
>>> round(epsilon_lower_bound(1000, 10_000, 9000, 10_000, alpha=0.05), 2)
2.13
"""

from veil.audit._attribute import AttributeResult, attribute_inference
from veil.audit._dpaudit import CanaryAudit, audit_mechanism, canary_audit
from veil.audit._extraction import ExtractionResult, extraction_curve
from veil.audit._fairness import FairnessResult, fairness_metrics
from veil.audit._findings import AuditReport
from veil.audit._inversion import InversionResult, invert_classes
from veil.audit._membership import (
    MIA_ATTACKS,
    ReferenceModels,
    lira_scores,
    membership_inference,
    train_references,
)
from veil.audit._metrics import AttackResult, score_attack
from veil.audit._report import render_html, write_report
from veil.audit._run import AUDIT_ATTACKS, audit_model, veil_trainer
from veil.audit._stats import (
    EpsilonBound,
    clopper_pearson,
    epsilon_from_scores,
    epsilon_lower_bound,
    one_run_epsilon,
)
from veil.audit._targets import Classifier, as_classifier
from veil.audit._verdicts import Verdict

__all__ = [
    "AUDIT_ATTACKS",
    "MIA_ATTACKS",
    "AttackResult",
    "AttributeResult",
    "AuditReport",
    "CanaryAudit",
    "Classifier",
    "EpsilonBound",
    "ExtractionResult",
    "FairnessResult",
    "InversionResult",
    "ReferenceModels",
    "Verdict",
    "as_classifier",
    "attribute_inference",
    "audit_mechanism",
    "audit_model",
    "canary_audit",
    "clopper_pearson",
    "epsilon_from_scores",
    "epsilon_lower_bound",
    "extraction_curve",
    "fairness_metrics",
    "invert_classes",
    "lira_scores",
    "membership_inference",
    "one_run_epsilon",
    "render_html",
    "score_attack",
    "train_references",
    "veil_trainer",
    "write_report",
]
