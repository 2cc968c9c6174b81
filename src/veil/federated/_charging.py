"""Privacy up front: a federated run's plan, its binding to the data, and its charge.

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

from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import MessageType
from flwr.serverapp import Grid

from veil.errors import BudgetExceededError, InvalidInputError
from veil.federated._config import FederatedConfig
from veil.federated._local_dp import LocalGaussianDP
from veil.federated._user_dp import UserDPPlan, calibrate_user_noise, plan_user_dp

if TYPE_CHECKING:
    from veil.ledger import BudgetGuard

__all__ = [
    "DATA_CHECK",
    "bind_to_ledger",
    "charge",
    "check_budget",
    "check_client_data",
    "plan_privacy",
]

DATA_CHECK = "data-sha256"  # the query a client answers with its training data's fingerprint


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

    Who may: the run reads the dataset's rows for a mechanism and spends its
    budget, so the acting principal of the ledger (``guard.access``) needs
    ``dataset.use`` and ``budget.spend`` on it (owners and analysts), checked
    here, before any data loads or any client is asked; a refusal is recorded
    on the trail.

    Raises:
        PermissionDeniedError: The acting principal lacks one of the two grants.
        NotFoundError: ``ledger_dataset`` is not registered in the ledger's workspace.
        InvalidInputError: ``data_sha256`` was set to another dataset's SHA-256,
            or the dataset is under consent management (the clients' own copies
            cannot be filtered by consent).
    """
    if config.ledger_dataset is None or guard is None:
        return config
    from veil.ledger import Ledger  # noqa: PLC0415 - only runs with a guard touch the ledger

    if not isinstance(guard, Ledger):
        return config
    from veil.access import Permission  # noqa: PLC0415
    from veil.data import Catalog, Consent  # noqa: PLC0415

    purpose = f"federated training ({config.strategy})"
    for permission in (Permission.DATASET_USE, Permission.BUDGET_SPEND):
        guard.access.require(
            permission, config.ledger_dataset, action="federated.run", purpose=purpose
        )
    catalog = Catalog(guard.store, guard.settings, access=guard.access)
    info = catalog.get(config.ledger_dataset)
    if config.data_sha256 not in (None, info.content_sha256):
        raise InvalidInputError(
            f"data_sha256 is not the SHA-256 of '{info.name}', the dataset the run is charged to",
            expected=f"{info.content_sha256} (or unset: it is read from the registration)",
            got=str(config.data_sha256),
            fix="drop data_sha256, or charge the run to the dataset registered with it",
        )
    if Consent(catalog).default(info.name) is not None:
        # The clients read their own copies, which no catalogue load filters.
        raise InvalidInputError(
            f"'{info.name}' is under consent management, and a federated run's clients read "
            "their own copies of the data, which Veil cannot filter by consent",
            expected="a dataset whose every person may be used, or a filtered copy at each site",
            got=f"a run charged to '{info.name}'",
            fix="have each site keep only the persons who consent to 'federated-learning', "
            "register that copy, and charge the run to it",
        )
    # The clients read the rows themselves (not through the catalogue): record the use here.
    guard.access.record(
        "dataset.read",
        dataset=info.name,
        purpose=purpose,
        links={"dataset_id": info.dataset_id, "content_sha256": info.content_sha256},
        details={"use": "mechanism", "by": "federated clients", "strategy": str(config.strategy)},
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


def check_budget(
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


def charge(
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
