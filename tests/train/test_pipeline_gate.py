"""A model and its DP test accuracy are one release through the budget gate.

``fit_private`` previews both charges before the slow part and records them in
one transaction: a test set that cannot pay refuses the whole run, and neither
budget changes, even when another release spends the test budget between the
preview and the charge (the case two transactions got wrong: the model was
charged, the accuracy refused).
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from veil.data import Catalog
from veil.errors import BudgetExceededError
from veil.ledger import Budget, BudgetGuard, Ledger, LocalBudget, Mechanism, PrivacyEvent
from veil.progress import ProgressEvent
from veil.store import Store
from veil.train import DPConfig, ModelRegistry, fit_private

CONFIG = DPConfig(epochs=2, batch_size=100, epsilon=2.0, delta=1e-4, learning_rate=2.0)
TEST_EPSILON = 0.1
# What another analyst's count costs: Laplace, scale 10, sensitivity 1.
OTHER_EPSILON = 0.1


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of uint8 (MNIST's format): magic, one uint32 per dimension, data."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(directory: Path, seed: int, *, train: int, test: int) -> Path:
    """A tiny MNIST-format folder (random 28x28 images): two splits, two registrations."""
    rng = np.random.default_rng(seed)
    directory.mkdir()
    for prefix, n in (("train", train), ("t10k", test)):
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return directory


@pytest.fixture
def store(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'veil.db'}", upgrade=True)
    yield store
    store.dispose()


@pytest.fixture
def digits(store):
    catalog = Catalog(store)
    catalog.add("sklearn:digits", name="digits", split="train")
    catalog.add("sklearn:digits", name="digits-test", split="test")
    ledger = Ledger(store)
    ledger.set_budget("digits", Budget(epsilon=5.0, delta=1e-4))
    ledger.set_budget("digits-test", Budget(epsilon=0.5, delta=0.0))
    return catalog, ledger


def test_fit_private_takes_the_gate_not_a_ledger_default():
    parameters = inspect.signature(fit_private).parameters
    assert "ledger" not in parameters
    guard = parameters["guard"]
    assert guard.default is inspect.Parameter.empty  # required: no silent Ledger.open()
    assert guard.annotation in (BudgetGuard, "BudgetGuard")


@pytest.mark.slow
def test_a_run_records_the_model_and_its_test_accuracy_together(digits, tmp_path):
    catalog, ledger = digits
    trained = fit_private(
        catalog,
        ledger,
        ModelRegistry(tmp_path / "models"),
        "digits",
        CONFIG,
        name="digits-dp",
        model="logreg",
        test="digits-test",
        test_epsilon=TEST_EPSILON,
        purpose="a model and its accuracy",
    )
    (model_entry,) = ledger.entries("digits")
    (accuracy_entry,) = ledger.entries("digits-test")
    assert model_entry.operation == "training"
    assert accuracy_entry.operation == "query"
    assert "test accuracy of model 'digits-dp'" in accuracy_entry.what
    assert model_entry.purpose == accuracy_entry.purpose == "a model and its accuracy"
    # The card carries both receipts.
    assert trained.card.ledger_event_id == model_entry.id
    assert trained.card.ledger_seq == model_entry.seq == 1
    assert trained.card.test_ledger_event_id == accuracy_entry.id
    assert accuracy_entry.epsilon == pytest.approx(TEST_EPSILON, abs=1e-3)  # PLD discretisation
    assert trained.card.test_accuracy is not None


def _images(store, tmp_path, seed, *, test_budget: float):
    catalog = Catalog(store)
    folder = _write_mnist(tmp_path / "images", seed, train=200, test=60)
    catalog.add(folder, name="images", format="mnist", split="train")
    catalog.add(folder, name="images-test", format="mnist", split="test")
    ledger = Ledger(store)
    ledger.set_budget("images", Budget(epsilon=5.0, delta=1e-4))
    ledger.set_budget("images-test", Budget(epsilon=test_budget, delta=0.0))
    return catalog, ledger


def _another_analyst(store: Store) -> tuple[list[int], Callable[[ProgressEvent], None]]:
    """A progress callback: while the images are scattered, another process spends the test set.

    It runs after ``fit_private``'s preview and before its charge, through its
    own :class:`Ledger` (its own cache, as another process would have).
    """
    spent: list[int] = []

    def callback(event: ProgressEvent) -> None:
        if event.task == "scattering features" and not spent:
            count = PrivacyEvent(
                "a count by another analyst", (Mechanism.laplace(scale=10.0, sensitivity=1.0),)
            )
            receipt = Ledger(store).charge("images-test", count, purpose="another analysis")
            spent.append(receipt.event_id)

    return spent, callback


@pytest.mark.slow
@pytest.mark.parametrize("private", [True, False], ids=["private", "non-private"])
def test_a_test_set_that_cannot_pay_refuses_the_whole_run(store, tmp_path, seed, private):
    # Each alone fits (the preview passes): the model on its budget, the accuracy's 0.1 on the
    # test set's 0.15. Between the preview and the charge another analyst spends 0.1 of the test
    # set, so the accuracy no longer fits: the run is refused, and the model is not charged.
    catalog, ledger = _images(store, tmp_path, seed, test_budget=0.15)
    registry = ModelRegistry(tmp_path / "models")
    spent, callback = _another_analyst(store)
    config = (
        DPConfig(epochs=1, batch_size=50, epsilon=2.0, delta=1e-4)
        if private
        else DPConfig(epochs=1, batch_size=50, private=False, sampling="shuffle")
    )
    with pytest.raises(BudgetExceededError, match="images-test"):
        fit_private(
            catalog,
            ledger,
            registry,
            "images",
            config,
            name="refused",
            model="scatternet",
            test="images-test",
            test_epsilon=TEST_EPSILON,
            progress=callback,
        )
    assert len(spent) == 1  # the other release happened after the preview
    (other,) = ledger.entries("images-test")  # only the other analyst's count
    assert other.id == spent[0] and other.what == "a count by another analyst"
    assert ledger.status("images-test").spent.epsilon == pytest.approx(OTHER_EPSILON, abs=1e-3)
    if private:
        # One transaction: the model's charge went with the refused accuracy.
        assert ledger.entries("images") == []
        assert ledger.status("images").spent.epsilon == 0.0
    else:
        # The documented order of a baseline: its record first, then the accuracy's charge. The
        # refused charge leaves only the record, which spends nothing.
        (record,) = ledger.entries("images")
        assert record.operation == "non_private"
        assert "NOT PRIVATE baseline model 'refused'" in record.what
        assert ledger.status("images").spent.epsilon == 0.0
    assert registry.list() == []


@pytest.mark.slow
@pytest.mark.parametrize("private", [True, False], ids=["private", "non-private"])
def test_a_test_set_already_short_is_refused_before_scattering(store, tmp_path, seed, private):
    # The preview refuses the charges before the slow part: nothing is scattered, and a
    # baseline is not even recorded (its accuracy is previewed before the record).
    catalog, ledger = _images(store, tmp_path, seed, test_budget=0.05)
    events: list[ProgressEvent] = []
    with pytest.raises(BudgetExceededError, match="images-test"):
        fit_private(
            catalog,
            ledger,
            ModelRegistry(tmp_path / "models"),
            "images",
            DPConfig(epochs=1, batch_size=50, epsilon=2.0, delta=1e-4)
            if private
            else DPConfig(epochs=1, batch_size=50, private=False, sampling="shuffle"),
            name="early",
            model="scatternet",
            test="images-test",
            test_epsilon=TEST_EPSILON,
            progress=events.append,
        )
    assert events == []
    assert ledger.entries("images") == ledger.entries("images-test") == []


@pytest.mark.slow
def test_a_local_budget_is_a_gate_too(digits, tmp_path):
    # The pipeline reads registered data (a catalog), but any BudgetGuard pays for it: here an
    # in-memory LocalBudget with one account per dataset, refused and charged like the ledger.
    catalog, ledger = digits
    guard = LocalBudget(
        {
            "digits": Budget(epsilon=5.0, delta=1e-4),
            "digits-test": Budget(epsilon=0.15, delta=0.0),
        },
        units=1198,
    )
    registry = ModelRegistry(tmp_path / "models")
    trained = fit_private(
        catalog,
        guard,
        registry,
        "digits",
        CONFIG,
        name="local",
        model="logreg",
        test="digits-test",
        test_epsilon=TEST_EPSILON,
    )
    assert [h["dataset"] for h in guard.history] == ["digits", "digits-test"]
    assert trained.card.ledger_seq == 1 and trained.card.test_ledger_event_id == 1
    assert guard.status("digits").spent.epsilon == pytest.approx(trained.card.epsilon)
    # A second model's accuracy no longer fits the test account: refused whole, nothing charged.
    before = list(guard.history)
    with pytest.raises(BudgetExceededError, match="digits-test"):
        fit_private(
            catalog,
            guard,
            registry,
            "digits",
            CONFIG,
            name="local-2",
            model="logreg",
            test="digits-test",
            test_epsilon=TEST_EPSILON,
        )
    assert guard.history == before
    assert ledger.entries("digits") == []  # the workspace ledger was never asked
