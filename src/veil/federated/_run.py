"""``federate``: one entry point for the two modes of a federated run (:class:`Mode`).

* ``simulate`` (default): Veil's :class:`InProcessGrid`, no Ray, one process.
* ``deploy``: a running SuperLink and its SuperNodes (:mod:`veil.federated.deploy`),
  submitted as Veil's published app by :func:`federate_deployed`.

Flower's Ray simulation is refused before anything runs (see :class:`Mode`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Message

from veil.errors import DeploymentError, InvalidInputError
from veil.federated._apps import client_app
from veil.federated._charging import bind_to_ledger, charge, check_budget, plan_privacy
from veil.federated._config import FederatedConfig, Mode
from veil.federated._runner import InProcessGrid
from veil.federated._server import FederatedResult, run_federation
from veil.federated._task import load_task
from veil.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from veil.federated.deploy import DeployCredentials
    from veil.ledger import BudgetGuard

__all__ = ["MODES", "Mode", "dropout_rule", "federate", "federate_deployed"]

MODES = tuple(Mode)


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
    mode: Mode | str = Mode.SIMULATE,
    progress: ProgressCallback | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    drop: Callable[[Message], bool] | None = None,
    guard: BudgetGuard | None = None,
    superlink: str | None = None,
    credentials: DeployCredentials | Path | None = None,
    timeout: float = 3600.0,
) -> FederatedResult:
    """Run ``config`` and return its :class:`FederatedResult`.

    ``mode`` is a :class:`Mode` or its string. ``guard`` is the budget gate a DP run with
    ``ledger_dataset`` is charged to: required for such a run (nothing opens the
    workspace's ledger behind the caller's back). With a workspace
    :class:`~veil.ledger.Ledger` the run is bound to the registration of
    ``ledger_dataset``: a run whose server or clients load other data is refused before
    round 1, with nothing charged.

    ``simulate``: ``drop`` overrides the disconnect rule (default: ``config.dropout``);
    ``progress`` gets one event per round and ``on_round`` each round's record.

    ``deploy``: the run is submitted to the SuperLink whose Control API is ``superlink``
    (``HOST:PORT`` on the coordinator's loopback), trusting the CA of ``credentials``
    (:class:`~veil.federated.deploy.DeployCredentials`, its directory or ``ca.pem``), and
    charged by the submitter (:func:`federate_deployed`). The rounds run elsewhere:
    ``progress`` gets one event when the run ends, the result has no weights, and
    ``on_round`` and ``drop`` are refused.

    Raises:
        InvalidInputError: On an unknown mode or ``"ray"`` (before anything runs), or
            settings the mode cannot honour.
        DeploymentError: When a deployed run fails or its result cannot be read.
    """
    mode = Mode.parse(mode)
    if mode is Mode.DEPLOY:
        if superlink is None or on_round is not None or drop is not None:
            raise InvalidInputError(
                "a deployed run needs its SuperLink and takes no per-round hooks",
                expected="superlink='HOST:PORT' (the Control API), no on_round, no drop",
                got=f"superlink={superlink!r}, on_round={on_round is not None}, "
                f"drop={drop is not None}",
                fix="pass the address `veil federate serve` prints as the Control API; "
                "simulate a run to watch its rounds or to drop clients",
            )
        payload = federate_deployed(config, superlink, credentials, guard=guard, timeout=timeout)
        if "history" not in payload:
            raise DeploymentError(
                "the deployed run finished but its result was not found",
                expected="the ServerApp's result JSON on this machine",
                got=f"keys {sorted(payload)}",
                fix="submit on the coordinator's host (the Control API is on its loopback; "
                "the ServerApp writes the result there), or read the SuperLink's log",
            )
        result = FederatedResult.from_dict(payload)
        if progress is not None:
            rounds = result.config.rounds
            progress(ProgressEvent("federated rounds", rounds, rounds, "round", "deployed"))
        return result
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
    credentials: DeployCredentials | Path | None,
    *,
    guard: BudgetGuard | None = None,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Submit ``config`` to a running SuperLink as Veil's published app; return the run's JSON.

    ``credentials`` is a :class:`~veil.federated.deploy.DeployCredentials`, its
    directory or its ``ca.pem``. :func:`federate` with ``mode="deploy"`` returns the
    same run as a :class:`FederatedResult`.
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
        check_budget(config, summary, event, guard)
    if summary is None or event is None or config.ledger_dataset is None:
        return submit(config)
    checked = submit(config.replace(data_check=True))
    charge(config, summary, event, guard)
    payload = submit(
        config.replace(
            ledger_dataset=None, max_epsilon=float(summary["epsilon"]) * (1 + _CAP_SLACK)
        )
    )
    payload["privacy"] = {**(payload.get("privacy") or {}), **summary}
    payload["data"] = {**(payload.get("data") or {}), "checked_before_charge": checked.get("data")}
    payload.setdefault("config", {})["ledger_dataset"] = config.ledger_dataset
    return payload
