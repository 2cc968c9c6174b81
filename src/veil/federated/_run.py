"""``federate``: one entry point for the three modes of a federated run.

* ``simulate`` (default): Veil's :class:`InProcessGrid`, no Ray, one process.
* ``ray``: Flower's own simulation engine (the optional ``flwr[simulation]``).
* ``deploy``: a real SuperLink and SuperNodes (:mod:`veil.federated._deploy`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

from flwr.app import Message

from veil.errors import InvalidInputError, MissingDependencyError
from veil.federated._apps import client_app, server_app
from veil.federated._config import FederatedConfig
from veil.federated._runner import InProcessGrid
from veil.federated._server import FederatedResult, run_federation
from veil.federated._task import load_task
from veil.progress import ProgressCallback

__all__ = ["MODES", "dropout_rule", "federate"]

MODES = ("simulate", "ray")


def dropout_rule(probability: float, seed: int) -> Callable[[Message], bool]:
    """Each sampled client disconnects mid-round with ``probability`` (after SecAgg+ key sharing)."""
    import numpy as np  # noqa: PLC0415
    from flwr.common.secure_aggregation.secaggplus_constants import (  # noqa: PLC0415
        RECORD_KEY_CONFIGS,
        Stage,
    )

    def drop(message: Message) -> bool:
        if message.metadata.message_type != "train" or not message.has_content():
            return False
        configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and configs.get("stage") != Stage.COLLECT_MASKED_VECTORS:
            return False
        key = [seed, int(message.metadata.group_id or 0), message.metadata.dst_node_id]
        return bool(
            np.random.default_rng(key).random() < probability
        )  # who drops, not privacy noise

    return drop


def federate(
    config: FederatedConfig,
    *,
    mode: str = "simulate",
    progress: ProgressCallback | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    drop: Callable[[Message], bool] | None = None,
    ledger: Any = None,
) -> FederatedResult:
    """Run ``config`` and return its :class:`FederatedResult`.

    ``drop`` overrides the disconnect rule (default: ``config.dropout``); ``ledger`` is the
    :class:`veil.ledger.Ledger` a DP run is charged to (default: the workspace's).
    """
    if mode == "ray":
        if importlib.util.find_spec("ray") is None:
            raise MissingDependencyError(
                "Flower's Ray simulation is not installed",
                expected="the ray package",
                got="no module named ray",
                fix='pip install "flwr[simulation]" (about 2 GB of memory at run time), or use '
                "--simulate, Veil's in-process runner",
            )
        from flwr.simulation import run_simulation  # noqa: PLC0415

        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=config.clients)
        raise InvalidInputError(
            "the Ray run finished but returns no result object",
            expected="--output PATH to receive the run's JSON",
            got=str(config.output),
        )
    if mode != "simulate":
        raise InvalidInputError("unknown mode", expected=" | ".join(MODES), got=repr(mode))
    task = load_task(config)
    if drop is None and config.dropout > 0:
        drop = dropout_rule(config.dropout, config.seed)
    grid = InProcessGrid(
        client_app=client_app,
        node_configs=[
            {"partition-id": i, "num-partitions": config.clients} for i in range(config.clients)
        ],
        run_config=config.to_run_config(),
        drop=drop,
    )
    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    flower_log.setLevel(logging.WARNING)  # SecAgg+ logs every stage of every node at DEBUG/INFO
    try:
        return run_federation(
            grid, config, task=task, progress=progress, on_round=on_round, ledger=ledger
        )
    finally:
        flower_log.setLevel(level)
