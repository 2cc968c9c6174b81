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

Under central or local DP the run's privacy event is charged through the
``guard`` (a :class:`~veil.ledger.BudgetGuard`) to ``ledger_dataset`` *before*
round 1, as one event for the whole run, or checked against ``max_epsilon``; a
plan over budget never starts.

The charge is tied to the data. A run charged to a workspace
:class:`~veil.ledger.Ledger` is bound to the registration of
``ledger_dataset``: ``data_sha256`` is the SHA-256 the catalogue recorded.
Before the charge, the server fingerprints its own copy and asks every client
which data it loaded (a ``query`` message, :func:`check_client_data`); a run
where any of them holds other data is refused with nothing charged, and each
client also refuses to train on other data. What this does and does not
protect against: docs/federated.md, "Which data a run spends".
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
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType
from flwr.compat.common import recorddict_compat as compat
from flwr.compat.common.parameter import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common.typing import FitIns, FitRes, Parameters
from flwr.server import LegacyContext
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from veil.errors import BudgetExceededError, InvalidInputError
from veil.federated import _aggregate as rules
from veil.federated._config import FederatedConfig
from veil.federated._dpfedavg import DPFedAvgAggregator
from veil.federated._local_dp import LocalGaussianDP
from veil.federated._noise import GaussianNoise
from veil.federated._runner import InProcessGrid, message_bytes
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
from veil.federated._user_dp import UserDPPlan, calibrate_user_noise, plan_user_dp
from veil.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from veil.ledger import BudgetGuard

__all__ = [
    "DATA_CHECK",
    "FederatedResult",
    "bind_to_ledger",
    "check_client_data",
    "plan_privacy",
    "run_federation",
]

log = logging.getLogger("veil.federated")
_QUANTISATION = 2**22
DATA_CHECK = "data-sha256"  # the query a client answers with its training data's fingerprint


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


# ---------------------------------------------------------------- privacy up front
def plan_privacy(config: FederatedConfig) -> tuple[UserDPPlan | None, dict[str, Any] | None, Any]:
    """The run's accounting, before anything runs: (central plan, summary, privacy event)."""
    if config.dp == "none":
        summary = None
        if config.client_noise_multiplier is not None:
            summary = {"level": "record (DP-SGD at each client)", "charged": False}
        return None, summary, None
    delta = float(config.delta or 0)
    if config.dp == "central":
        z = config.noise_multiplier or calibrate_user_noise(
            float(config.target_epsilon or 0), delta, config.sample_rate, config.rounds
        )
        plan = plan_user_dp(
            population=config.clients,
            sampling_rate=config.sample_rate,
            rounds=config.rounds,
            noise_multiplier=z,
            delta=delta,
            adaptive=config.adaptive_clip,
        )
        summary = {"level": "user (DP-FedAvg, central)", **plan.to_dict(), "clip": config.clip}
        event = plan.privacy_event(
            f"federated {config.model} on {config.dataset}: {config.rounds} rounds",
            {"clients": config.clients, "strategy": config.strategy, "secagg": config.secagg},
        )
        return plan, summary, event
    local = LocalGaussianDP(clip=config.clip, noise_multiplier=float(config.noise_multiplier or 0))
    epsilon = local.epsilon(delta, rounds=config.rounds)
    summary = {
        "level": "user (local DP: each client noises its own update)",
        "epsilon": epsilon,
        "delta": delta,
        "noise_multiplier": config.noise_multiplier,
        "clip": config.clip,
        "rounds": config.rounds,
    }
    event = local.privacy_event(
        f"federated {config.model} on {config.dataset}: local DP, {config.rounds} rounds",
        {"clients": config.clients},
        rounds=config.rounds,
    )
    return None, summary, event


