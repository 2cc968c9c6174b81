"""The DP-SGD loop: the noise it adds, virtual steps, refusals, and that it learns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.datasets import load_digits
from torch import nn

from veil.errors import InvalidInputError, PrivacyLeakWarning
from veil.train import DPConfig, build_model, evaluate, plan_training, train

ALPHA = 1e-6


@pytest.fixture
def quiet():
    """Seeded runs warn that they are not private; these tests seed on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        yield


@pytest.mark.slow  # statistical (a declared false-failure rate), many draws
def test_noise_has_the_calibrated_scale_when_the_signal_is_zero():
    """Zero every per-example gradient: one SGD step (lr 1) then moves the weights by noise alone."""
    n, batch, sigma, clip = 2000, 100, 1.7, 0.5
    model = nn.Linear(200, 500, bias=False)
    before = model.weight.detach().clone()
    inputs, targets = torch.randn(n, 200), torch.zeros(n, dtype=torch.long)
    config = DPConfig(
        epochs=1, batch_size=batch, noise_multiplier=sigma, max_grad_norm=clip, learning_rate=1.0
    )
    plan = plan_training(config, n)
    plan = type(plan)(config, n, 1, plan.accounting)  # a single step

    def zero_loss(output, target):
        return 0.0 * output.sum(1)

    train(model, inputs, targets, plan, n_classes=1, loss_fn=zero_loss)
    moved = (before - model.weight.detach()).double().numpy().ravel()
    expected_std = sigma * clip / batch  # noise sigma*C, divided by the expected batch size q*n
    statistic = float(np.sum((moved / expected_std) ** 2))
    k = moved.size
    lo, hi = stats.chi2.ppf(ALPHA / 2, k), stats.chi2.isf(ALPHA / 2, k)
    assert lo <= statistic <= hi, (
        f"chi2 {statistic:.0f} outside [{lo:.0f}, {hi:.0f}] (k={k}): type I error <= {ALPHA}"
    )
    assert abs(float(moved.mean())) < 6 * expected_std / np.sqrt(k)


