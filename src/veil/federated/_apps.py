"""Veil's Flower apps: the ``ClientApp`` every node runs and the ``ServerApp`` of a deployment.

The same two objects run in Veil's in-process runner (``--simulate``), under
Flower's Ray simulation (``--ray``) and in a real deployment (``--deploy``,
``flower-supernode`` loads ``veil.federated._apps:client_app`` from the
Flower App that ``veil federate --deploy`` submits).

A client reads the run config (a :class:`FederatedConfig` as flat keys) and
its node config (``partition-id``, ``num-partitions`` and optionally
``data``), loads its own shard only, trains from the global model it is
sent, and answers with its *update*. A run bound to a registered dataset
(``data-sha256``) is checked on the client: it answers the server's data
``query`` with the SHA-256 of the training data it loaded, and refuses to
train on data with another one. Before the update leaves the node it is
bounded (L2, to the DP clip or the norm bound, the only enforcement secure
aggregation allows) and, under local DP, noised.

Two message formats reach ``train``: Veil's own (``arrays`` + ``config``, the
Message API) and, under secure aggregation, Flower's legacy ``fitins`` records,
since ``SecAggPlusWorkflow``/``secaggplus_mod`` exist only on that path in
Flower 1.41-1.42. :func:`_secagg_when_asked` applies ``secaggplus_mod`` only to
messages that carry SecAgg+ stages.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.compat.common.parameter import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common.typing import Code, FitRes, Status
from flwr.serverapp import Grid, ServerApp

from veil._io import write_json_atomic
from veil.errors import InvalidInputError, VeilError
from veil.federated._charging import DATA_CHECK
from veil.federated._config import FederatedConfig
from veil.federated._local_dp import LocalGaussianDP
from veil.federated._noise import GaussianNoise, clip_update
from veil.federated._task import (
    Task,
    build_model,
    check_training_data,
    flatten,
    load_task,
    local_train,
    training_data_sha256,
    unflatten,
)
from veil.federated.deploy._app import RUN_CONFIG_KEY

__all__ = ["DEFAULT_RUN_CONFIG", "client_app", "malicious_clients", "server_app"]

# A tiny real run, for `flwr run` without overrides (the deployment test's defaults).
DEFAULT_RUN_CONFIG: dict[str, Any] = {
    "dataset": "mnist",
    "model": "logreg",
    "clients": 2,
    "rounds": 1,
    "local-epochs": 1,
    "batch-size": 64,
    "lr": 0.1,
    "limit": 2000,
    "strategy": "fedavg",
    "seed": 0,
}

LEGACY_PARAMETERS = "fitins.parameters"


def malicious_clients(config: FederatedConfig) -> frozenset[int]:
    """The partitions that attack: ``ceil(malicious * clients)`` of them, fixed by the seed."""
    count = math.ceil(config.malicious * config.clients) if config.attack != "none" else 0
    order = np.random.default_rng(config.seed + 7).permutation(config.clients)
    return frozenset(int(i) for i in order[:count])


@lru_cache(maxsize=4)
def _task(config_json: str) -> Task:
    return load_task(FederatedConfig.from_mapping(json.loads(config_json)))


def _run_values(context: Context) -> dict[str, Any]:
    """The run's settings: flat keys, or Veil's published app's ``veil-config`` JSON object."""
    values = dict(context.run_config)
    packed = values.pop(RUN_CONFIG_KEY, None)
    if isinstance(packed, str) and packed.strip():
        unpacked = json.loads(packed)
        if not isinstance(unpacked, dict):
            raise InvalidInputError(
                f"the run config '{RUN_CONFIG_KEY}' is not a JSON object",
                expected="a JSON object of Veil's federated settings",
                got=type(unpacked).__name__,
            )
        values.update(unpacked)
    return values


def _node_config(context: Context) -> tuple[FederatedConfig, int]:
    values = _run_values(context)
    node = context.node_config
    if "data" in node:
        values["data"] = str(node["data"])
    if "num-partitions" in node:
        values["clients"] = int(node["num-partitions"])
    config = FederatedConfig.from_run_config(values)
    return config, int(node.get("partition-id", 0))