def bind_to_ledger(config: FederatedConfig, guard: BudgetGuard | None) -> FederatedConfig:
    """``config`` bound to the registered bytes of ``ledger_dataset`` (its ``data_sha256``).

    Only a workspace :class:`~veil.ledger.Ledger` knows registrations: its own
    catalogue (the same database) gives the dataset's ``content_sha256``. Any
    other guard (a :class:`~veil.ledger.LocalBudget`) names a budget, not
    data, and leaves ``data_sha256`` as the caller set it.

    Raises:
        NotFoundError: ``ledger_dataset`` is not registered in the ledger's workspace.
        InvalidInputError: ``data_sha256`` was set to another dataset's SHA-256.
    """
    if config.ledger_dataset is None or guard is None:
        return config
    from veil.ledger import Ledger  # noqa: PLC0415 - only runs with a guard touch the ledger

    if not isinstance(guard, Ledger):
        return config
    from veil.data import Catalog  # noqa: PLC0415

    info = Catalog(guard.store, guard.settings).get(config.ledger_dataset)
    if config.data_sha256 not in (None, info.content_sha256):
        raise InvalidInputError(
            f"data_sha256 is not the SHA-256 of '{info.name}', the dataset the run is charged to",
            expected=f"{info.content_sha256} (or unset: it is read from the registration)",
            got=str(config.data_sha256),
            fix="drop data_sha256, or charge the run to the dataset registered with it",
        )
    return config.replace(data_sha256=info.content_sha256)


def check_client_data(grid: Grid, config: FederatedConfig) -> dict[str, Any]:
    """Ask every node of ``grid`` which training data it loaded; refuse other data.

    Each client answers the ``query`` with the SHA-256 of its training data
    (:func:`~veil.federated._task.training_data_sha256`) and refuses, itself,
    data other than ``config.data_sha256``. The answer is the client's word:
    see docs/federated.md for what it proves.

    Raises:
        InvalidInputError: A node holds other data, failed to load it, or did
            not answer; the message lists every such node.
    """
    expected = config.data_sha256
    nodes = sorted(grid.get_node_ids())
    content = RecordDict({"config": ConfigRecord({"ask": DATA_CHECK})})
    messages = [Message(content, n, MessageType.QUERY, group_id=DATA_CHECK) for n in nodes]
    answers: dict[int, str] = {}
    problems: list[str] = []
    for reply in grid.send_and_receive(messages):
        node = int(reply.metadata.src_node_id)
        if reply.has_error():
            answers[node] = ""
            problems.append(f"node {node}: {reply.error.reason}")
            continue
        record = reply.content.config_records.get("data")
        digest = str(record.get("sha256", "")) if record is not None else ""
        error = str(record.get("error", "")) if record is not None else "no data record"
        answers[node] = digest
        if error:
            problems.append(f"node {node}: {error}")
        elif digest != expected:
            problems.append(f"node {node}: SHA-256 {digest[:16]}…")
    problems += [f"node {n}: no answer" for n in nodes if n not in answers]
    if problems or not nodes:
        raise InvalidInputError(
            "the run's clients do not all hold the data it is charged to"
            + (f" ('{config.ledger_dataset}')" if config.ledger_dataset else ""),
            expected=f"every client's training data with SHA-256 {str(expected)[:16]}…",
            got="; ".join(problems) or "no client connected",
            fix="point each node's data at the registered files (veil federate join --data); "
            "nothing was trained or charged",
        )
    return {"sha256": expected, "dataset": config.ledger_dataset, "nodes": answers}


def _check_budget(
    config: FederatedConfig, summary: dict[str, Any], event: Any, guard: BudgetGuard | None
) -> None:
    """Refuse, before anything loads, a plan the budget cannot pay (nothing is charged here)."""
    if config.ledger_dataset is not None:
        if guard is None:
            raise InvalidInputError(
                f"a DP run charged to '{config.ledger_dataset}' needs a budget guard",
                expected="guard=: the workspace Ledger (or a LocalBudget outside a workspace)",
                got="no guard",
                fix="pass guard=veil.ledger.Ledger.open() (veil federate passes the workspace's), "
                "or drop ledger_dataset and set max_epsilon for a run-local cap",
            )
        guard.preview(config.ledger_dataset, event)
        return
    max_epsilon = config.max_epsilon
    epsilon = float(summary["epsilon"])
    if max_epsilon is None:
        raise InvalidInputError(
            "a DP run needs a budget",
            expected="--ledger-dataset NAME (a registered dataset with a budget) or --max-epsilon",
            got="neither",
            fix="register the federated dataset and set its budget (veil budget set), then pass "
            "--ledger-dataset NAME",
        )
    if epsilon > max_epsilon:
        raise BudgetExceededError(
            "the planned rounds exceed the run's budget",
            expected=f"epsilon <= {max_epsilon}",
            got=f"epsilon {epsilon:.3f} for {config.rounds} rounds",
            fix="fewer rounds, a lower --sample-rate, or more noise",
        )


