"""DP-SGD training, private tabular models, and models with privacy cards.

* :func:`fit_private` trains a model on a registered dataset: it checks the
  data and the model, calibrates the noise to a target (epsilon, delta),
  charges the dataset's ledger *before* training (one Poisson-subsampled
  Gaussian event), trains with DP-SGD and saves the model with its
  :class:`PrivacyCard`.
* :func:`fit_sisa` trains a SISA ensemble (shards x slices, checkpointed) and
  :func:`unlearn_sisa` retrains only the shards that held erased persons.
* :func:`train` and :class:`DPConfig` are the engine for any PyTorch model
  made of layers whose per-example gradients Veil can clip in one backward pass.
* :class:`DPLogisticRegression` and :class:`DPMLPClassifier` have the
  scikit-learn interface (``fit`` / ``predict`` / ``predict_proba``) with
  declared feature bounds.

>>> from veil.train import calibrate_noise, account
>>> sigma = calibrate_noise(3.0, 1e-5, sample_rate=256 / 60000, steps=2340)
>>> account(256 / 60000, sigma, 2340, 1e-5, prv=False).epsilon <= 3.0
True
"""

from typing import TYPE_CHECKING

from veil._lazy import lazy_exports

if TYPE_CHECKING:
    from veil.train._accounting import PrivacyAccounting, account, calibrate_noise
    from veil.train._artifact import ModelRegistry, PrivacyCard, SavedModel
    from veil.train._clip import PerSampleClipper, validate_model
    from veil.train._engine import TrainingReport, evaluate, predict_logits, train
    from veil.train._models import (
        MODEL_KINDS,
        DPLogisticRegression,
        DPMLPClassifier,
        FeatureEncoder,
        build_model,
        fixed_features,
        trainable_part,
    )
    from veil.train._pipeline import DatasetTensors, TrainedModel, dataset_tensors, fit_private
    from veil.train._plan import (
        DPConfig,
        Optimizer,
        Sampling,
        Schedule,
        TrainingPlan,
        plan_training,
    )
    from veil.train._random import SecureRandom
    from veil.train._sisa import (
        SisaEnsemble,
        SisaSchedule,
        assign_persons,
        shard_checkpoint,
        shard_members,
        stage_plan,
    )
    from veil.train._sisa_train import fit_sisa
    from veil.train._unlearn import UnlearnResult, unlearn_sisa

# Each name loads its module on first use (PEP 562): the registry and the privacy cards are read
# without PyTorch (the gateway's workers, `veil models list`); training imports it when it starts.
_WHERE = {
    "PrivacyAccounting": "veil.train._accounting",
    "account": "veil.train._accounting",
    "calibrate_noise": "veil.train._accounting",
    "ModelRegistry": "veil.train._artifact",
    "PrivacyCard": "veil.train._artifact",
    "SavedModel": "veil.train._artifact",
    "PerSampleClipper": "veil.train._clip",
    "validate_model": "veil.train._clip",
    "TrainingReport": "veil.train._engine",
    "evaluate": "veil.train._engine",
    "predict_logits": "veil.train._engine",
    "train": "veil.train._engine",
    "MODEL_KINDS": "veil.train._models",
    "DPLogisticRegression": "veil.train._models",
    "DPMLPClassifier": "veil.train._models",
    "FeatureEncoder": "veil.train._models",
    "build_model": "veil.train._models",
    "fixed_features": "veil.train._models",
    "trainable_part": "veil.train._models",
    "DatasetTensors": "veil.train._pipeline",
    "TrainedModel": "veil.train._pipeline",
    "dataset_tensors": "veil.train._pipeline",
    "fit_private": "veil.train._pipeline",
    "DPConfig": "veil.train._plan",
    "Optimizer": "veil.train._plan",
    "Sampling": "veil.train._plan",
    "Schedule": "veil.train._plan",
    "TrainingPlan": "veil.train._plan",
    "plan_training": "veil.train._plan",
    "SecureRandom": "veil.train._random",
    "SisaEnsemble": "veil.train._sisa",
    "SisaSchedule": "veil.train._sisa",
    "assign_persons": "veil.train._sisa",
    "shard_checkpoint": "veil.train._sisa",
    "shard_members": "veil.train._sisa",
    "stage_plan": "veil.train._sisa",
    "fit_sisa": "veil.train._sisa_train",
    "UnlearnResult": "veil.train._unlearn",
    "unlearn_sisa": "veil.train._unlearn",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())

__all__ = [
    "MODEL_KINDS",
    "DPConfig",
    "DPLogisticRegression",
    "DPMLPClassifier",
    "DatasetTensors",
    "FeatureEncoder",
    "ModelRegistry",
    "Optimizer",
    "PerSampleClipper",
    "PrivacyAccounting",
    "PrivacyCard",
    "Sampling",
    "SavedModel",
    "Schedule",
    "SecureRandom",
    "SisaEnsemble",
    "SisaSchedule",
    "TrainedModel",
    "TrainingPlan",
    "TrainingReport",
    "UnlearnResult",
    "account",
    "assign_persons",
    "build_model",
    "calibrate_noise",
    "dataset_tensors",
    "evaluate",
    "fit_private",
    "fit_sisa",
    "fixed_features",
    "plan_training",
    "predict_logits",
    "shard_checkpoint",
    "shard_members",
    "stage_plan",
    "train",
    "trainable_part",
    "unlearn_sisa",
    "validate_model",
]
