"""A federated run spends the budget of the data it trains on.

A run charged to a registered dataset is bound to its SHA-256: the server and
every client fingerprint the training data they loaded, and a run where any of
them holds other data is refused before round 1 with nothing charged. Real
workspaces (SQLite), real catalogue registrations, the real ClientApp.
"""

from __future__ import annotations

import shutil

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType

from veil.errors import InvalidInputError
from veil.federated import FederatedConfig, InProcessGrid, federate, run_federation
from veil.federated._apps import _query, _train, client_app
from veil.federated._charging import DATA_CHECK
from veil.federated._task import build_model, get_weights, load_task, training_data_sha256
from veil.ledger import Budget, LocalBudget

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

DP = {
    "dataset": "digits",
    "model": "logreg",
    "clients": 4,
    "rounds": 2,
    "lr": 0.2,
    "batch_size": 16,
    "dp": "central",
    "noise_multiplier": 1.0,
    "delta": 1e-4,
    "sample_rate": 0.8,
}


@pytest.fixture
def registered(workspace):
    """The digits' train split registered as 'digits' and the test split as 'digits-test',
    each with a budget in the workspace ledger."""
    from veil.data import Catalog
    from veil.ledger import Ledger

    catalog = Catalog.open()
    catalog.add("sklearn:digits", name="digits", split="train")
    catalog.add("sklearn:digits", name="digits-test", split="test")
    ledger = Ledger.open()
    for name in ("digits", "digits-test"):
        ledger.set_budget(name, Budget(epsilon=20.0, delta=1e-4), reason="test")
    return catalog, ledger


def test_a_run_charged_to_other_data_is_refused_before_any_round_and_nothing_is_charged(
    registered,
):
    _, ledger = registered
    rounds: list[dict] = []
    # The run trains on the digits' train split; 'digits-test' is other people.
    with pytest.raises(
        InvalidInputError, match="not 'digits-test', the dataset this run is charged"
    ):
        federate(
            FederatedConfig(**DP, ledger_dataset="digits-test"),
            guard=ledger,
            on_round=rounds.append,
        )
    assert rounds == []
    assert ledger.entries("digits-test") == []
    assert ledger.status("digits-test").spent.epsilon == 0


def test_a_run_needs_dataset_use_and_budget_spend_before_anything_loads(registered, monkeypatch):
    from veil.access import Access, Principal
    from veil.errors import PermissionDeniedError
    from veil.federated import _run
    from veil.ledger import Ledger

    _, owner = registered
    Access.open(store=owner.store).grant("bob", "auditor", "digits", reason="reads, no spending")
    bob = Ledger(owner.store, access=Access(owner.store, Principal("bob")))
    loads: list[object] = []
    monkeypatch.setattr(_run, "load_task", lambda *a, **k: loads.append(a))
    with pytest.raises(PermissionDeniedError, match=r"budget\.spend"):
        federate(FederatedConfig(**DP, ledger_dataset="digits"), guard=bob)
    assert loads == []  # refused before any data loads
    assert owner.entries("digits") == []
    (entry,) = owner.access.trail.entries(actor="bob")
    assert (entry.action, str(entry.outcome), entry.details["missing"]) == (
        "federated.run",
        "refused",
        "budget.spend",
    )
    nobody = Ledger(owner.store, access=Access(owner.store, Principal("carol")))
    with pytest.raises(PermissionDeniedError, match=r"dataset\.use"):
        federate(FederatedConfig(**DP, ledger_dataset="digits"), guard=nobody)
    assert loads == [] and owner.entries("digits") == []


@pytest.mark.slow
def test_a_run_on_its_ledger_dataset_charges_once_and_says_which_data(registered):
    catalog, ledger = registered
    result = federate(FederatedConfig(**DP, ledger_dataset="digits"), guard=ledger)
    registered_sha = catalog.get("digits").content_sha256
    assert len(ledger.entries("digits")) == 1
    assert result.privacy["charged"] and result.privacy["ledger"]["dataset"] == "digits"
    assert result.config.data_sha256 == registered_sha
    assert result.data["sha256"] == registered_sha
    assert list(result.data["nodes"].values()) == [registered_sha] * DP["clients"]
    assert ledger.entries("digits-test") == []
    # The clients' read of the rows and the charge are both on the trail, in that order.
    trail = [e for e in ledger.access.trail.entries(dataset="digits") if e.seq > 0]
    actions = [e.action for e in trail if e.action in ("dataset.read", "privacy.charge")]
    assert actions[-2:] == ["dataset.read", "privacy.charge"]
    read = next(e for e in reversed(trail) if e.action == "dataset.read")
    assert read.details["by"] == "federated clients"
    assert read.links["content_sha256"] == registered_sha