def _charge(
    config: FederatedConfig, summary: dict[str, Any], event: Any, guard: BudgetGuard | None
) -> None:
    if config.ledger_dataset is None or guard is None:
        summary["charged"] = False
        return
    receipt = guard.charge(
        config.ledger_dataset, event, purpose=f"federated training ({config.strategy})"
    )
    summary["ledger"] = receipt.to_dict()
    summary["charged"] = True


# ---------------------------------------------------------------- secure aggregation
class _SecAggRound(Strategy):
    """The legacy ``Strategy`` SecAgg+ asks for: it hands out this round's clients and keeps the sum."""

    def __init__(self, grid: Grid, nodes: list[int], config: dict[str, Any]) -> None:
        self.grid, self.nodes, self.config = grid, nodes, config
        self.mean: list[np.ndarray] | None = None
        self.metrics: list[dict[str, Any]] = []
        self.weight_total = 0

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: Any
    ) -> list[tuple[ClientProxy, FitIns]]:
        del server_round, client_manager
        return [
            (
                GridClientProxy(n, self.grid, self.grid.run.run_id),
                FitIns(parameters, dict(self.config)),
            )
            for n in self.nodes
        ]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Any]]:
        del server_round, failures
        if results:
            self.mean = parameters_to_ndarrays(
                results[0][1].parameters
            )  # every entry holds the sum
            self.metrics = [dict(res.metrics) for _, res in results]
            self.weight_total = sum(res.num_examples for _, res in results)
        return None, {}

    def initialize_parameters(self, client_manager: Any) -> None:
        del client_manager

    def configure_evaluate(self, *args: Any) -> list[Any]:
        del args
        return []

    def aggregate_evaluate(self, *args: Any) -> tuple[None, dict[str, Any]]:
        del args
        return None, {}

    def evaluate(self, *args: Any) -> None:
        del args


def _secagg_round(  # noqa: PLR0917 - one round's whole state
    grid: Grid,
    config: FederatedConfig,
    nodes: list[int],
    weights: list[np.ndarray],
    round_config: dict[str, Any],
    server_round: int,
    max_weight: int,
) -> tuple[list[np.ndarray] | None, list[dict[str, Any]], int]:
    strategy = _SecAggRound(grid, nodes, round_config)
    base = Context(
        run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
    )
    context = LegacyContext(base, strategy=strategy, client_manager=SimpleClientManager())
    context.state.config_records["config"] = ConfigRecord({"current_round": server_round})
    context.state.array_records["parameters"] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(weights), keep_input=True
    )
    shares = min(config.shares, len(nodes))
    if shares < len(nodes) and shares % 2 == 0:
        shares -= 1  # an odd degree for SecAgg+'s neighbour graph
    threshold = min(config.threshold, shares - 1)
    workflow = SecAggPlusWorkflow(
        num_shares=shares,
        reconstruction_threshold=threshold,
        max_weight=float(max_weight),
        clipping_range=float(config.update_bound or 1.0),
        quantization_range=_QUANTISATION,
    )
    workflow(grid, context)
    return strategy.mean, strategy.metrics, strategy.weight_total


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
        _check_budget(config, summary, event, guard)
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
        _charge(config, summary, event, guard)
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
            mean, client_metrics, total_weight = _secagg_round(
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
