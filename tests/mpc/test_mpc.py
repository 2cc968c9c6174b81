"""Secret sharing and MPC: oracles against the plaintext result, uniform shares, dropouts, bad input.

Parties are real OS processes on localhost; a dropout is a party process that
kills itself with SIGKILL at a chosen phase (the runner's test-only ``_crash``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from veil.errors import InvalidInputError
from veil.mpc import (
    FixedPoint,
    PartyDroppedError,
    additive_reconstruct,
    additive_share,
    run_parties,
    secure_dot,
    secure_mean,
    secure_multiply,
    secure_sum,
    shamir_reconstruct,
    shamir_share,
)
from veil.mpc._sharing import (
    PRIME,
    beaver_finish,
    beaver_open_masks,
    beaver_triples,
    field_sum,
    mulmod,
    random_field,
)

ALPHA = 1e-6


def _chi_square_uniform(values: np.ndarray, bins: int, label: str) -> None:
    """Chi-square goodness of fit to the uniform distribution on ``bins`` cells, level ALPHA."""
    counts = np.bincount(values.astype(np.int64), minlength=bins)
    statistic = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
    critical = float(stats.chi2.isf(ALPHA, bins - 1))
    assert statistic < critical, (
        f"{label}: chi-square {statistic:.1f} >= {critical:.1f}; shares look non-uniform "
        f"(type I error <= {ALPHA:g})"
    )


# ---------------------------------------------------------------- primitives


def test_mulmod_matches_python_integers(seed):
    rng = np.random.default_rng(seed)
    a = random_field(5000, seed=rng)
    b = random_field(5000, seed=rng)
    edges = np.array([0, 1, 2, PRIME - 1, PRIME - 2, (1 << 32) - 1, 1 << 32, 1 << 60], np.uint64)
    a, b = np.concatenate([a, edges, edges]), np.concatenate([b, edges, edges[::-1]])
    expected = [int(x) * int(y) % PRIME for x, y in zip(a, b, strict=True)]
    assert mulmod(a, b).tolist() == expected
    assert int(field_sum(a)) == sum(int(x) for x in a) % PRIME


def test_fixed_point_round_trip_within_half_resolution(seed):
    values = np.random.default_rng(seed).uniform(-1e6, 1e6, 10_000)
    for domain in ("ring", "field"):
        fixed = FixedPoint(16, domain)
        decoded = fixed.decode(fixed.encode(values))
        assert np.abs(decoded - values).max() <= fixed.resolution / 2
    integers = np.array([-(2**40), -1, 0, 7, 2**40])
    assert FixedPoint(0).decode(FixedPoint(0).encode(integers)).tolist() == integers.tolist()


def test_additive_and_shamir_reconstruct_from_any_threshold_subset(seed):
    fixed = FixedPoint(16)
    secret = fixed.encode([3.25, -7.5, 0.0])
    shares = additive_share(secret, 4)
    assert fixed.decode(additive_reconstruct(shares)).tolist() == [3.25, -7.5, 0.0]
    field = FixedPoint(16, "field")
    secret = field.encode([3.25, -7.5, 0.0])
    shares = shamir_share(secret, 5, 3)
    for subset in ([0, 1, 2], [0, 2, 4], [1, 3, 4], [4, 3, 2, 1, 0]):
        got = shamir_reconstruct(shares[subset], [i + 1 for i in subset])
        assert field.decode(got).tolist() == [3.25, -7.5, 0.0]
    # t - 1 shares interpolate to something else (a uniform element), not the secret
    assert shamir_reconstruct(shares[[0, 1]], [1, 2]).tolist() != secret.tolist()
    # seeded shares (tests only) are reproducible
    assert (additive_share(secret, 3, seed=seed) == additive_share(secret, 3, seed=seed)).all()


def test_any_n_minus_1_additive_shares_are_uniform():
    """Shares of one constant secret: the top and bottom bytes of n-1 shares are uniform, pairs too."""
    secret = np.full(200_000, FixedPoint(16).encode([42.0])[0], dtype=np.uint64)
    shares = additive_share(secret, 3)  # the real CSPRNG path (os.urandom)
    for party in (0, 1, 2):  # any n - 1 = 2 of the 3 shares
        _chi_square_uniform(shares[party] >> np.uint64(56), 256, f"top byte, party {party}")
        _chi_square_uniform(shares[party] & np.uint64(255), 256, f"low byte, party {party}")
    for first, second in ((0, 1), (0, 2), (1, 2)):
        joint = ((shares[first] >> np.uint64(60)) << np.uint64(4)) | (
            shares[second] >> np.uint64(60)
        )
        _chi_square_uniform(joint, 256, f"joint top nibbles, parties {first},{second}")


def test_any_t_minus_1_shamir_shares_are_uniform():
    secret = np.full(200_000, FixedPoint(16, "field").encode([42.0])[0], dtype=np.uint64)
    shares = shamir_share(secret, 4, 3)
    for party in range(4):  # each share alone and every pair (t - 1 = 2) is uniform
        _chi_square_uniform(shares[party] >> np.uint64(53), 256, f"top byte, party {party}")
        _chi_square_uniform(shares[party] & np.uint64(255), 256, f"low byte, party {party}")
    for first, second in ((0, 1), (1, 3), (2, 3)):
        joint = ((shares[first] >> np.uint64(57)) << np.uint64(4)) | (
            shares[second] >> np.uint64(57)
        )
        _chi_square_uniform(joint, 256, f"joint top nibbles, parties {first},{second}")


@pytest.mark.parametrize("domain", ["ring", "field"])
def test_beaver_multiplication_on_shares(domain, seed):
    rng = np.random.default_rng(seed)
    fixed = FixedPoint(16, domain)  # type: ignore[arg-type]
    x, y = rng.uniform(-100, 100, 1000), rng.uniform(-100, 100, 1000)
    n, t = 3, 2
    if domain == "ring":
        xs, ys = additive_share(fixed.encode(x), n), additive_share(fixed.encode(y), n)
        a, b, c = beaver_triples(1000, n, domain="ring")
        masks = [beaver_open_masks(xs[i], ys[i], a[i], b[i], domain="ring") for i in range(n)]
        d = additive_reconstruct([m[0] for m in masks])
        e = additive_reconstruct([m[1] for m in masks])
        z = [
            beaver_finish(d, e, a[i], b[i], c[i], domain="ring", add_constant=i == 0)
            for i in range(n)
        ]
        product = additive_reconstruct(z)
    else:
        xs, ys = shamir_share(fixed.encode(x), n, t), shamir_share(fixed.encode(y), n, t)
        a, b, c = beaver_triples(1000, n, domain="field", threshold=t)
        masks = [beaver_open_masks(xs[i], ys[i], a[i], b[i], domain="field") for i in range(n)]
        d = shamir_reconstruct([m[0] for m in masks[:t]], [1, 2])
        e = shamir_reconstruct([m[1] for m in masks[1:]], [2, 3])
        z = [
            beaver_finish(d, e, a[i], b[i], c[i], domain="field", add_constant=True)
            for i in range(n)
        ]
        product = shamir_reconstruct(z[1:], [2, 3])
    exact = fixed.decode(fixed.encode(x)) * fixed.decode(fixed.encode(y))
    assert np.abs(fixed.decode(product, frac_bits=32) - exact).max() < 1e-9


# ---------------------------------------------------------------- protocols, real processes


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["additive", "shamir"])
def test_secure_sum_and_mean_equal_the_plaintext(protocol, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.uniform(-500, 500, size) for size in (100, 40, 7)]
    result = secure_sum(parts, protocol=protocol)
    assert result.contributors == (0, 1, 2) and result.dropped == {}
    n_values = sum(p.size for p in parts)
    # each value is rounded to within half the resolution 2^-16
    assert abs(result.value - np.concatenate(parts).sum()) <= n_values * result.resolution / 2
    assert result.total_bytes > 0 and set(result.bytes_sent) == {"0", "1", "2"}
    if protocol == "additive":
        integers = [rng.integers(-(10**12), 10**12, 50) for _ in range(3)]
        exact = secure_sum(integers, frac_bits=0)
        assert exact.value == float(np.concatenate(integers).sum())  # integers: exact
    else:
        mean = secure_mean(parts, protocol=protocol)
        assert mean.count == n_values
        assert abs(mean.value - np.concatenate(parts).mean()) <= result.resolution / 2


@pytest.mark.slow
def test_a_party_without_values_counts_no_values():
    """Regression: a party with no input once counted the others' number of values."""
    assert secure_mean([[1.0, 2.0, 3.0], None]).value == pytest.approx(2.0, abs=1e-4)
    assert secure_mean([[1.0, 2.0, 3.0], None, [5.0]]).value == pytest.approx(2.75, abs=1e-4)
    with pytest.raises(InvalidInputError, match="element-wise mean"):
        run_parties("mean", [[1.0, 2.0], None], elementwise=True)


