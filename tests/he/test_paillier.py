"""Paillier: encrypted linear scores and sums equal the plaintext; keys and tampering are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("phe")

from veil.errors import InvalidInputError
from veil.he import PaillierClient, paillier_linear, paillier_sum


@pytest.fixture(scope="module")
def client() -> PaillierClient:
    return PaillierClient.generate(2048)


def test_linear_scores_equal_the_plaintext(client: PaillierClient, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=6)
    weight, bias = rng.normal(size=(2, 6)), rng.normal(size=2)
    request = client.encrypt(x, precision=1e-9)
    result = paillier_linear(client.public_bytes(), request, weight, bias)
    np.testing.assert_allclose(client.decrypt(result), weight @ x + bias, atol=1e-6)
    # the server's result is re-randomised: the same computation twice gives other ciphertexts
    again = paillier_linear(client.public_bytes(), request, weight, bias)
    assert json.loads(result)["values"] != json.loads(again)["values"]


def test_sums_over_several_owners_equal_the_plaintext(client: PaillierClient, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.uniform(-100, 100, size=(3, 4))
    requests = [client.encrypt(row) for row in values]
    total = client.decrypt(paillier_sum(client.public_bytes(), requests))
    np.testing.assert_allclose(total, values.sum(axis=0), atol=1e-5)


def test_keys_round_trip_and_small_moduli_are_refused(client: PaillierClient) -> None:
    again = PaillierClient.from_bytes(client.to_bytes())
    assert again.key_id == client.key_id
    assert client.decrypt(again.encrypt([1.5]))[0] == pytest.approx(1.5)
    with pytest.raises(InvalidInputError, match="too small"):
        PaillierClient.generate(1024)
    assert b'"p"' not in client.public_bytes()


def test_other_keys_and_tampering_are_refused(client: PaillierClient) -> None:
    other = PaillierClient.generate(2048)
    request = client.encrypt([1.0, 2.0])
    with pytest.raises(InvalidInputError, match="another key"):
        paillier_linear(other.public_bytes(), request, [1.0, 1.0], 0.0)
    with pytest.raises(InvalidInputError, match="another key"):
        other.decrypt(request)
    forged = json.loads(request)
    forged["values"][0][0] = format(client.public.nsquare + 5, "x")
    with pytest.raises(InvalidInputError, match="out of range"):
        client.decrypt(json.dumps(forged).encode())
    with pytest.raises(InvalidInputError, match="does not fit"):
        paillier_linear(client.public_bytes(), request, [1.0, 2.0, 3.0], 0.0)
    with pytest.raises(InvalidInputError, match="finite"):
        client.encrypt([np.nan])
    with pytest.raises(InvalidInputError, match="not a Paillier"):
        client.decrypt(b"{}")


def test_results_do_not_reveal_the_size_of_a_weight(client: PaillierClient) -> None:
    request = client.encrypt([1.0, 2.0])
    tiny = json.loads(paillier_linear(client.public_bytes(), request, [[1e-9, 3.0]], 1e-7))
    large = json.loads(paillier_linear(client.public_bytes(), request, [[5.0, 3.0]], 2.0))
    assert tiny["values"][0][1] == large["values"][0][1]  # one exponent, whatever the weights
    forged = json.loads(request)
    forged["values"][0][1] = -(10**9)
    with pytest.raises(InvalidInputError, match="exponent"):
        paillier_linear(client.public_bytes(), json.dumps(forged).encode(), [1.0, 1.0], 0.0)