@pytest.mark.slow
def test_virtual_steps_give_the_same_model_as_one_physical_batch(quiet):
    torch.manual_seed(0)
    inputs, targets = torch.randn(600, 5), torch.randint(0, 3, (600,))
    weights = []
    for physical in (7, 4096):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        config = DPConfig(
            epochs=2, batch_size=120, noise_multiplier=1.0, max_physical_batch_size=physical, seed=3
        )
        train(model, inputs, targets, plan_training(config, 600), n_classes=3)
        weights.append(torch.cat([p.detach().ravel() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


@pytest.mark.slow  # trains to an accuracy floor
def test_a_private_run_learns_digits(seed):
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0 * 2 - 1, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train_idx, test_idx = order[:1400], order[1400:]
    torch.manual_seed(seed)
    model = build_model({"kind": "logreg", "input_shape": [64], "n_classes": 10})
    config = DPConfig(
        epochs=15, batch_size=100, epsilon=8.0, delta=1e-4, learning_rate=2.0, max_grad_norm=1.0
    )
    plan = plan_training(config, 1400)
    report = train(model, x[train_idx], y[train_idx], plan, n_classes=10)
    assert plan.accounting.epsilon <= 8.0
    assert report.secure_rng
    assert [h["epoch"] for h in report.history] == list(range(1, 16))
    # epsilon spent grows with the epochs and ends at the plan's.
    spent = [h["epsilon"] for h in report.history]
    assert spent == sorted(spent)
    assert spent[-1] == pytest.approx(plan.accounting.epsilon, rel=1e-6)
    assert evaluate(model, x[test_idx], y[test_idx]) > 0.75  # chance is 0.10


@pytest.mark.slow
def test_progress_reports_loss_accuracy_and_epsilon():
    events = []
    model = nn.Linear(3, 2)
    config = DPConfig(epochs=2, batch_size=50, epsilon=2.0, delta=1e-4)
    train(
        model,
        torch.randn(500, 3),
        torch.randint(0, 2, (500,)),
        plan_training(config, 500),
        n_classes=2,
        progress=events.append,
    )
    last = events[-1]
    assert last.task == "epoch 2/2"
    assert last.completed == last.total == 10
    assert "loss" in last.detail and "acc" in last.detail and "eps" in last.detail


def test_the_baseline_spends_nothing_and_uses_plain_batches():
    model = nn.Linear(3, 2)
    config = DPConfig(epochs=1, batch_size=64, private=False, sampling="shuffle")
    plan = plan_training(config, 300)
    assert plan.accounting is None
    with pytest.raises(InvalidInputError, match="non-private"):
        plan.mechanism()
    report = train(model, torch.randn(300, 3), torch.randint(0, 2, (300,)), plan, n_classes=2)
    assert report.to_dict()["accounting"] is None


@pytest.mark.slow
def test_the_ledger_event_is_one_poisson_subsampled_gaussian():
    plan = plan_training(DPConfig(epochs=3, batch_size=256, epsilon=3.0), 60000)
    mechanism = plan.mechanism()
    assert mechanism.name == "poisson_subsampled_gaussian"
    params = mechanism.parameters
    assert params["sampling_rate"] == pytest.approx(256 / 60000)
    assert params["steps"] == 3 * 234
    assert params["noise_multiplier"] == plan.accounting.noise_multiplier
    assert params["max_grad_norm"] == 1.0


def test_shuffled_batches_are_refused_in_the_private_path():
    with pytest.raises(InvalidInputError, match="Poisson") as info:
        DPConfig(epsilon=1.0, sampling="shuffle")
    assert "several times" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # neither epsilon nor noise multiplier
        {"epsilon": 1.0, "noise_multiplier": 1.0},
        {"epsilon": -1.0},
        {"epsilon": 1.0, "delta": 0.0},
        {"epsilon": 1.0, "epochs": 0},
        {"epsilon": 1.0, "batch_size": 2.5},
        {"epsilon": 1.0, "max_grad_norm": float("nan")},
        {"epsilon": 1.0, "optimizer": "lbfgs"},
        {"epsilon": 1.0, "momentum": 1.0},
    ],
)
def test_bad_configurations_are_refused(kwargs):
    with pytest.raises(InvalidInputError):
        DPConfig(**kwargs)


@pytest.mark.slow
def test_bad_data_is_refused_before_training():
    model = nn.Linear(3, 2)
    plan = plan_training(DPConfig(epochs=1, batch_size=10, epsilon=1.0, delta=1e-3), 100)
    x, y = torch.randn(100, 3), torch.randint(0, 2, (100,))
    bad_x = x.clone()
    bad_x[17, 1] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN or infinite") as info:
        train(model, bad_x, y, plan, n_classes=2)
    assert "17" not in str(info.value)  # errors never point at a record
    bad_y = y.clone()
    bad_y[3] = 5
    with pytest.raises(InvalidInputError, match="outside the declared classes"):
        train(model, x, bad_y, plan, n_classes=2)
    with pytest.raises(InvalidInputError, match="delta < 1/n"):
        plan_training(DPConfig(batch_size=10, epsilon=1.0, delta=0.02), 100)
    with pytest.raises(InvalidInputError, match="batch size exceeds"):
        plan_training(DPConfig(batch_size=500, epsilon=1.0), 100)


def test_empty_poisson_draws_still_step_with_noise_alone(quiet):
    """At q = 1/n most steps draw 0 or 1 record; empty steps must still add noise and step."""
    model = nn.Linear(2, 2)
    before = model.weight.detach().clone()
    config = DPConfig(epochs=1, batch_size=1, noise_multiplier=1.0, learning_rate=0.1, seed=5)
    plan = plan_training(config, 50)
    report = train(model, torch.randn(50, 2), torch.randint(0, 2, (50,)), plan, n_classes=2)
    assert plan.steps == 50 and len(report.history) == 1
    assert not torch.equal(before, model.weight.detach())
