"""Federated learning on Flower: secure aggregation, user-level DP with accounting, robust aggregation.

Flower is the engine (messages, SecAgg+, SuperLink/SuperNode deployment);
Veil adds what a hospital network needs on top:

* :func:`federate` runs a :class:`FederatedConfig` in Veil's in-process
  runner (:class:`InProcessGrid`, Flower's public ``Grid`` without Ray) or
  across a real deployment (:class:`Mode`; :mod:`veil.federated.deploy`
  starts the SuperLink and SuperNodes).
* Strategies: FedAvg, FedProx, FedAdam and the robust rules (Krum,
  Multi-Krum, Bulyan, coordinate median, trimmed mean, norm bounding).
* Secure aggregation with Flower's SecAgg+ (dropout-tolerant), with the
  combinations it cannot support refused up front.
* DP-FedAvg (user-level DP): clipping (fixed or adaptive), Gaussian noise
  from AES-CTR, Poisson client sampling, epsilon with amplification by
  sampling (PLD, cross-checked by RDP and by Flower's own accountant),
  charged to the ledger as one event per run before round 1. Local DP and
  record-level DP-SGD at each client.
* Attacks to test the defences: label flipping, sign flipping, scaled
  model replacement (backdoor) and free-riding.
"""

from typing import TYPE_CHECKING

from veil._lazy import lazy_exports
from veil.federated._aggregate import (
    bulyan,
    coordinate_median,
    krum,
    multikrum,
    norm_bound,
    trimmed_mean,
    validate_update,
    weighted_mean,
)
from veil.federated._attacks import ATTACKS
from veil.federated._config import (
    MODELS,
    PARTITIONS,
    ROBUST_STRATEGIES,
    STRATEGIES,
    FederatedConfig,
    Mode,
    load_config,
)
from veil.federated._dpfedavg import DPFedAvgAggregator
from veil.federated._local_dp import LocalGaussianDP
from veil.federated._partition import SCHEMES, describe_partition, partition
from veil.federated._user_dp import UserDPPlan, calibrate_user_noise, plan_user_dp

if TYPE_CHECKING:
    from veil.federated._charging import plan_privacy
    from veil.federated._run import dropout_rule, federate, federate_deployed
    from veil.federated._runner import InProcessGrid
    from veil.federated._server import FederatedResult, run_federation

# The runner and the server load Flower and torch (seconds): they load on first use, so that
# DP-FedAvg's accounting and noise (`_user_dp`, `_dpfedavg`, `_local_dp`, `_noise`) need neither.
_LAZY = {
    "dropout_rule": "veil.federated._run",
    "federate": "veil.federated._run",
    "federate_deployed": "veil.federated._run",
    "InProcessGrid": "veil.federated._runner",
    "FederatedResult": "veil.federated._server",
    "plan_privacy": "veil.federated._charging",
    "run_federation": "veil.federated._server",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "ATTACKS",
    "MODELS",
    "PARTITIONS",
    "ROBUST_STRATEGIES",
    "SCHEMES",
    "STRATEGIES",
    "DPFedAvgAggregator",
    "FederatedConfig",
    "FederatedResult",
    "InProcessGrid",
    "LocalGaussianDP",
    "Mode",
    "UserDPPlan",
    "bulyan",
    "calibrate_user_noise",
    "coordinate_median",
    "describe_partition",
    "dropout_rule",
    "federate",
    "federate_deployed",
    "krum",
    "load_config",
    "multikrum",
    "norm_bound",
    "partition",
    "plan_privacy",
    "plan_user_dp",
    "run_federation",
    "trimmed_mean",
    "validate_update",
    "weighted_mean",
]
