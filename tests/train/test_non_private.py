"""Issue 18: `veil train --epsilon 10000` grew to 24 GB calibrating; a labelled baseline instead.

A target above epsilon 100 is refused before any calibration runs (and points at
`--non-private`); the noise search has a floor; `--non-private` trains a baseline
whose card says NOT PRIVATE and whose run the ledger's history shows, spending nothing.
"""

from __future__ import annotations

import json
import math

import pytest

import veil.ledger.calibrate as calibrate_module
import veil.train._plan as plan_module
from veil.cli._app import main
from veil.errors import InvalidInputError
from veil.ledger import Ledger
from veil.train import DPConfig, calibrate_noise
from veil.train._accounting import MIN_NOISE_MULTIPLIER, pld_epsilon
from veil.train._artifact import PrivacyCard


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def digits(capsys) -> str:
    assert run(capsys, "init")[0] == 0
    assert run(capsys, "datasets", "add", "sklearn:digits", "--name", "digits")[0] == 0
    assert run(capsys, "budget", "set", "digits", "--epsilon", "3", "--delta", "1e-4")[0] == 0
    return "digits"


@pytest.fixture
def no_calibration(monkeypatch):
    """Fail the test if any noise calibration or PLD evaluation of a training run starts."""
    calls: list[str] = []

    def forbidden(*args, **kwargs):
        calls.append("calibration")
        raise AssertionError("the calibration ran")

    monkeypatch.setattr(plan_module, "calibrate_noise", forbidden)
    monkeypatch.setattr(plan_module, "account", forbidden)
    monkeypatch.setattr(calibrate_module, "pld_epsilon", forbidden)
    return calls


TRAIN = ("train", "--dataset", "digits", "--model", "logreg", "--delta", "1e-4")


@pytest.mark.slow
def test_cli_epsilon_10000_is_refused_before_calibration(capsys, digits, no_calibration):
    code, out, err = run(capsys, *TRAIN, "--epsilon", "10000", "--json")
    assert code == 3, err
    body = json.loads(out)["error"]
    assert body["code"] == "invalid_input"
    assert "largest epsilon one release may spend" in err
    assert "--non-private" in err
    assert no_calibration == []
    code, out, _ = run(capsys, "budget", "history", "digits", "--json")
    assert [h for h in json.loads(out)["history"] if h["type"] == "release"] == []


def test_python_refuses_epsilon_10000_before_calibration(no_calibration):
    with pytest.raises(InvalidInputError, match="non-private"):
        DPConfig(epochs=1, epsilon=1e4)
    assert no_calibration == []


@pytest.mark.slow
def test_calibration_refuses_huge_targets_and_keeps_its_floor():
    with pytest.raises(InvalidInputError, match="largest epsilon"):
        calibrate_noise(1e4, 1e-5, sample_rate=256 / 60000, steps=2340)
    # The largest target allowed: an answer at or above the floor that meets the target.
    sigma = calibrate_noise(100, 1e-5, sample_rate=0.01, steps=10)
    assert sigma >= MIN_NOISE_MULTIPLIER
    assert pld_epsilon(0.01, sigma, 10, 1e-5) <= 100
    with pytest.raises(InvalidInputError, match="below the floor"):
        DPConfig(epochs=1, noise_multiplier=1e-3)


def test_cli_needs_exactly_one_of_epsilon_and_non_private(capsys, digits):
    code, _, err = run(capsys, *TRAIN, "--epsilon", "1", "--non-private")
    assert code == 3 and "takes no --epsilon" in err
    code, _, err = run(capsys, *TRAIN)
    assert code == 3 and "needs a target epsilon" in err and "--non-private" in err


def test_cli_non_private_baseline_is_labelled_and_recorded(capsys, digits):
    code, out, err = run(
        capsys, *TRAIN, "--non-private", "--epochs", "1", "--batch-size", "100", "--json"
    )
    assert code == 0, err
    assert "WARNING: NOT PRIVATE" in err
    said = " ".join(err.split())
    assert "Only the data's owner may ask for it (dataset.non_private)" in said
    payload = json.loads(out)
    card = payload.get("card", payload)
    assert card["private"] is False
    assert card["epsilon"] == "inf"
    assert card["model"] == "digits-logreg-nonprivate"
    lines = dict(PrivacyCard.from_dict(card).lines())
    assert lines["private"].startswith("NOT PRIVATE")
    assert "epsilon = inf" in lines["private"]
    # The history shows the non-private use; the budget is untouched.
    code, out, _ = run(capsys, "budget", "history", "digits", "--json")
    releases = [h for h in json.loads(out)["history"] if h["type"] == "release"]
    assert len(releases) == 1
    assert releases[0]["operation"] == "non_private"
    assert releases[0]["mechanisms"][0]["name"] == "non_private"
    assert releases[0]["charged"]["epsilon"] is None
    assert card["ledger_event_id"] == releases[0]["id"]
    ledger = Ledger.open()
    try:
        status = ledger.status("digits")
    finally:
        ledger.store.dispose()
    assert status.spent.epsilon == 0.0 and status.events == 1
    # The card as people read it.
    code, out, _ = run(capsys, "models", "show", "digits-logreg-nonprivate")
    assert code == 0 and "NOT PRIVATE" in out
    assert not math.isfinite(PrivacyCard.from_dict(card).epsilon)


@pytest.mark.slow
@pytest.mark.parametrize(("target", "rate", "steps"), [(100.0, 0.01, 10), (0.5, 0.01, 100)])
def test_calibration_work_is_bounded(monkeypatch, target, rate, steps):
    """docs/train.md: at most 57 PLD evaluations, whatever the target."""
    calls = []
    real = calibrate_module.pld_epsilon

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate_module, "pld_epsilon", counted)
    sigma = calibrate_noise(target, 1e-5, sample_rate=rate, steps=steps)
    assert sigma >= MIN_NOISE_MULTIPLIER
    assert len(calls) <= 57
    assert min(args[1] for args in calls) >= MIN_NOISE_MULTIPLIER