@pytest.mark.slow
def test_elementwise_sum_and_weighted_mean():
    vectors = [np.arange(5.0), np.full(5, 0.25), -np.arange(5.0) / 2]
    result = secure_sum(vectors, elementwise=True, protocol="shamir", threshold=3)
    assert np.abs(result.value - sum(vectors)).max() <= 3 * result.resolution / 2
    values, weights = [[1.0, 2.0], [3.0, 10.0]], [[1.0, 3.0], [2.0, 0.5]]
    weighted = secure_mean(values, weights)
    flat_v, flat_w = np.concatenate(values), np.concatenate(weights)
    assert weighted.value == pytest.approx((flat_v * flat_w).sum() / flat_w.sum(), abs=1e-4)


@pytest.mark.slow
def test_dot_product_and_multiplication_with_beaver_triples(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-20, 20, 200), rng.uniform(-20, 20, 200)
    fixed = FixedPoint(16)
    rounded_x, rounded_y = fixed.decode(fixed.encode(x)), fixed.decode(fixed.encode(y))
    # vertical split: party 0 holds x, party 1 holds y, party 2 holds nothing
    dot = secure_dot([x, None, None], [None, y, None])
    assert dot.value == pytest.approx(rounded_x @ rounded_y, abs=1e-6)  # exact on the encodings
    assert "dealer" in dot.bytes_sent and dot.bytes_sent["dealer"] >= 3 * 3 * 200 * 8
    # Shamir 2-of-3, with X and Y themselves split over the parties
    product = secure_multiply(
        [x[:50], x[:50], None], [y[:50], None, None], protocol="shamir", threshold=2
    )
    assert np.abs(product.value - 2 * rounded_x[:50] * rounded_y[:50]).max() < 1e-6


