"""The server side of a federated run: Veil's round loop over any Flower ``Grid``.

Each round the server

1. samples clients: Poisson sampling with rate ``sample_rate`` from the
   AES-CTR stream under central DP (the amplification the accounting assumes
   needs sampling nobody can predict), a seeded choice of exactly
   ``round(sample_rate * clients)`` otherwise;
2. sends them the global model and collects their updates, either as plain
   Message-API messages or, with ``secagg``, through Flower's
   ``SecAggPlusWorkflow`` (the server then sees only the weighted mean);
3. rejects and logs updates that are malformed (wrong number or shape of
   arrays, NaN or inf) before they can touch the model;
4. aggregates: weighted mean (FedAvg/FedProx), a robust rule (Krum,
   Multi-Krum, Bulyan, coordinate median, trimmed mean), optional norm
   bounding first, then central DP noise (DP-FedAvg);
5. applies the result (FedAdam: the server's Adam step on the pseudo-gradient)
   and evaluates on the server's test set.

Under central or local DP the run is planned, bound to its data and charged
before round 1 (:mod:`veil.federated._charging`); rounds under secure
aggregation run through :mod:`veil.federated._secagg`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import MessageType
from flwr.serverapp import Grid

from veil.federated import _aggregate as rules
from veil.federated._charging import (
    bind_to_ledger,
    charge,
    check_budget,
    check_client_data,
    plan_privacy,
)
from veil.federated._config import FederatedConfig
from veil.federated._dpfedavg import DPFedAvgAggregator
from veil.federated._noise import GaussianNoise
from veil.federated._runner import InProcessGrid, message_bytes
from veil.federated._secagg import secagg_round
from veil.federated._task import (
    Task,
    backdoor_success,
    build_model,
    check_training_data,
    evaluate,
    flatten,
    get_weights,
    load_task,
    set_weights,
    unflatten,
)
from veil.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from veil.ledger import BudgetGuard

__all__ = ["FederatedResult", "run_federation"]

log = logging.getLogger("veil.federated")


@dataclass(frozen=True)
class FederatedResult:
    """What a run produced: per-round metrics, the final model's scores and its privacy.

    Frozen: the round loop fills ``history`` and ``rejected`` as it goes, and the finished
    result is what it returns.
    """

    config: FederatedConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    privacy: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    weights: list[np.ndarray] = field(default_factory=list, repr=False)
    seconds: float = 0.0

    @property
    def rounds_completed(self) -> int:
        return sum(1 for h in self.history if h.get("aggregated"))

    @property
    def accuracy(self) -> float:
        return float(self.history[-1]["accuracy"]) if self.history else math.nan

    def rounds_to(self, accuracy: float) -> int | None:
        """The first round whose global model reaches ``accuracy``, if any."""
        for row in self.history:
            if row["accuracy"] >= accuracy:
                return int(row["round"])
        return None

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FederatedResult:
        """A result from its :meth:`to_dict` (a deployed run's JSON); it has no weights."""
        return cls(
            config=FederatedConfig.from_mapping(payload["config"], source="run result"),
            history=list(payload.get("history") or []),
            rejected=list(payload.get("rejected") or []),
            privacy=payload.get("privacy"),
            data=payload.get("data"),
            seconds=float(payload.get("seconds") or 0.0),
        )

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (the weights are left out)."""
        return {
            "config": self.config.to_dict(),
            "rounds_completed": self.rounds_completed,
            "accuracy": self.accuracy,
            "loss": self.history[-1]["loss"] if self.history else None,
            "backdoor_success": self.history[-1].get("backdoor_success") if self.history else None,
            "privacy": self.privacy,
            "data": self.data,
            "rejected": self.rejected,
            "history": self.history,
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------- the loop
@dataclass
class _Adam:
    beta1: float
    beta2: float
    tau: float
    m: np.ndarray | None = None
    v: np.ndarray | None = None

    def step(self, delta: np.ndarray) -> np.ndarray:
        if self.m is None or self.v is None:
            self.m, self.v = np.zeros_like(delta), np.zeros_like(delta)
        self.m = self.beta1 * self.m + (1 - self.beta1) * delta
        self.v = self.beta2 * self.v + (1 - self.beta2) * delta**2
        return self.m / (np.sqrt(self.v) + self.tau)


def _aggregate(
    config: FederatedConfig, updates: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    info: dict[str, Any] = {}
    if config.norm_bound is not None and config.dp != "central":
        updates, clipped = rules.norm_bound(updates, config.norm_bound)
        info["norm_bounded"] = clipped
    f = config.byzantine
    match config.strategy:
        case "krum":
            return rules.krum(updates, weights, f), info
        case "multikrum":
            return rules.multikrum(updates, weights, f), info
        case "bulyan":
            return rules.bulyan(updates, weights, f), info
        case "median":
            return rules.coordinate_median(updates), info
        case "trimmed-mean":
            return rules.trimmed_mean(updates, config.trim), info
        case _:
            return rules.weighted_mean(updates, weights), info


def _sample(
    config: FederatedConfig, nodes: list[int], server_round: int, noise: GaussianNoise | None
) -> list[int]:
    if noise is not None:  # Poisson sampling, secret
        coins = noise.random.bernoulli(len(nodes), config.sample_rate)
        return [n for n, c in zip(nodes, coins.tolist(), strict=True) if c]
    count = max(1, round(config.sample_rate * len(nodes)))
    if count >= len(nodes):
        return list(nodes)
    rng = np.random.default_rng([config.seed, server_round])  # who trains, not privacy noise
    return sorted(int(n) for n in rng.choice(nodes, size=count, replace=False))


def _max_weight(config: FederatedConfig, task: Task) -> int:
    return 1 if config.dp == "central" else max(len(p) for p in task.parts)


def run_federation(  # noqa: C901, PLR0912, PLR0915 - the round loop, in order
    grid: Grid,
    config: FederatedConfig,
    *,
    task: Task | None = None,
    progress: ProgressCallback | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    guard: BudgetGuard | None = None,
) -> FederatedResult:
    """Run ``config.rounds`` rounds over the nodes of ``grid`` (in-process, Ray or a SuperLink).

    ``guard`` is the budget a DP run with ``ledger_dataset`` is charged to (required
    then; nothing opens a ledger behind the caller's back). In order: the plan is
    previewed against the budget, the server's data and every client's are checked
    against ``data_sha256`` (bound from the registration by a workspace ledger),
    the run is charged, and only then does round 1 start. ``data_check`` stops
    after the data check: nothing is trained or charged.
    """
    started_run = time.perf_counter()
    config = bind_to_ledger(config, guard)
    plan, summary, event = (None, None, None) if config.data_check else plan_privacy(config)
    if summary is not None and event is not None:
        check_budget(config, summary, event, guard)
    task = task or load_task(config)
    check_training_data(config, task.data_sha256, where="by the server")
    data: dict[str, Any] = {
        "sha256": task.data_sha256,
        "dataset": config.ledger_dataset,
        "nodes": {},
    }
    if config.data_sha256 is not None:
        data = check_client_data(grid, config)
    if config.data_check:
        return FederatedResult(config=config, data=data, seconds=time.perf_counter() - started_run)
    if summary is not None and event is not None:
        charge(config, summary, event, guard)
    torch.manual_seed(config.seed)
    model = build_model(config.model, task.input_shape, task.classes, config.hidden)
    weights = get_weights(model)
    expected_shapes = [w.shape for w in weights]
    result = FederatedResult(config=config, privacy=summary, data=data)
    noise = (
        GaussianNoise(None if config.secure_rng else config.seed)
        if config.dp == "central"
        else None
    )
    aggregator = (
        DPFedAvgAggregator.from_plan(
            plan,
            clip=config.clip,
            noise=noise,
            target_quantile=config.target_quantile,
            clip_learning_rate=config.clip_lr,
        )
        if plan is not None
        else None
    )
    adam = (
        _Adam(config.adam_beta1, config.adam_beta2, config.adam_tau)
        if config.strategy == "fedadam"
        else None
    )
    nodes = sorted(grid.get_node_ids())
    if len(nodes) < config.clients:
        log.warning("%d of %d clients are connected", len(nodes), config.clients)
    max_weight = _max_weight(config, task)
    for server_round in range(1, config.rounds + 1):
        started = time.perf_counter()
        traffic = grid.traffic if isinstance(grid, InProcessGrid) else None
        if traffic is not None:
            traffic.reset()
        live = sorted(grid.get_node_ids())
        chosen = _sample(config, live, server_round, noise)
        round_config: dict[str, Any] = {"round": server_round}
        if aggregator is not None:
            round_config["clip"] = float(aggregator.clip)
        row: dict[str, Any] = {"round": server_round, "sampled": len(chosen), "rejected": 0}
        sent = received = 0
        update_vector: np.ndarray | None = None
        client_metrics: list[dict[str, Any]] = []
        if config.secagg and len(chosen) >= max(3, config.threshold):
            mean, client_metrics, total_weight = secagg_round(
                grid, config, chosen, weights, round_config, server_round, max_weight
            )
            answered = len(client_metrics)
            if mean is not None:
                mean_flat = flatten(mean)
                if not np.all(np.isfinite(mean_flat)):
                    log.error(
                        "round %d: the secure aggregate is not finite; round skipped", server_round
                    )
                elif aggregator is not None:
                    update_vector = aggregator.aggregate(mean_flat * total_weight)
                else:
                    update_vector = mean_flat
            else:
                log.warning(
                    "round %d: secure aggregation halted (fewer than %d clients answered); "
                    "the global model is unchanged",
                    server_round,
                    config.threshold,
                )
        elif chosen and not config.secagg:
            content = RecordDict(
                {"arrays": ArrayRecord(weights), "config": ConfigRecord(round_config)}
            )
            messages = [
                Message(content, n, MessageType.TRAIN, group_id=str(server_round)) for n in chosen
            ]
            sent = message_bytes(content) * len(messages)
            replies = list(grid.send_and_receive(messages))
            updates, client_weights = [], []
            for reply in replies:
                node = reply.metadata.src_node_id
                if reply.has_error():
                    result.rejected.append(
                        {
                            "round": server_round,
                            "node": node,
                            "reason": f"client error: {reply.error.reason}",
                        }
                    )
                    continue
                received += message_bytes(reply.content)
                reason = None
                if "update" not in reply.content.array_records:
                    reason = "no update in the reply"
                else:
                    arrays = reply.content.array_records["update"].to_numpy_ndarrays()
                    if len(arrays) != len(expected_shapes):
                        reason = f"{len(arrays)} arrays, expected {len(expected_shapes)}"
                    else:
                        for index, (array, shape) in enumerate(
                            zip(arrays, expected_shapes, strict=True)
                        ):
                            problem = rules.validate_update(array, shape)
                            if problem is not None:
                                reason = f"array {index}: {problem}"
                                break
                if reason is not None:
                    log.warning(
                        "round %d: update from node %d rejected: %s", server_round, node, reason
                    )
                    result.rejected.append({"round": server_round, "node": node, "reason": reason})
                    continue
                metrics = dict(reply.content.metric_records["metrics"])
                client_metrics.append(metrics)
                updates.append(flatten(arrays))
                client_weights.append(float(metrics.get("weight", 1.0)))  # type: ignore[arg-type]
            answered = len(updates)
            if updates:
                if aggregator is not None:
                    if config.norm_bound is not None:
                        updates = list(rules.norm_bound(np.stack(updates), config.norm_bound)[0])
                    # The clients clip, so only their own bits say whether a norm was above it.
                    bits = [m.get("unclipped") for m in client_metrics]
                    known = None if any(b is None for b in bits) else [float(b) for b in bits]  # type: ignore[arg-type]
                    update_vector, stats = aggregator.aggregate_updates(updates, unclipped=known)
                    row["clip"] = stats.get("clip")
                else:
                    update_vector, info = _aggregate(
                        config, np.stack(updates), np.asarray(client_weights)
                    )
                    row.update(info)
        else:
            answered = 0
            if config.secagg:
                log.warning(
                    "round %d: %d clients sampled, below the threshold %d; skipped",
                    server_round,
                    len(chosen),
                    config.threshold,
                )
        row["rejected"] = sum(1 for r in result.rejected if r["round"] == server_round)
        if update_vector is not None:
            flat = flatten(weights)
            step = adam.step(update_vector) if adam is not None else update_vector
            weights = unflatten(flat + config.server_lr * step, weights)
        aggregate_done = time.perf_counter()
        set_weights(model, weights)
        loss, accuracy = evaluate(model, task.x_test, task.y_test)
        train_seconds = sum(float(m.get("train-seconds", 0.0)) for m in client_metrics)
        row.update(
            {
                "aggregated": update_vector is not None,
                "participants": answered,
                "loss": loss,
                "accuracy": accuracy,
                "seconds": aggregate_done - started,
                "client_train_seconds": train_seconds,
                "overhead_seconds": max(0.0, aggregate_done - started - train_seconds),
                "bytes_sent": traffic.sent if traffic is not None else sent,
                "bytes_received": traffic.received if traffic is not None else received,
            }
        )
        if config.attack == "backdoor":
            row["backdoor_success"] = backdoor_success(
                model, task.x_test, task.y_test, config.backdoor_target
            )
        result.history.append(row)
        if on_round is not None:
            on_round(row)
        if progress is not None:
            progress(
                ProgressEvent(
                    "federated rounds",
                    server_round,
                    config.rounds,
                    "round",
                    f"accuracy {accuracy:.3f}",
                )
            )
    return dataclasses.replace(result, weights=weights, seconds=time.perf_counter() - started_run)
