"""DP-SGD accounting: pinned values, three accountants that agree, and calibration that never overshoots."""

from __future__ import annotations

import pytest
from dp_accounting import dp_event
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from veil.errors import InvalidInputError
from veil.ledger import PLDAccountant
from veil.ledger.calibrate import SubsampledGaussianAccounting, account_subsampled_gaussian
from veil.ledger.calibrate import calibrate_noise as ledger_calibrate
from veil.train import account, calibrate_noise
from veil.train._accounting import MAX_NOISE_MULTIPLIER

# FIELD-NOTES: q = 256/60000, sigma = 1.1, 703 steps, delta = 1e-5 measured
# RDP 0.843, PRV 0.515, dp_accounting PLD 0.505 (Opacus 1.6, dp_accounting 0.6).
Q, SIGMA, STEPS, DELTA = 256 / 60000, 1.1, 703, 1e-5


def test_pinned_epsilon_of_a_known_run_by_three_accountants():
    run = account(Q, SIGMA, STEPS, DELTA)
    assert run.epsilon == pytest.approx(0.5061, abs=2e-3)
    assert run.epsilon_rdp == pytest.approx(0.8432, abs=2e-3)
    assert run.epsilon_prv == pytest.approx(0.515, abs=1e-2)


# DP-SGD's calibration is the ledger's one search (test below); tests/ledger/test_calibrate.py
# holds the property over the whole range, so here a few examples in DP-SGD's own words.
@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample_rate=st.floats(1e-3, 0.1),
    sigma=st.floats(0.6, 5.0),
    steps=st.integers(10, 2000),
)
@example(sample_rate=0.001, sigma=4.5, steps=468)  # PLD's grid shows: the finer one decides
def test_accountants_agree_and_rdp_is_never_tighter(sample_rate, sigma, steps):
    run = account(sample_rate, sigma, steps, DELTA)
    # RDP is an upper bound of the same guarantee, looser than PLD except within PLD's
    # pessimistic discretisation (interval 1e-3), which shows at tiny epsilons: there
    # (q=0.001, sigma=4.5, 468 steps gives PLD 0.0246 against RDP 0.0226) the same PLD on a
    # ten times finer grid must come under RDP, or the excess is not discretisation.
    if run.epsilon > run.epsilon_rdp + 2e-3:
        event = dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(sample_rate, dp_event.GaussianDpEvent(sigma)), steps
        )
        finer = PLDAccountant(discretization=1e-4).epsilon([event], DELTA)
        assert finer <= run.epsilon_rdp + 2e-4, (run.epsilon, finer, run.epsilon_rdp)
    # PLD and PRV are both near-exact: they agree within PRV's error bound (Opacus's default
    # eps_error 0.01) plus a few percent for PLD's pessimistic discretisation.
    if run.epsilon_prv is not None:
        assert run.epsilon_prv == pytest.approx(run.epsilon, rel=0.05, abs=0.02)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.floats(0.2, 10.0),
    delta=st.sampled_from([1e-6, 1e-5, 1e-3]),
    sample_rate=st.floats(1e-3, 0.05),
    steps=st.integers(1, 1500),
)
def test_calibrated_noise_never_overshoots_the_target(target, delta, sample_rate, steps):
    try:
        sigma = calibrate_noise(target, delta, sample_rate, steps)
    except InvalidInputError:
        # Refused only when even the largest noise multiplier cannot meet the target.
        assert account(sample_rate, MAX_NOISE_MULTIPLIER, steps, delta, prv=False).epsilon > target
        return
    assert account(sample_rate, sigma, steps, delta, prv=False).epsilon <= target
    # ... and it is not wastefully large: 0.2% less noise overshoots (or sigma is at its floor).
    if sigma > 0.0501:  # above the floor
        assert account(sample_rate, sigma / 1.002, steps, delta, prv=False).epsilon > target


@pytest.mark.slow
def test_calibration_is_monotone_in_the_target():
    sigmas = [calibrate_noise(e, DELTA, Q, STEPS) for e in (0.5, 2.0, 8.0)]
    assert sigmas == sorted(sigmas, reverse=True)


def test_unreachable_target_names_the_knobs():
    with pytest.raises(InvalidInputError, match="--epochs") as info:
        calibrate_noise(0.001, DELTA, Q, 100_000)
    assert "--batch-size" in str(info.value)
    assert "--epsilon" in str(info.value)


@pytest.mark.parametrize(
    ("target", "delta", "rate"),
    [
        (-1.0, 1e-5, 0.01),
        (float("nan"), 1e-5, 0.01),
        (1.0, 0.0, 0.01),
        (1.0, 1.0, 0.01),
        (1.0, 1e-5, 0.0),
        (1.0, 1e-5, 1.5),
    ],
)
def test_bad_parameters_are_refused(target, delta, rate):
    with pytest.raises(InvalidInputError):
        calibrate_noise(target, delta, rate, 100)


# ----------------------------------------------------------------------------- one privacy spine


@pytest.mark.slow
def test_train_calibration_is_the_ledgers_one_search():
    assert calibrate_noise(2.0, DELTA, Q, STEPS) == ledger_calibrate(2.0, DELTA, Q, STEPS)
    # keyword names of DP-SGD still work
    assert calibrate_noise(2.0, DELTA, sample_rate=Q, steps=STEPS) == ledger_calibrate(
        2.0, DELTA, Q, STEPS
    )


def test_privacy_accounting_is_the_shared_report():
    run = account(Q, SIGMA, STEPS, DELTA, prv=False)
    assert isinstance(run, SubsampledGaussianAccounting)
    assert run.sample_rate == run.sampling_rate == Q
    assert run.epsilon_prv is None
    assert run.to_dict() == {
        "sampling_rate": Q,
        "noise_multiplier": SIGMA,
        "steps": STEPS,
        "delta": DELTA,
        "epsilon": run.epsilon,
        "epsilon_rdp": run.epsilon_rdp,
        "epsilon_prv": None,
    }
    shared = account_subsampled_gaussian(Q, SIGMA, STEPS, DELTA)
    assert (run.epsilon, run.epsilon_rdp) == (shared.epsilon, shared.epsilon_rdp)
