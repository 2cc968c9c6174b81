"""fit_private on registered datasets: refusals before the charge, one ledger event, the saved card."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from veil.data import Catalog, load_mnist
from veil.errors import (
    BudgetExceededError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SchemaError,
)
from veil.ledger import Budget, Ledger
from veil.store import Store
from veil.train import DPConfig, ModelRegistry, dataset_tensors, fit_private


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def setup(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'veil.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    store = Store.open(url, upgrade=True)
    catalog = Catalog(store)
    catalog.add("sklearn:digits", name="digits", split="train")
    # Held out, and no budget here: a DP test accuracy on it is refused (a test sets one).
    catalog.add("sklearn:digits", name="digits-test", split="test")
    catalog.add(
        "sklearn:iris",
        name="iris",
        bounds={"sepal length (cm)": (0.0, 10.0), "sepal width (cm)": (0.0, 10.0)},
    )
    ledger = Ledger(store)
    ledger.set_budget("digits", Budget(epsilon=5.0, delta=1e-4))
    yield catalog, ledger, ModelRegistry(tmp_path / "models")
    store.dispose()


CONFIG = DPConfig(epochs=3, batch_size=100, epsilon=2.0, delta=1e-4, learning_rate=2.0)


@pytest.mark.slow
def test_train_charges_one_event_and_saves_the_card(setup):
    catalog, ledger, registry = setup
    trained = fit_private(
        catalog, ledger, registry, "digits", CONFIG, name="digits-dp", model="logreg"
    )
    entries = ledger.entries("digits")
    assert len(entries) == 1
    entry = entries[0].to_dict()
    assert entry["operation"] == "training"
    (mechanism,) = entry["mechanisms"]
    assert mechanism["name"] == "poisson_subsampled_gaussian"
    assert mechanism["parameters"]["sampling_rate"] == pytest.approx(100 / 1198)
    assert mechanism["parameters"]["steps"] == 3 * 12  # 1,198 training images, batches of 100
    card = trained.card
    assert card.ledger_event_id == entries[0].id
    assert card.epsilon == pytest.approx(entries[0].epsilon) and card.epsilon <= 2.0
    assert card.noise_multiplier == mechanism["parameters"]["noise_multiplier"]
    assert card.sampling == "poisson" and card.secure_rng and card.private
    saved = registry.load("digits-dp")
    assert saved.card == card
    inputs = dataset_tensors(catalog, "digits").inputs[:5]
    assert torch.equal(saved.model(inputs), trained.model(inputs))
    on_disk = json.loads((saved.path / "privacy_card.json").read_text())
    for key in (
        "epsilon",
        "delta",
        "accountant",
        "sampling",
        "max_grad_norm",
        "noise_multiplier",
        "steps",
        "dataset",
        "ledger_event_id",
    ):
        assert key in on_disk


@pytest.mark.slow
def test_over_budget_is_refused_before_training_and_saves_nothing(setup):
    catalog, ledger, registry = setup
    with pytest.raises(BudgetExceededError):
        fit_private(
            catalog,
            ledger,
            registry,
            "digits",
            DPConfig(epochs=1, batch_size=100, epsilon=6.0, delta=1e-4),
            name="greedy",
            model="logreg",
        )
    assert ledger.entries("digits") == []
    assert registry.list() == []
    with pytest.raises(BudgetExceededError):  # no budget at all: nothing may be released
        fit_private(
            catalog,
            ledger,
            registry,
            "iris",
            DPConfig(epochs=1, batch_size=10, epsilon=1.0, delta=1e-3),
            name="iris",
            model="logreg",
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "bad name!"}, InvalidInputError, "invalid model name"),
        ({"model": "cnn"}, InvalidInputError, "28x28"),
        ({"label": "pixel_0_0"}, SchemaError, "no declared categories"),
        ({"features": ["digit"]}, InvalidInputError, "cannot be a feature"),
        ({"test": "nowhere"}, NotFoundError, "no dataset named"),
        ({"test": "digits"}, InvalidInputError, "the test set is the training set"),
        ({"test": "digits-test"}, BudgetExceededError, "digits-test"),
        (
            {"config": DPConfig(epochs=500, batch_size=1000, epsilon=0.01, delta=1e-4)},
            InvalidInputError,
            "out of reach",
        ),
    ],
)
def test_refusals_charge_nothing(setup, kwargs, error, match):
    catalog, ledger, registry = setup
    options = {"name": "m", "model": "logreg", "config": CONFIG, **kwargs}
    config = options.pop("config")
    with pytest.raises(error, match=match):
        fit_private(catalog, ledger, registry, "digits", config, **options)
    assert ledger.entries("digits") == []
    assert registry.list() == []


@pytest.mark.slow
def test_a_taken_name_is_refused_before_the_charge(setup):
    catalog, ledger, registry = setup
    fit_private(catalog, ledger, registry, "digits", CONFIG, name="once", model="logreg")
    with pytest.raises(ConflictError, match="never overwritten"):
        fit_private(catalog, ledger, registry, "digits", CONFIG, name="once", model="logreg")
    assert len(ledger.entries("digits")) == 1


@pytest.mark.slow
def test_undeclared_columns_are_left_out_and_said(setup):
    catalog, _, _ = setup
    data = dataset_tensors(catalog, "iris")
    assert data.encoder.order == ("sepal length (cm)", "sepal width (cm)")
    assert "petal length (cm)" in data.notes[0]
    with pytest.raises(SchemaError, match="petal width"):
        dataset_tensors(catalog, "iris", features=["petal width (cm)"])


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of uint8 (MNIST's format): magic, one uint32 per dimension, data."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow
@pytest.mark.parametrize(("model", "floor"), [("mlp", 0.5), ("scatternet", 0.8)])
def test_mnist_images_train_with_a_test_set(tmp_path, shared_data, model, floor):
    store = Store.open(f"sqlite:///{tmp_path / 'm.db'}", upgrade=True)
    catalog = Catalog(store)
    catalog.add(shared_data / "mnist", name="mnist-test", format="mnist", split="test")
    # Held out: 2,000 images of MNIST's train split, written as their own IDX files (the same
    # file twice would be one dataset: a budget belongs to the data, not to the name).
    train = load_mnist(shared_data / "mnist", split="train")
    holdout = tmp_path / "holdout"
    holdout.mkdir()
    _write_idx(holdout / "t10k-images-idx3-ubyte", train.images[:2000])
    _write_idx(holdout / "t10k-labels-idx1-ubyte", train.labels[:2000])
    catalog.add(holdout, name="holdout", format="mnist", split="test")
    ledger = Ledger(store)
    ledger.set_budget("mnist-test", Budget(epsilon=3.0, delta=1e-5))
    ledger.set_budget("holdout", Budget(epsilon=1.0, delta=1e-5))
    data = dataset_tensors(catalog, "mnist-test")
    assert data.input_shape == (1, 28, 28)
    assert float(data.inputs.min()) == -1.0 and float(data.inputs.max()) == 1.0
    events = []
    trained = fit_private(
        catalog,
        ledger,
        ModelRegistry(tmp_path / "models"),
        "mnist-test",
        DPConfig(epochs=2, batch_size=256, epsilon=2.0, delta=1e-5, learning_rate=1.0),
        name=f"mnist-{model}",
        model=model,
        hidden=(32,),
        test="holdout",
        test_epsilon=0.5,
        progress=events.append,
    )
    # Two private epochs on 10k images; chance is 0.1. The accuracy is a DP count (discrete
    # Laplace, scale 2 on 10,000 images: its error is far below these margins).
    assert trained.card.test_accuracy > floor
    assert trained.card.test_epsilon == 0.5
    # Far above always guessing the commonest digit (about 11%): the card says it has utility.
    assert trained.card.test_no_utility is False
    assert 0.05 < trained.card.test_majority_rate < 0.2
    assert len(ledger.entries("mnist-test")) == 1
    (accuracy_entry,) = ledger.entries("holdout")
    assert accuracy_entry.id == trained.card.test_ledger_event_id
    assert accuracy_entry.epsilon == pytest.approx(0.5, abs=1e-3)  # PLD discretisation
    if model == "scatternet":
        assert any(e.task == "scattering features" for e in events)
        saved = ModelRegistry(tmp_path / "models").load("mnist-scatternet")
        assert torch.equal(
            saved.model(data.inputs[:4]).argmax(1), trained.model(data.inputs[:4]).argmax(1)
        )
    store.dispose()