def test_a_data_sha256_other_than_the_registrations_is_refused(registered):
    catalog, ledger = registered
    other = catalog.get("digits-test").content_sha256
    config = FederatedConfig(**DP, ledger_dataset="digits", data_sha256=other)
    with pytest.raises(InvalidInputError, match="is not the SHA-256 of 'digits'"):
        federate(config, guard=ledger)
    assert ledger.entries("digits") == []


def test_a_dp_run_charged_to_a_dataset_needs_a_guard(registered):
    _, ledger = registered
    with pytest.raises(InvalidInputError, match="needs a budget guard"):
        federate(FederatedConfig(**DP, ledger_dataset="digits"))
    assert ledger.entries("digits") == []  # nothing opened the workspace's ledger instead


# ------------------------------------------------------------------ per-node data (deployment)
@pytest.fixture
def other_mnist(shared_data, tmp_path):
    """Real MNIST files that are not the registered training split: the test split, renamed."""
    other = tmp_path / "other-mnist"
    other.mkdir()
    source = shared_data / "mnist"
    for stem in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
        shutil.copy(source / f"t10k-{stem}", other / f"train-{stem}")
        shutil.copy(source / f"t10k-{stem}", other / f"t10k-{stem}")
    return other


def _mnist_config(shared_data, **changes):
    settings = {
        "dataset": "mnist",
        "data": str(shared_data / "mnist"),
        "limit": 200,
        "model": "logreg",
        "clients": 2,
        "rounds": 1,
        "dp": "central",
        "noise_multiplier": 1.0,
        "delta": 1e-3,
        "ledger_dataset": "mnist-local",
        **changes,
    }
    config = FederatedConfig(**settings)
    return config.replace(data_sha256=training_data_sha256(config))


@pytest.mark.slow
def test_a_node_holding_other_data_is_refused_before_the_charge(shared_data, other_mnist):
    """Each node reads its own data (node config 'data', as under flower-supernode --node-config)."""
    config = _mnist_config(shared_data)
    budget = LocalBudget(Budget(epsilon=50.0, delta=1e-3), dataset="mnist-local")
    grid = InProcessGrid(
        client_app=client_app,
        node_configs=[
            {"partition-id": 0, "num-partitions": 2, "data": str(shared_data / "mnist")},
            {"partition-id": 1, "num-partitions": 2, "data": str(other_mnist)},
        ],
        run_config=config.to_run_config(),
    )
    with pytest.raises(InvalidInputError, match=r"node 1001: .*partition 1") as refused:
        run_federation(grid, config, guard=budget)
    assert "node 1000" not in str(refused.value)  # the honest node's data matched
    assert budget.history == []
    assert budget.status("mnist-local").spent.epsilon == 0


def _context(data, config):
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 1, "num-partitions": 2, "data": str(data)},
        state=RecordDict(),
        run_config=config.to_run_config(),
    )


@pytest.mark.slow
def test_the_client_answers_its_fingerprint_and_refuses_to_train_on_other_data(
    shared_data, other_mnist
):
    config = _mnist_config(shared_data)
    ask = RecordDict({"config": ConfigRecord({"ask": DATA_CHECK})})
    honest = _query(Message(ask, 7, MessageType.QUERY), _context(shared_data / "mnist", config))
    answer = honest.content.config_records["data"]
    assert answer["sha256"] == config.data_sha256 and answer["error"] == ""
    swapped = _query(Message(ask, 7, MessageType.QUERY), _context(other_mnist, config))
    answer = swapped.content.config_records["data"]
    assert answer["sha256"] != config.data_sha256
    assert "is not 'mnist-local'" in str(answer["error"])

    task = load_task(config)
    weights = get_weights(build_model("logreg", task.input_shape, task.classes))
    train = RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({"round": 1})})
    with pytest.raises(InvalidInputError, match="is not 'mnist-local'"):
        _train(Message(train, 7, MessageType.TRAIN), _context(other_mnist, config))
    reply = _train(Message(train, 7, MessageType.TRAIN), _context(shared_data / "mnist", config))
    assert "update" in reply.content.array_records


def test_a_bad_data_sha256_or_a_check_without_one_is_refused_up_front():
    with pytest.raises(InvalidInputError, match="data-sha256"):
        FederatedConfig(dataset="digits", data_sha256="not-a-digest")
    with pytest.raises(InvalidInputError, match="data-check"):
        FederatedConfig(dataset="digits", data_check=True)
