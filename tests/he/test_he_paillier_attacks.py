"""Paillier scoring attacked by a malicious client: huge or malformed keys, oversized
requests, and the packing query that reads every weight out of one score.

Each test performs the attack with real python-paillier keys and ciphertexts.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

pytest.importorskip("phe")

from phe import paillier
from phe.util import getprimeover

from veil.errors import InvalidInputError
from veil.he import PaillierClient, paillier_linear, paillier_sum
from veil.he._paillier import _key_id

_WEIGHT_SCALE = 16**10  # the server encodes weights at base-16 exponent -10


@pytest.fixture(scope="module")
def client() -> PaillierClient:
    return PaillierClient.generate(2048)


def _forged(n: int, features: int, exponent: int = -5) -> tuple[bytes, bytes]:
    """A public key with modulus ``n`` and a request of ``features`` ciphertexts under it.

    The ciphertexts are random numbers below ``n^2``: well formed, and made without any
    exponentiation, so a 65,536-bit key costs the attacker nothing.
    """
    rng = random.Random(n)  # noqa: S311 - not-private: forged test ciphertexts
    public = json.dumps({"kind": "paillier-public", "n": format(n, "x")}).encode()
    values = [
        [format(rng.getrandbits(2 * n.bit_length() - 2) | 1, "x"), exponent]
        for _ in range(features)
    ]
    request = {"kind": "paillier-request", "key_id": _key_id(n), "values": values}
    return public, json.dumps(request).encode()


def _odd_modulus(bits: int) -> int:
    rng = random.Random(bits)  # noqa: S311 - not-private: a forged modulus
    return rng.getrandbits(bits) | (1 << (bits - 1)) | 1


@pytest.mark.parametrize("bits", [8192, 16384, 65536])
def test_a_huge_modulus_is_refused_before_any_work(bits: int) -> None:
    # the attack: a 65,536-bit key made one 4-feature score cost 243 s
    public, request = _forged(_odd_modulus(bits), features=4)
    with pytest.raises(InvalidInputError, match="modulus") as refused:
        paillier_linear(public, request, np.ones((1, 4)), 0.5)
    assert str(bits) in str(refused.value)
    assert "4096" in str(refused.value)
    with pytest.raises(InvalidInputError, match="modulus"):
        paillier_sum(public, [request])


def test_the_allowed_range_is_a_setting_and_is_itself_bounded(client: PaillierClient) -> None:
    request = client.encrypt([1.0, 2.0])
    for setting in (1536, 10**6):  # below the 2048-bit floor; beyond the 16384-bit ceiling
        with pytest.raises(InvalidInputError, match="max_bits"):
            paillier_linear(client.public_bytes(), request, [1.0, 1.0], 0.0, max_bits=setting)
    with pytest.raises(InvalidInputError, match="too large"):
        PaillierClient.generate(65536)


@pytest.mark.parametrize(
    ("modulus", "reason"),
    [
        (_odd_modulus(3072) + 1, "odd"),  # even: p = 2
        (3 * _odd_modulus(3070), "small prime factor"),
        (getprimeover(1536) ** 2, "square"),  # p = q
    ],
    ids=["even", "small-factor", "square"],
)
def test_a_malformed_modulus_is_refused(modulus: int, reason: str) -> None:
    public, request = _forged(modulus, features=2)
    with pytest.raises(InvalidInputError, match=reason):
        paillier_linear(public, request, [1.0, 1.0], 0.0)


def test_an_oversized_request_is_refused_before_any_work(client: PaillierClient) -> None:
    # 4,097 ciphertexts under an honest key: paillier_sum used to add and re-randomise them all
    public, request = _forged(client.public.n, features=4097)
    with pytest.raises(InvalidInputError, match="4096"):
        paillier_sum(public, [request])
    with pytest.raises(InvalidInputError, match="4096"):
        paillier_linear(public, request, np.ones((1, 4097)), 0.0)


def _packing_query(client: PaillierClient, features: int, block: int) -> bytes:
    """Feature ``i`` is the integer ``2^(block (i+1))`` at exponent -5: every weight lands in
    its own ``block``-bit field of one score."""
    public = client.public
    numbers = [
        public.encrypt(paillier.EncodedNumber(public, 1 << (block * (i + 1)), -5))
        for i in range(features)
    ]
    values = [[format(e.ciphertext(), "x"), e.exponent] for e in numbers]
    request = {"kind": "paillier-request", "key_id": client.key_id, "values": values}
    return json.dumps(request).encode()


def _unpack_weights(client: PaillierClient, plain: int, features: int, block: int) -> np.ndarray:
    """Signed base-``2^block`` digits of the decrypted score, above the bias field."""
    n = client.public.n
    value = plain - n if plain > n // 2 else plain
    digits = []
    for _ in range(features + 1):
        digit = value % (1 << block)
        if digit >= 1 << (block - 1):
            digit -= 1 << block
        digits.append(digit)
        value = (value - digit) >> block
    return np.array(digits[1:], dtype=np.float64) / _WEIGHT_SCALE


def _raw_plaintext(client: PaillierClient, response: bytes) -> int:
    payload = json.loads(response)
    ciphertext, exponent = payload["values"][0]
    number = paillier.EncryptedNumber(client.public, int(ciphertext, 16), int(exponent))
    return int(client._private.decrypt_encoded(number).encoding)


def test_one_packed_query_reads_every_weight_of_an_unmasked_score(
    client: PaillierClient, seed: int
) -> None:
    # the documented leak: without a declared input bound, one query returns all 20 weights (a 2048-bit key holds 31 fields of 64 bits)
    rng = np.random.default_rng(seed)
    weights, block = rng.normal(size=20), 64
    response = paillier_linear(
        client.public_bytes(), _packing_query(client, 20, block), weights, 0.7
    )
    stolen = _unpack_weights(client, _raw_plaintext(client, response), 20, block)
    np.testing.assert_allclose(stolen, weights, atol=2.0**-39)


def test_a_declared_input_bound_masks_the_packed_query(client: PaillierClient, seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights, block = rng.normal(size=20), 64
    query = _packing_query(client, 20, block)
    # the query is encoded at exponent -5, the honest one: the server cannot see its size
    response = paillier_linear(
        client.public_bytes(), query, weights, 0.7, input_bound=1.0, input_precision=1e-6
    )
    payload = json.loads(response)
    modulus = int(payload["masks"][0], 16)
    plain = _raw_plaintext(client, response)
    # the best the attacker can do: the residue modulo the published mask modulus, which is
    # no wider than an honest score at that precision ...
    assert modulus.bit_length() <= 64 + math.ceil(math.log2(np.sum(np.abs(weights)) + 1)) + 2
    for candidate in (plain, plain % modulus):
        stolen = _unpack_weights(client, candidate, 20, block)
        # ... so at most the first field of weights could survive; the rest are noise
        assert np.sum(np.isclose(stolen, weights, atol=1e-6)) <= 1
    # and the same query twice gives unrelated plaintexts (the mask is fresh each time)
    again = paillier_linear(
        client.public_bytes(), query, weights, 0.7, input_bound=1.0, input_precision=1e-6
    )
    assert _raw_plaintext(client, again) != plain


def test_masked_scores_still_decrypt_exactly_for_honest_inputs(
    client: PaillierClient, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=6)
    weight, bias = rng.normal(size=(3, 6)), rng.normal(size=3)
    request = client.encrypt(x, bound=1.0)
    result = paillier_linear(client.public_bytes(), request, weight, bias, input_bound=1.0)
    np.testing.assert_allclose(client.decrypt(result), weight @ x + bias, atol=1e-5)


def test_a_query_at_another_precision_is_refused_when_masking(client: PaillierClient) -> None:
    # the mask is sized for the declared precision; a finer exponent would widen it
    request = client.encrypt([0.5, 0.25], precision=1e-12)
    with pytest.raises(InvalidInputError, match="exponent"):
        paillier_linear(client.public_bytes(), request, [1.0, 1.0], 0.0, input_bound=1.0)


def test_an_out_of_range_input_is_refused_by_the_client(client: PaillierClient) -> None:
    with pytest.raises(InvalidInputError, match="range"):
        client.encrypt([0.5, 2.0], bound=1.0)
