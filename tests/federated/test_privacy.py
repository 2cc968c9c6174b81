"""User-level DP for federated averaging: three accountants, adaptive clipping, noise at its scale.

Statistical tests fix a false-failure rate ALPHA = 1e-6 each and use the exact
KS critical value (tests/_dpstats.py); seeded noise makes them reproducible,
and any seed in 0-99 passes them with probability >= 1 - ALPHA.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from dp_accounting import dp_event
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from tests._dpstats import ks_critical_value, ks_statistic

from veil.errors import InvalidInputError, PrivacyLeakWarning
from veil.federated._dpfedavg import DPFedAvgAggregator
from veil.federated._local_dp import LocalGaussianDP, distributed_noise_std, local_dp_epsilon
from veil.federated._noise import GaussianNoise, clip_update
from veil.federated._user_dp import adaptive_update_noise, calibrate_user_noise, plan_user_dp
from veil.ledger import Mechanism, PLDAccountant, RDPAccountant, gaussian_epsilon

ALPHA = 1e-6
DELTA = 1e-5
# RDP over PLD, measured: 1.08-1.15 at epsilon 2-8, 1.7 at epsilon 0.7 (q = 0.01, 100 rounds).
RDP_OVER_PLD = 1.25


def _rdp_is_looser(pld: float, rdp: float) -> bool:
    return pld <= rdp <= max(RDP_OVER_PLD * pld, pld + 0.6)


def _noise(seed: int) -> GaussianNoise:
    with pytest.warns(PrivacyLeakWarning, match="not private"):
        return GaussianNoise(seed)


def _ks_normal(sample: np.ndarray, std: float, what: str) -> None:
    distance = ks_statistic(sample, stats.norm(scale=std).cdf)
    critical = ks_critical_value(sample.size, ALPHA)
    assert distance <= critical, (
        f"{what}: KS distance {distance:.4g} > {critical:.4g} against N(0, {std:.4g}^2) "
        f"(type I error <= {ALPHA:g})"
    )


@pytest.fixture(scope="module")
def pinned_plan():
    return plan_user_dp(
        population=1000, sampling_rate=0.1, rounds=100, noise_multiplier=1.0, delta=DELTA
    )


# ----------------------------------------------------------------------------- accounting


def test_pinned_epsilon_of_a_known_run_by_three_accountants(pinned_plan):
    # q = 0.1, z = 1.0, 100 rounds, delta = 1e-5 (dp_accounting 0.6, flwr 1.42).
    assert pinned_plan.epsilon == pytest.approx(7.0466, abs=2e-3)
    assert pinned_plan.epsilon_rdp == pytest.approx(7.9039, abs=2e-3)
    # Flower's RdpAccountant is dp_accounting's RDP analysis (same default orders, Poisson,
    # add-or-remove-one) at q = sample_size / population = 100 / 1000: the same number.
    assert pinned_plan.epsilon_flower == pytest.approx(pinned_plan.epsilon_rdp, rel=1e-12)
    assert pinned_plan.flower_sampling_rate == 0.1
    assert _rdp_is_looser(pinned_plan.epsilon, pinned_plan.epsilon_rdp)
    assert pinned_plan.expected_clients == 100
    assert pinned_plan.update_noise_multiplier == 1.0


@pytest.mark.parametrize(
    ("population", "rate", "z", "rounds"),
    [
        (10_000, 0.01, 1.0, 1000),
        (10_000, 0.01, 1.0, 100),
        (1000, 0.02, 1.0, 100),
        (20, 1.0, 5.0, 10),
    ],
)
def test_pld_is_tightest_and_flower_matches_rdp(population, rate, z, rounds):
    plan = plan_user_dp(
        population=population, sampling_rate=rate, rounds=rounds, noise_multiplier=z, delta=DELTA
    )
    assert _rdp_is_looser(plan.epsilon, plan.epsilon_rdp)
    assert plan.epsilon_flower == pytest.approx(plan.epsilon_rdp, rel=1e-9)


def test_flower_accounts_the_rounded_sample_size():
    # q N = 10.5 rounds (half to even) to 10: Flower accounts q = 10 / 1050 < 0.01, and its
    # figure is below the RDP figure at the true rate (optimistic).
    plan = plan_user_dp(
        population=1050, sampling_rate=0.01, rounds=200, noise_multiplier=1.0, delta=DELTA
    )
    assert plan.flower_sampling_rate == 10 / 1050
    event = Mechanism.subsampled_gaussian(10 / 1050, 1.0, 200).dp_event
    assert plan.epsilon_flower == pytest.approx(RDPAccountant().epsilon([event], DELTA), rel=1e-9)
    assert plan.epsilon_flower < plan.epsilon_rdp


def test_privacy_event_is_one_subsampled_gaussian(pinned_plan):
    event = pinned_plan.privacy_event("DP-FedAvg model", {"run": "r1"})
    assert event.operation == "federated"
    assert len(event.mechanisms) == 1
    mechanism = event.mechanisms[0]
    assert mechanism.dp_event == Mechanism.subsampled_gaussian(0.1, 1.0, 100).dp_event
    assert mechanism.parameters["privacy_unit"] == "client"
    assert event.details["run"] == "r1"
    assert PLDAccountant().epsilon([event.dp_event], DELTA) == pinned_plan.epsilon
    assert Mechanism.from_dict(mechanism.to_dict()) == mechanism  # the ledger can store it


# ----------------------------------------------------------------------------- adaptive clipping


def test_adaptive_update_noise_composes_back_to_z():
    z, sigma_b = 1.0, 1.5
    z_delta = adaptive_update_noise(z, sigma_b)
    assert z_delta == pytest.approx((1 - 1 / 9) ** -0.5)
    # The two queries (updates with z_delta, centred count with 2 sigma_b) compose to exactly
    # one Gaussian with z: PLD of the pair against the closed form for z.
    pair = dp_event.ComposedDpEvent(
        [dp_event.GaussianDpEvent(z_delta), dp_event.GaussianDpEvent(2 * sigma_b)]
    )
    exact = gaussian_epsilon(z, DELTA)
    assert PLDAccountant().epsilon([pair], DELTA) == pytest.approx(exact, rel=1e-2)
    # Theorem 1's argument: one Gaussian on (update, count scaled by z_delta C / sigma_b),
    # noise z_delta C, sensitivity sqrt(C^2 + (z_delta C / (2 sigma_b))^2).
    clip = 3.0
    sensitivity = math.hypot(clip, 0.5 * z_delta * clip / sigma_b)
    assert z_delta * clip / sensitivity == pytest.approx(z)
    # More count noise costs the updates less; Flower's DP strategy uses the same formula.
    assert adaptive_update_noise(z, 1e6) == pytest.approx(z)
    from flwr.supercore.differential_privacy import compute_adaptive_noise_params

    assert compute_adaptive_noise_params(z, 30, sigma_b) == (sigma_b, pytest.approx(z_delta))


def test_adaptive_plan_is_accounted_at_z_and_noises_updates_with_z_delta():
    # q = 1 keeps the accountants fast; the accounting does not depend on q here.
    setting = {"population": 100, "sampling_rate": 1.0, "rounds": 10, "delta": DELTA}
    plan = plan_user_dp(**setting, noise_multiplier=1.0, adaptive=True)
    assert plan.count_noise_multiplier == 5.0  # expected clients / 20
    assert plan.update_noise_multiplier == pytest.approx((1 - 1 / 100) ** -0.5)
    assert plan.epsilon == plan_user_dp(**setting, noise_multiplier=1.0).epsilon
    mechanism = plan.privacy_event("adaptive").mechanisms[0]
    assert mechanism.parameters["update_noise_multiplier"] == plan.update_noise_multiplier
    assert mechanism.parameters["count_noise_multiplier"] == 5.0


def test_too_little_count_noise_is_refused():
    # 10 clients per round: sigma_b = 0.5, so 2 sigma_b = 1 <= z = 1.
    with pytest.raises(InvalidInputError, match="count") as info:
        plan_user_dp(
            population=100,
            sampling_rate=0.1,
            rounds=10,
            noise_multiplier=1.0,
            delta=DELTA,
            adaptive=True,
        )
    assert "clients per round" in str(info.value)


# ----------------------------------------------------------------------------- calibration


@pytest.mark.slow
def test_calibrated_noise_round_trips():
    rate, rounds, z0 = 0.02, 100, 1.0
    target = plan_user_dp(
        population=1000, sampling_rate=rate, rounds=rounds, noise_multiplier=z0, delta=DELTA
    ).epsilon
    z = calibrate_user_noise(target, DELTA, rate, rounds)
    pld = PLDAccountant()
    assert pld.epsilon([Mechanism.subsampled_gaussian(rate, z, rounds).dp_event], DELTA) <= target
    # the smallest to 1 %: 1 % less noise overshoots, so z lies in [z0, 1.01 z0]
    below = Mechanism.subsampled_gaussian(rate, z / 1.01, rounds).dp_event
    assert pld.epsilon([below], DELTA) > target
    assert z0 <= z <= 1.01 * z0


def test_unreachable_target_is_refused_with_the_knobs():
    with pytest.raises(InvalidInputError, match="out of reach") as info:
        calibrate_user_noise(0.01, DELTA, 1.0, 10_000)
    assert "fewer rounds" in str(info.value)


# ----------------------------------------------------------------------------- clipping


@settings(max_examples=40, deadline=None)
@given(
    update=hnp.arrays(
        np.float64,
        hnp.array_shapes(max_dims=2, max_side=6),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    clip=st.floats(1e-3, 1e3),
)
def test_clip_update_properties(update, clip):
    clipped, was_clipped = clip_update(update, clip)
    norm = float(np.linalg.norm(update))
    assert clipped.shape == update.shape
    assert clipped.dtype == np.float64
    assert clipped is not update
    assert float(np.linalg.norm(clipped)) <= clip
    assert was_clipped == (norm > clip)
    if not was_clipped:
        np.testing.assert_array_equal(clipped, update)
    else:  # same direction, norm at the clip
        np.testing.assert_allclose(clipped * norm / clip, update, rtol=1e-9, atol=1e-9)
        assert float(np.linalg.norm(clipped)) == pytest.approx(clip, rel=1e-12)
    again, clipped_again = clip_update(clipped, clip)  # idempotent
    np.testing.assert_array_equal(again, clipped)
    assert not clipped_again


@pytest.mark.parametrize(
    ("update", "clip"),
    [
        (np.array([1.0, np.nan]), 1.0),
        (np.array([np.inf]), 1.0),
        ([1.0, 2.0], 1.0),
        (np.array(["a"]), 1.0),
        (np.ones(3), 0.0),
        (np.ones(3), -1.0),
        (np.ones(3), float("nan")),
    ],
)
def test_clip_update_refuses(update, clip):
    with pytest.raises(InvalidInputError):
        clip_update(update, clip)


# ----------------------------------------------------------------------------- the server


@pytest.mark.parametrize("adaptive", [False, True])
def test_aggregate_noise_has_the_fixed_denominator_scale(seed, adaptive):
    z, clip, expected = 1.1, 2.0, 50.0
    aggregator = DPFedAvgAggregator(
        clip=clip,
        noise_multiplier=z,
        expected_clients=expected,
        adaptive=adaptive,
        noise=_noise(seed),
    )
    z_updates = adaptive_update_noise(z, expected / 20) if adaptive else z
    std = z_updates * clip / expected
    assert aggregator.noise_std == pytest.approx(std)
    # Zero signal: 7 clients answered, their clipped updates sum to 0; the average is pure noise.
    out = aggregator.aggregate(np.zeros(20_000), 3, participants=7)
    assert out.dtype == np.float64
    _ks_normal(out, std, "average of a zero sum")
    # ... and the test has the power to see a 10 % error of scale.
    assert ks_statistic(out, stats.norm(scale=1.1 * std).cdf) > ks_critical_value(out.size, ALPHA)


def test_secure_noise_has_its_scale():
    noise = GaussianNoise()
    assert noise.secure
    _ks_normal(noise.sample((100, 100), 3.0), 3.0, "secure GaussianNoise")


def test_average_divides_by_the_expected_clients_not_by_who_answered(seed):
    aggregator = DPFedAvgAggregator(
        clip=10.0, noise_multiplier=1e-9, expected_clients=50, noise=_noise(seed)
    )
    update = np.array([3.0, 4.0])
    out, stats_ = aggregator.aggregate_updates([update] * 30)
    np.testing.assert_allclose(out, 30 * update / 50, atol=1e-6)
    assert stats_ == {
        "round": 1,
        "clip": 10.0,
        "noise_std": pytest.approx(1e-9 * 10 / 50),
        "clients": 30,
        "clipped": 0,
    }


def test_aggregate_updates_clips_each_update(seed):
    aggregator = DPFedAvgAggregator(
        clip=1.0, noise_multiplier=1e-9, expected_clients=4, noise=_noise(seed)
    )
    updates = [np.array([3.0, 4.0]), np.array([0.3, 0.4]), np.array([0.0, -2.0])]
    out, stats_ = aggregator.aggregate_updates(updates)
    np.testing.assert_allclose(out, np.array([0.6 + 0.3, 0.8 + 0.4 - 1.0]) / 4, atol=1e-6)
    assert stats_["clipped"] == 2
    assert stats_["clip"] == 1.0


def test_count_noise_has_its_scale(seed):
    # Recover the noised fraction from each clip update, b~ = gamma - ln(C'/C) / eta, and test
    # b~ - true fraction against N(0, (sigma_b / m)^2).
    expected, rounds = 40.0, 500
    aggregator = DPFedAvgAggregator(
        clip=1.0,
        noise_multiplier=1.0,
        expected_clients=expected,
        adaptive=True,
        noise=_noise(seed),
    )
    errors = np.empty(rounds)
    for i in range(rounds):
        before = aggregator.clip
        aggregator.aggregate(np.zeros(1), 13, participants=30)  # centred count 13 - 15 = -2
        fraction = aggregator.target_quantile - math.log(aggregator.clip / before) / 0.2
        errors[i] = fraction - (-2 / expected + 0.5)
        assert aggregator.last_stats["unclipped_fraction"] == pytest.approx(fraction)
    _ks_normal(errors, 2.0 / expected, "noise on the unclipped fraction")  # sigma_b = 40 / 20


@pytest.mark.parametrize("initial_clip", [0.1, 30.0])
def test_adaptive_clip_finds_the_target_quantile(seed, initial_clip):
    # Update norms are lognormal with median 3; the clip should settle near the median.
    rng = np.random.default_rng(seed)
    population, rate, median, spread = 500, 0.1, 3.0, 0.5
    aggregator = DPFedAvgAggregator(
        clip=initial_clip,
        noise_multiplier=1.0,
        expected_clients=population * rate,
        adaptive=True,
        noise=_noise(seed),
    )
    fractions = []
    for _ in range(100):
        n = int(rng.binomial(population, rate))
        directions = rng.normal(size=(n, 4))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        norms = rng.lognormal(math.log(median), spread, n)
        aggregator.aggregate_updates(list(directions * norms[:, None]))
        # the true fraction of the population's norms within the new clip
        fractions.append(stats.norm.cdf(math.log(aggregator.clip / median) / spread))
    settled = np.mean(fractions[-40:])
    assert abs(settled - 0.5) < 0.1, f"unclipped fraction {settled:.3f}, target 0.5"


def test_adaptive_aggregate_needs_the_counts(seed):
    aggregator = DPFedAvgAggregator(
        clip=1.0, noise_multiplier=1.0, expected_clients=100, adaptive=True, noise=_noise(seed)
    )
    with pytest.raises(InvalidInputError, match="unclipped"):
        aggregator.aggregate(np.zeros(3))
    with pytest.raises(InvalidInputError, match="out of range"):
        aggregator.aggregate(np.zeros(3), 11, participants=10)
    with pytest.raises(InvalidInputError):
        aggregator.aggregate(np.zeros(3), float("nan"), participants=10)
    with pytest.raises(InvalidInputError, match="NaN"):
        aggregator.aggregate(np.array([np.nan]), 1, participants=1)
    with pytest.raises(InvalidInputError, match="no updates"):
        aggregator.aggregate_updates([])
    with pytest.raises(InvalidInputError, match="shape"):
        aggregator.aggregate_updates([np.zeros(2), np.zeros(3)])
    assert aggregator.rounds == 0
    aggregator.aggregate(np.zeros(3), 0, participants=0)  # nobody answered: pure noise
    assert aggregator.rounds == 1


def test_from_plan_matches_the_plan(seed):
    plan = plan_user_dp(
        population=100,
        sampling_rate=1.0,
        rounds=10,
        noise_multiplier=1.0,
        delta=DELTA,
        adaptive=True,
        count_noise_multiplier=2.0,
    )
    aggregator = DPFedAvgAggregator.from_plan(plan, clip=0.5, noise=_noise(seed))
    assert aggregator.update_noise_multiplier == plan.update_noise_multiplier
    assert aggregator.count_noise_multiplier == 2.0
    assert aggregator.expected_clients == 100
    assert aggregator.adaptive


# ----------------------------------------------------------------------------- local and distributed


@pytest.mark.parametrize(("z", "rounds"), [(2.0, 1), (10.0, 20)])
def test_local_epsilon_is_a_gaussian_with_half_the_multiplier(z, rounds):
    # Two clipped updates differ by up to 2C: noise z C is a Gaussian with multiplier z / 2.
    exact = gaussian_epsilon(z / 2, DELTA, rounds)
    local = local_dp_epsilon(z, rounds, DELTA)
    assert exact <= local + 1e-9
    assert local == pytest.approx(exact, rel=1e-2)


def test_local_dp_noises_and_counts_rounds(seed):
    clip, z = 2.0, 3.0
    client = LocalGaussianDP(clip=clip, noise_multiplier=z, noise=_noise(seed))
    out = client.privatize(np.zeros(20_000))
    _ks_normal(out, z * clip, "local noise on a zero update")
    # the noise is added to the clipped update (same seed, same stream)
    update = np.array([30.0, 40.0])
    replay = LocalGaussianDP(clip=clip, noise_multiplier=z, noise=_noise(seed))
    noise = _noise(seed).sample(2, z * clip)
    np.testing.assert_allclose(replay.privatize(update), clip_update(update, clip)[0] + noise)
    client.privatize(update)
    assert client.rounds == 2
    event = client.privacy_event("local DP client 7")
    assert event.operation == "federated"
    assert PLDAccountant().epsilon([event.dp_event], DELTA) == client.epsilon(DELTA)
    assert client.epsilon(DELTA) == local_dp_epsilon(z, 2, DELTA)
    mechanism = event.mechanisms[0]
    assert mechanism.parameters["sensitivity"] == 2 * clip
    assert Mechanism.from_dict(mechanism.to_dict()) == mechanism
    with pytest.raises(InvalidInputError):
        LocalGaussianDP(clip=1.0, noise_multiplier=1.0, noise=_noise(seed)).privacy_event("none")
    with pytest.raises(InvalidInputError, match="GaussianNoise"):
        LocalGaussianDP(clip=1.0, noise_multiplier=1.0, noise=np.random.default_rng(seed))


def test_distributed_noise_covers_the_central_noise():
    z, clip, expected, minimum = 1.0, 2.0, 100.0, 60
    std = distributed_noise_std(z, clip, expected, minimum)
    assert std == pytest.approx(z * clip / math.sqrt(minimum))
    for survivors in (minimum, 80, 100):
        assert survivors * std**2 >= (z * clip) ** 2 * (1 - 1e-12)
    with pytest.raises(InvalidInputError, match="min_clients"):
        distributed_noise_std(z, clip, expected, 101)
    with pytest.raises(InvalidInputError):
        distributed_noise_std(z, clip, expected, 0)


# ----------------------------------------------------------------------------- noise and refusals


def test_seeded_noise_warns_and_repeats(seed):
    first, second = _noise(seed), _noise(seed)
    assert not first.secure
    np.testing.assert_array_equal(first.sample((3, 2), 1.0), second.sample((3, 2), 1.0))
    assert first.sample(0, 1.0).shape == (0,)
    with pytest.raises(InvalidInputError):
        first.sample(3, 0.0)
    with pytest.raises(InvalidInputError):
        first.sample(-1, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        with pytest.raises(InvalidInputError):
            GaussianNoise("42")  # type: ignore[arg-type]


_PLAN = {
    "population": 1000,
    "sampling_rate": 0.1,
    "rounds": 10,
    "noise_multiplier": 1.0,
    "delta": DELTA,
}


@pytest.mark.parametrize(
    "change",
    [
        {"delta": None},
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": float("nan")},
        {"sampling_rate": 0.0},
        {"sampling_rate": 1.5},
        {"sampling_rate": float("nan")},
        {"sampling_rate": True},
        {"rounds": 0},
        {"rounds": 2.5},
        {"noise_multiplier": 0.0},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": float("inf")},
        {"population": 0},
        {"population": 5},  # 0.5 clients per round
        {"count_noise_multiplier": 5.0},  # without adaptive clipping
        {"adaptive": "yes"},
        {"adaptive": True, "count_noise_multiplier": 0.0},
    ],
)
def test_plan_refuses(change):
    with pytest.raises(InvalidInputError):
        plan_user_dp(**{**_PLAN, **change})


@pytest.mark.parametrize(
    "change",
    [
        {"clip": 0.0},
        {"noise_multiplier": float("nan")},
        {"expected_clients": 0},
        {"target_quantile": 1.0},
        {"clip_learning_rate": -0.1},
        {"count_noise_multiplier": 1.0},  # without adaptive clipping
        {"adaptive": True, "expected_clients": 10},  # sigma_b = 0.5 <= z / 2
        {"noise": object()},
    ],
)
def test_aggregator_refuses(change):
    arguments = {"clip": 1.0, "noise_multiplier": 1.0, "expected_clients": 100, **change}
    with pytest.raises(InvalidInputError):
        DPFedAvgAggregator(**arguments)


@pytest.mark.parametrize(
    ("arguments"),
    [(0.0, DELTA, 0.1, 10), (1.0, 0.0, 0.1, 10), (1.0, DELTA, 0.0, 10), (1.0, DELTA, 0.1, 0)],
)
def test_calibration_refuses(arguments):
    with pytest.raises(InvalidInputError):
        calibrate_user_noise(*arguments)


def test_updates_clipped_by_their_clients_are_counted_by_the_clients_bits(seed):
    # Clients clip to C before sending: every update then has norm C up to rounding, and
    # counting "norm <= C" on the server followed float rounding (the clip shrank while every
    # real norm was 80x above it). The clients' own bits say what the norms were.
    rng = np.random.default_rng(seed)
    clip, clients = 0.01, 12
    sent = [clip_update(rng.normal(size=650) * 0.03, clip)[0] for _ in range(clients)]
    aggregator = DPFedAvgAggregator(
        clip=clip,
        noise_multiplier=1.0,
        expected_clients=clients,
        adaptive=True,
        noise=_noise(seed),
    )
    aggregator.aggregate_updates(sent, unclipped=[0.0] * clients)
    # Every bit is 0: the noised fraction is N(0, (0.6 / 12)^2), 10 standard deviations below
    # the target 0.5, so the clip grows (type I error < 1e-20).
    assert aggregator.last_stats["unclipped_fraction"] < 0.5
    assert aggregator.clip > clip
    with pytest.raises(InvalidInputError, match="unclipped bits"):
        aggregator.aggregate_updates(sent, unclipped=[0.5] * clients)
    with pytest.raises(InvalidInputError, match="unclipped bits"):
        aggregator.aggregate_updates(sent, unclipped=[0.0])
