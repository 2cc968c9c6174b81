"""DP-FedAvg on the one privacy spine: the ledger's calibration and report, federated JSON keys kept."""

from __future__ import annotations

import json

import pytest

from veil.errors import InvalidInputError
from veil.federated import calibrate_user_noise, plan_user_dp
from veil.ledger.calibrate import SubsampledGaussianAccounting, account_subsampled_gaussian
from veil.ledger.calibrate import calibrate_noise as ledger_calibrate

DELTA = 1e-5

# The keys `veil federate --json` prints under "privacy" (docs/federated.md, tests/federated).
PLAN_KEYS = {
    "population",
    "sampling_rate",
    "rounds",
    "noise_multiplier",
    "delta",
    "adaptive",
    "count_noise_multiplier",
    "update_noise_multiplier",
    "expected_clients",
    "epsilon",
    "epsilon_rdp",
    "epsilon_flower",
    "flower_sampling_rate",
}


@pytest.mark.slow
def test_federated_calibration_is_the_ledgers_one_search():
    z = calibrate_user_noise(3.0, DELTA, 0.05, 200)
    assert z == ledger_calibrate(3.0, DELTA, 0.05, 200)
    assert z == calibrate_user_noise(3.0, DELTA, sampling_rate=0.05, rounds=200)


def test_unreachable_target_names_federated_knobs():
    with pytest.raises(InvalidInputError, match="out of reach") as info:
        calibrate_user_noise(0.01, DELTA, 1.0, 10_000)
    assert "fewer rounds" in str(info.value)
    assert "clients per round" in str(info.value)


def test_plan_holds_the_shared_report_and_keeps_its_json_keys():
    plan = plan_user_dp(
        population=1000, sampling_rate=0.1, rounds=50, noise_multiplier=1.2, delta=DELTA
    )
    assert isinstance(plan.accounting, SubsampledGaussianAccounting)
    assert set(plan.accounting.cross_checks) == {"flower"}
    shared = account_subsampled_gaussian(0.1, 1.2, 50, DELTA)
    assert (plan.epsilon, plan.epsilon_rdp) == (shared.epsilon, shared.epsilon_rdp)
    assert (plan.sampling_rate, plan.rounds, plan.noise_multiplier, plan.delta) == (
        0.1,
        50,
        1.2,
        DELTA,
    )
    payload = plan.to_dict()
    assert set(payload) == PLAN_KEYS
    assert payload["rounds"] == 50
    assert payload["epsilon_flower"] == plan.epsilon_flower
    json.dumps(payload, allow_nan=False)
    details = plan.privacy_event("a run").details
    assert details["epsilon_flower"] == plan.epsilon_flower
    assert details["epsilon_rdp"] == plan.epsilon_rdp
