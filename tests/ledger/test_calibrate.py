"""The one calibration and the one report of the Poisson-subsampled Gaussian (DP-SGD steps, federated rounds).

Tier 1: pinned epsilons by PLD and RDP. Tier 2 (Hypothesis): the noise for a
target never overshoots it and is the smallest to 0.1 %; bad parameters are
refused with the knob to turn.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.errors import InvalidInputError
from veil.ledger import calibrate
from veil.ledger.calibrate import (
    CALIBRATION_TOLERANCE,
    MAX_NOISE_MULTIPLIER,
    MIN_NOISE_MULTIPLIER,
    SubsampledGaussianAccounting,
    _smallest_fitting,
    account_subsampled_gaussian,
    calibrate_noise,
    pld_epsilon,
    rdp_epsilon,
)

# FIELD-NOTES: q = 256/60000, sigma = 1.1, 703 steps, delta = 1e-5 measured
# RDP 0.843, dp_accounting PLD 0.505 (dp_accounting 0.6): the figures of tests/train.
Q, SIGMA, STEPS, DELTA = 256 / 60000, 1.1, 703, 1e-5


def test_pinned_epsilon_of_a_known_run():
    report = account_subsampled_gaussian(Q, SIGMA, STEPS, DELTA)
    assert report.epsilon == pytest.approx(0.5061, abs=2e-3)
    assert report.epsilon_rdp == pytest.approx(0.8432, abs=2e-3)
    assert report.epsilon == pld_epsilon(Q, SIGMA, STEPS, DELTA)
    assert report.epsilon_rdp == rdp_epsilon(Q, SIGMA, STEPS, DELTA)


def test_report_shape_and_json():
    report = account_subsampled_gaussian(Q, SIGMA, STEPS, DELTA, cross_checks={"prv": 0.515})
    assert report.to_dict() == {
        "sampling_rate": Q,
        "noise_multiplier": SIGMA,
        "steps": STEPS,
        "delta": DELTA,
        "epsilon": report.epsilon,
        "epsilon_rdp": report.epsilon_rdp,
        "epsilon_prv": 0.515,
    }
    json.dumps(report.to_dict(), allow_nan=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.epsilon = 0.0  # type: ignore[misc]
    assert hash(report) == hash(dataclasses.replace(report))


def test_cross_checks_are_a_private_copy_with_lower_case_names():
    given_checks: dict[str, float | None] = {"flower": 1.0}
    report = SubsampledGaussianAccounting(0.1, 1.0, 10, DELTA, 1.0, 1.1, given_checks)
    given_checks["flower"] = 99.0
    assert report.cross_checks == {"flower": 1.0}
    for bad in ("rdp", "pld", "PRV", "", "epsilon flower"):
        with pytest.raises(InvalidInputError):
            SubsampledGaussianAccounting(0.1, 1.0, 10, DELTA, 1.0, 1.1, {bad: 1.0})


@pytest.mark.parametrize(
    ("rate", "sigma", "steps", "delta"),
    [
        (0.0, 1.0, 10, DELTA),
        (1.5, 1.0, 10, DELTA),
        (float("nan"), 1.0, 10, DELTA),
        (True, 1.0, 10, DELTA),
        (0.1, 0.0, 10, DELTA),
        (0.1, float("inf"), 10, DELTA),
        (0.1, 1.0, 0, DELTA),
        (0.1, 1.0, 2.5, DELTA),
        (0.1, 1.0, 10, 0.0),
        (0.1, 1.0, 10, 1.0),
    ],
)
def test_accounting_refuses_bad_parameters(rate, sigma, steps, delta):
    with pytest.raises(InvalidInputError):
        account_subsampled_gaussian(rate, sigma, steps, delta)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.floats(0.2, 10.0),
    delta=st.sampled_from([1e-6, 1e-5, 1e-3]),
    sample_rate=st.floats(1e-3, 0.2),
    steps=st.integers(1, 1500),
)
def test_calibrated_noise_meets_the_target_and_is_the_smallest(target, delta, sample_rate, steps):
    try:
        z = calibrate_noise(target, delta, sample_rate, steps)
    except InvalidInputError:
        # Refused only when even the largest noise multiplier cannot meet the target.
        assert pld_epsilon(sample_rate, MAX_NOISE_MULTIPLIER, steps, delta) > target
        return
    assert MIN_NOISE_MULTIPLIER <= z <= MAX_NOISE_MULTIPLIER
    assert pld_epsilon(sample_rate, z, steps, delta) <= target
    if z > MIN_NOISE_MULTIPLIER:  # above the floor, 0.1 % less noise overshoots
        assert pld_epsilon(sample_rate, z / (1 + CALIBRATION_TOLERANCE), steps, delta) > target


@pytest.mark.slow
def test_calibration_is_monotone_in_the_target_and_keeps_its_floor():
    sigmas = [calibrate_noise(e, DELTA, Q, STEPS) for e in (0.5, 2.0, 8.0, 100.0)]
    assert sigmas == sorted(sigmas, reverse=True)
    assert sigmas[-1] >= MIN_NOISE_MULTIPLIER


@pytest.mark.slow
def test_a_smaller_ceiling_is_honoured():
    z = calibrate_noise(2.0, DELTA, Q, STEPS)
    with pytest.raises(InvalidInputError, match="out of reach"):
        calibrate_noise(2.0, DELTA, Q, STEPS, max_noise_multiplier=z * 0.9)
    assert calibrate_noise(2.0, DELTA, Q, STEPS, max_noise_multiplier=z * 1.5) == pytest.approx(
        z, rel=2 * CALIBRATION_TOLERANCE
    )
    # A ceiling at the floor is a search of one point: epsilon 100 is out of its reach.
    with pytest.raises(InvalidInputError, match="out of reach"):
        calibrate_noise(100.0, DELTA, 0.01, 1, max_noise_multiplier=MIN_NOISE_MULTIPLIER)


def test_unreachable_target_names_the_knobs_in_the_callers_words():
    with pytest.raises(InvalidInputError, match="out of reach") as info:
        calibrate_noise(0.01, DELTA, 1.0, 10_000)
    assert "fewer steps" in str(info.value)
    assert info.value.details["epsilon_at_max_noise"] > 0.01
    with pytest.raises(InvalidInputError, match="out of reach") as info:
        calibrate_noise(0.01, DELTA, 1.0, 10_000, fix="use fewer widgets")
    assert "use fewer widgets" in str(info.value)


@pytest.mark.parametrize(
    ("target", "delta", "rate", "steps", "ceiling", "match"),
    [
        (-1.0, DELTA, 0.01, 100, MAX_NOISE_MULTIPLIER, "positive"),
        (math.nan, DELTA, 0.01, 100, MAX_NOISE_MULTIPLIER, "finite"),
        (1e4, DELTA, 0.01, 100, MAX_NOISE_MULTIPLIER, "largest epsilon"),
        (1.0, 0.0, 0.01, 100, MAX_NOISE_MULTIPLIER, "delta"),
        (1.0, 1.0, 0.01, 100, MAX_NOISE_MULTIPLIER, "delta"),
        (1.0, DELTA, 0.0, 100, MAX_NOISE_MULTIPLIER, "sampling rate"),
        (1.0, DELTA, 1.5, 100, MAX_NOISE_MULTIPLIER, "sampling rate"),
        (1.0, DELTA, 0.01, 0, MAX_NOISE_MULTIPLIER, "steps"),
        (1.0, DELTA, 0.01, 1.5, MAX_NOISE_MULTIPLIER, "steps"),
        (1.0, DELTA, 0.01, 100, -1.0, "max_noise_multiplier"),
        (1.0, DELTA, 0.01, 100, 0.01, "floor"),
    ],
)
def test_calibration_refuses_bad_parameters(target, delta, rate, steps, ceiling, match):  # noqa: PLR0917
    with pytest.raises(InvalidInputError, match=match):
        calibrate_noise(target, delta, rate, steps, max_noise_multiplier=ceiling)


# ----------------------------------------------------------------------------- the search's work


def _counting_pld(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every noise multiplier the calibration hands PLD."""
    seen: list[float] = []
    real = calibrate.pld_epsilon

    def counted(rate: float, z: float, steps: int, delta: float) -> float:
        seen.append(z)
        return real(rate, z, steps, delta)

    monkeypatch.setattr(calibrate, "pld_epsilon", counted)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "delta", "rate", "steps"),
    [(3.0, 1e-5, 256 / 60000, 2340), (0.5, 1e-3, 1e-3, 1500), (10.0, 1e-5, 0.1, 10)],
)
def test_the_search_aims_along_the_curve_instead_of_halving(
    monkeypatch: pytest.MonkeyPatch, target: float, delta: float, rate: float, steps: int
) -> None:
    # A bisection from RDP's answer took 11 to 13 PLD evaluations on these three (ceiling,
    # RDP's answer, one or two steps down, eight halvings); aiming along the curve takes 5 to 7.
    seen = _counting_pld(monkeypatch)
    z = calibrate_noise(target, delta, rate, steps)
    assert len(seen) <= 8, seen
    assert pld_epsilon(rate, z, steps, delta) <= target
    assert pld_epsilon(rate, z / (1 + CALIBRATION_TOLERANCE), steps, delta) > target


