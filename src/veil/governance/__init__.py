"""Erasure, retention and lineage: what Veil forgets, and what still remembers.

* :func:`erase` removes one person from a managed dataset: a new version
  without their rows, the SISA models that carry them unlearned and verified,
  then the old version's data key destroyed (crypto-shredding).
* :func:`set_policy`, :func:`policies` and :func:`run_retention` keep a
  dataset's rows only as long as its retention policy allows; a run applies
  what is due and nothing else, so cron may run it as often as it likes.
* :func:`derived_artifacts` and :func:`carried_erasures` say what was made
  from a dataset and how many erased people a model still carries.
* :func:`unlearn_and_verify` retrains a SISA model without the erased people
  it carries and tests that it forgot them (:func:`check_forgetting`: offline
  LiRA with reference ensembles from :func:`sisa_trainer`), into the model's
  audit report; ``veil unlearn`` and :func:`erase` call it.

Budgets are never refunded: a dataset keeps its ledger across versions.
"""

from veil.governance._erasure import AffectedArtifact, ErasureReport, erase
from veil.governance._forgetting import ForgettingCheck, check_forgetting
from veil.governance._lineage import (
    CarriedReport,
    DerivedArtifact,
    carried_erasures,
    derived_artifacts,
    record_artifact,
)
from veil.governance._references import sisa_trainer
from veil.governance._retention import (
    RetentionAction,
    RetentionPolicy,
    RetentionReport,
    policies,
    set_policy,
)
from veil.governance._retention import run as run_retention
from veil.governance._unlearning import UnlearningReport, unlearn_and_verify

__all__ = [
    "AffectedArtifact",
    "CarriedReport",
    "DerivedArtifact",
    "ErasureReport",
    "ForgettingCheck",
    "RetentionAction",
    "RetentionPolicy",
    "RetentionReport",
    "UnlearningReport",
    "carried_erasures",
    "check_forgetting",
    "derived_artifacts",
    "erase",
    "policies",
    "record_artifact",
    "run_retention",
    "set_policy",
    "sisa_trainer",
    "unlearn_and_verify",
]