@pytest.mark.slow
def test_shamir_recovers_from_a_killed_party():
    parts = [[1.0, 2.0], [10.0], [100.0]]
    # killed after sending its shares: the other two reconstruct everything, its input included
    late = run_parties("sum", parts, protocol="shamir", threshold=2, _crash={2: "input"})
    assert late.value == 113.0 and late.contributors == (0, 1, 2) and 2 in late.dropped
    # killed before sharing: the result is the survivors' sum, and says whose input it holds
    early = run_parties("sum", parts, protocol="shamir", threshold=2, _crash={1: "start"})
    assert early.value == 103.0 and early.contributors == (0, 2) and 1 in early.dropped
    dot = run_parties(
        "dot",
        [[1.0, 2.0], None, None],
        second=[None, [3.0, 4.0], None],
        protocol="shamir",
        threshold=2,
        _crash={2: "input"},
    )
    assert dot.value == 11.0


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["start", "input"])
def test_additive_dropout_is_a_clear_error_naming_the_party(phase):
    with pytest.raises(PartyDroppedError, match="party 1") as caught:
        run_parties("sum", [[1.0], [2.0], [3.0]], _crash={1: phase}, timeout=60)
    assert caught.value.details["dropped"] == [1]
    assert "3-of-3" in str(caught.value)
    # Noticed from the closed or refused socket, not from a timeout (60 s here): reading from it
    # (link closed), connecting to it, or writing to it (a broken pipe), whichever comes first.
    assert caught.value.details["reasons"]["1"].startswith(
        ("link closed", "connection failed", "send failed")
    )


@pytest.mark.slow
def test_shamir_below_threshold_is_an_error():
    with pytest.raises(PartyDroppedError, match="Shamir 3-of-3 needs 3"):
        run_parties(
            "sum", [[1.0], [2.0], [3.0]], protocol="shamir", threshold=3, _crash={0: "input"}
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values_per_party": [[1.0, float("nan")], [2.0]]}, "NaN or infinite"),
        ({"values_per_party": [[1.0], [float("inf")]]}, "NaN or infinite"),
        ({"values_per_party": [[1e15], [1.0]]}, "out of the fixed-point range"),
        (
            {"values_per_party": [[1e13], [1.0]], "protocol": "shamir"},
            "out of the fixed-point range",
        ),
        ({"values_per_party": [[1.0]]}, "at least 2 parties"),
        ({"values_per_party": [[1.0], [2.0]], "protocol": "shamir", "threshold": 3}, "threshold"),
        ({"values_per_party": [[1.0], [2.0]], "protocol": "shamir", "threshold": 1}, "threshold"),
        ({"values_per_party": [[1.0], [2.0]], "threshold": 1}, "additive sharing has no threshold"),
        ({"values_per_party": [[1.0], [2.0]], "protocol": "yao"}, "unknown MPC protocol"),
        ({"values_per_party": [[1.0], [2.0]], "frac_bits": 40}, "frac_bits"),
        ({"values_per_party": [[1.0], [2.0, 3.0]], "elementwise": True}, "differ in length"),
    ],
)
def test_bad_input_is_refused_up_front(kwargs, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        secure_sum(**kwargs)
    assert caught.value.fix


def test_bad_input_in_a_party_file_is_reported_by_that_party(tmp_path: Path):
    np.save(tmp_path / "bad.npy", np.array([1.0, np.inf]))
    with pytest.raises(InvalidInputError, match="party 0's values contain NaN"):
        secure_sum([tmp_path / "bad.npy", [1.0]])
    with pytest.raises(InvalidInputError, match="out of the fixed-point range"):
        secure_dot([np.full(10, 1e6), None], [None, np.ones(10)])