def _client_update(
    context: Context, weights: list[np.ndarray], round_config: dict[str, Any]
) -> tuple[list[np.ndarray], dict[str, Any], int]:
    config, partition_id = _node_config(context)
    task = _task(json.dumps(config.replace(output=None).to_dict(), sort_keys=True))
    x, y = task.client_data(partition_id)
    attack = config.attack if partition_id in malicious_clients(config) else "none"
    server_round = int(round_config.get("round", 1))
    seed = (config.seed * 100_003 + server_round * 1_009 + partition_id) % 2**31
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_model(config.model, task.input_shape, task.classes, config.hidden)
    update, metrics = local_train(model, weights, x, y, config, attack=attack, seed=seed)
    bound = float(round_config.get("clip", config.update_bound or 0.0))
    if bound > 0:
        flat = flatten(update)
        norm = float(np.linalg.norm(flat))
        metrics["update-norm"] = norm
        metrics["unclipped"] = float(norm <= bound)
        if config.dp == "local":
            noise = GaussianNoise(None if config.secure_rng else seed)
            dp = LocalGaussianDP(
                clip=bound, noise_multiplier=float(config.noise_multiplier or 0), noise=noise
            )
            flat = dp.privatize(flat)
        elif attack == "none" or attack in ("label-flip", "free-ride"):
            flat, _ = clip_update(flat, bound)
        # A malicious client need not clip: the server must not rely on it (see docs).
        update = unflatten(flat, update)
    weight = 1 if config.dp == "central" else len(y)
    metrics["malicious"] = float(attack != "none")
    return update, metrics, weight


client_app = ClientApp()


def _secagg_when_asked(message: Message, context: Context, call_next: Any) -> Message:
    """``secaggplus_mod`` for SecAgg+ rounds; plain rounds pass straight through."""
    if message.has_content() and RECORD_KEY_CONFIGS in message.content.config_records:
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)  # type: ignore[no-any-return]


client_app._mods.append(_secagg_when_asked)  # noqa: SLF001 - ClientApp(mods=...) cannot be used with decorators before 1.43


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    content = message.content
    if LEGACY_PARAMETERS in content.array_records:  # SecAgg+ (Flower's legacy path)
        fitins = compat.recorddict_to_fitins(content, keep_input=True)
        weights = parameters_to_ndarrays(fitins.parameters)
        update, metrics, weight = _client_update(context, weights, dict(fitins.config))
        fitres = FitRes(
            status=Status(code=Code.OK, message=""),
            parameters=ndarrays_to_parameters(update),
            num_examples=weight,
            metrics={k: float(v) for k, v in metrics.items()},
        )
        return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=message)
    weights = content.array_records["arrays"].to_numpy_ndarrays()
    round_config = dict(content.config_records["config"])
    update, metrics, weight = _client_update(context, weights, round_config)
    metrics["weight"] = weight
    reply = RecordDict(
        {
            "update": ArrayRecord(update),
            "metrics": MetricRecord({k: float(v) for k, v in metrics.items()}),
        }
    )
    return Message(reply, reply_to=message)


@client_app.query()
def _query(message: Message, context: Context) -> Message:
    """The server's data check: the SHA-256 of the training data this node loads, or why not."""
    asked = message.content.config_records.get("config")
    if asked is None or asked.get("ask") != DATA_CHECK:
        raise InvalidInputError(
            "unknown query", expected=f"ask = {DATA_CHECK}", got=repr(asked and dict(asked))
        )
    digest, error = "", ""
    try:
        config, partition_id = _node_config(context)
        digest = training_data_sha256(config)
        check_training_data(config, digest, where=f"by the client of partition {partition_id}")
    except VeilError as exc:
        error = str(exc)
    record = ConfigRecord({"sha256": digest, "error": error})
    return Message(RecordDict({"data": record}), reply_to=message)


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    from veil.federated._server import run_federation  # noqa: PLC0415 - import cycle

    config = FederatedConfig.from_run_config(_run_values(context))
    # No guard here: the ServerApp runs in the coordinator's Flower process, without the
    # workspace. A charged deployment is charged by its submitter (veil federate --deploy)
    # after a data_check run; it then submits the run with max_epsilon at the charged epsilon.
    result = run_federation(grid, config)
    if config.output:
        write_json_atomic(Path(config.output), result.to_dict(), mode=None)