def _probes(epsilon, target: float, low: float, high: float, **options) -> tuple[float, int]:
    calls = []

    def counted(z: float) -> float:
        calls.append(z)
        assert low < z < high, "every probe lies strictly inside the bracket"
        return epsilon(z)

    z = _smallest_fitting(counted, target, (low, epsilon(low)), (high, epsilon(high)), **options)
    return z, len(calls)


@pytest.mark.parametrize("power", [0.5, 1.0, 3.0])
def test_the_search_finds_the_smallest_fitting_z_of_a_power_law(power: float) -> None:
    # epsilon = (2 / z) ** power meets epsilon 1 at exactly z = 2.
    z, calls = _probes(lambda z: (2 / z) ** power, 1.0, 0.5, 40.0)
    assert 2.0 <= z <= 2.0 * (1 + CALIBRATION_TOLERANCE)
    assert calls <= 4  # a straight line on log-log axes: aimed, then closed


@pytest.mark.parametrize("root", [0.051, 0.9, 7.3, 49.9])
def test_the_search_is_bounded_like_bisection_on_a_cliff(root: float) -> None:
    # A curve that interpolation misjudges (a cliff at the root): the aimed probes cost
    # at most their number, then bisection closes in as it would have alone.
    def cliff(z: float) -> float:
        return 1e6 if z < root else 1e-6

    z, calls = _probes(cliff, 1.0, 0.05, 50.0, aimed=4)
    assert root <= z <= root * (1 + CALIBRATION_TOLERANCE)
    halvings = math.ceil(math.log2(math.log(50.0 / 0.05) / math.log1p(CALIBRATION_TOLERANCE)))
    assert calls <= 4 + halvings
