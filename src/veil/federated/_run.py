"""``federate``: one entry point for the three modes of a federated run.

* ``simulate`` (default): Veil's :class:`InProcessGrid`, no Ray, one process.
* ``ray``: Flower's own simulation engine (the optional ``flwr[simulation]``).
* ``deploy``: a real SuperLink and SuperNodes (:mod:`veil.federated.deploy`),
  submitted by :func:`federate_deployed`.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Message

from veil.errors import InvalidInputError, MissingDependencyError
from veil.federated._apps import client_app, server_app
from veil.federated._config import FederatedConfig
from veil.federated._runner import InProcessGrid
from veil.federated._server import (
    FederatedResult,
    _charge,
    _check_budget,
    bind_to_ledger,
    plan_privacy,
    run_federation,
)
from veil.federated._task import load_task
from veil.progress import ProgressCallback

if TYPE_CHECKING:
    from veil.ledger import BudgetGuard

__all__ = ["MODES", "dropout_rule", "federate", "federate_deployed"]

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
    guard: BudgetGuard | None = None,
) -> FederatedResult:
    """Run ``config`` and return its :class:`FederatedResult`.

    ``drop`` overrides the disconnect rule (default: ``config.dropout``). ``guard`` is the
    budget gate a DP run with ``ledger_dataset`` is charged to: required for such a run
    (nothing opens the workspace's ledger behind the caller's back). With a workspace
    :class:`~veil.ledger.Ledger` the run is bound to the registration of
    ``ledger_dataset``: a run whose server or clients load other data is refused before
    round 1, with nothing charged.
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
    config = bind_to_ledger(config, guard)  # the clients check their data against it too
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
            grid, config, task=task, progress=progress, on_round=on_round, guard=guard
        )
    finally:
        flower_log.setLevel(level)


# A relative tolerance on the cap the ServerApp re-checks: it recomputes the charged plan.
_CAP_SLACK = 1e-9


def federate_deployed(
    config: FederatedConfig,
    superlink: str,
    credentials: Any,
    *,
    guard: BudgetGuard | None = None,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Submit ``config`` to a running SuperLink as Veil's published app; return the run's JSON.

    ``credentials`` is a :class:`~veil.federated.DeployCredentials` (its ``ca.pem``).
    The ServerApp runs in the coordinator's Flower process, without the workspace, so
    a DP run with ``ledger_dataset`` is charged here, by the submitter, through
    ``guard``, and only after every SuperNode proved which data it holds:

    1. the plan is previewed against the budget (refused early, nothing submitted);
    2. a ``data_check`` run asks every SuperNode for the SHA-256 of its training data;
       one that holds other data fails that run, and nothing is charged;
    3. the run is charged, then submitted with ``max_epsilon`` at the charged epsilon
       (the ServerApp re-plans and re-checks it); the server and every client check
       their data again before round 1 and each client before it trains.

    A node that swaps its data between steps 2 and 3 is refused at step 3, after the
    charge: that charge is spent (docs/federated.md, "Which data a run spends").
    """
    from veil.federated.deploy import (  # noqa: PLC0415 - deployment only
        submit_run,
        veil_run_overrides,
        write_published_app,
    )

    if config.data:  # the ServerApp and the SuperNodes run in other directories
        config = config.replace(data=str(Path(config.data).resolve()))
    config = bind_to_ledger(config, guard)
    _, summary, event = plan_privacy(config)

    def submit(run: FederatedConfig) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="veil-fab-") as tmp:
            result_path = Path(tmp) / "result.json"
            run_config = {**run.to_run_config(), "output": str(result_path)}
            # Veil's published app, the one data holders approve; the run's settings travel
            # as an override, so its bundle (and hash) is the same for every run.
            app_dir = write_published_app(Path(tmp) / "app")
            done = submit_run(
                app_dir, superlink, credentials, veil_run_overrides(run_config), timeout=timeout
            )
            return dict(done.result or {})

    if summary is not None and event is not None:
        _check_budget(config, summary, event, guard)
    if summary is None or event is None or config.ledger_dataset is None:
        return submit(config)
    checked = submit(config.replace(data_check=True))
    _charge(config, summary, event, guard)
    payload = submit(
        config.replace(
            ledger_dataset=None, max_epsilon=float(summary["epsilon"]) * (1 + _CAP_SLACK)
        )
    )
    payload["privacy"] = {**(payload.get("privacy") or {}), **summary}
    payload["data"] = {**(payload.get("data") or {}), "checked_before_charge": checked.get("data")}
    payload.setdefault("config", {})["ledger_dataset"] = config.ledger_dataset
    return payload
