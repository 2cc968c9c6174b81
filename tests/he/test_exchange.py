"""An exchange through files, as library calls: inputs, secret keys of either scheme, responses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")
pytest.importorskip("phe")
torch = pytest.importorskip("torch")

from veil.errors import InvalidInputError, NotFoundError  # noqa: E402
from veil.he import (  # noqa: E402 - after the skips
    HEClient,
    HEProgram,
    PaillierClient,
    client_from_bytes,
    compile_model,
    load_inputs,
    poly_activation,
    respond,
)


@pytest.fixture(scope="module")
def linear() -> tuple[HEProgram, np.ndarray]:
    torch.manual_seed(3)
    inputs = np.random.default_rng(3).uniform(-1, 1, size=(32, 5))
    return compile_model(torch.nn.Linear(5, 2), calibration=inputs), inputs


@pytest.fixture(scope="module")
def paillier() -> PaillierClient:
    return PaillierClient.generate(2048)


def test_inputs_from_npy_and_csv_are_scaled(tmp_path: Path) -> None:
    values = np.arange(6.0).reshape(2, 3)
    np.save(tmp_path / "x.npy", values)
    np.savetxt(tmp_path / "x.csv", values, delimiter=",")
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.npy", 2.0), values / 2)
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.csv"), values)


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="input not found"):
        load_inputs(tmp_path / "missing.npy")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="unknown input format"):
        load_inputs(tmp_path / "x.json")
    (tmp_path / "x.csv").write_text("1,a\n")
    with pytest.raises(InvalidInputError, match="not a numeric array"):
        load_inputs(tmp_path / "x.csv")


def test_a_secret_key_opens_as_its_scheme(linear, paillier: PaillierClient) -> None:
    program, _ = linear
    ckks = HEClient.generate(program.plan())
    assert isinstance(client_from_bytes(ckks.to_bytes()), HEClient)
    opened = client_from_bytes(paillier.to_bytes())
    assert isinstance(opened, PaillierClient)
    assert opened.key_id == paillier.key_id


def test_responses_of_both_schemes_equal_the_plaintext(linear, paillier: PaillierClient) -> None:
    program, inputs = linear
    x = inputs[0]
    expected = program.forward(x)[0]
    score = paillier.decrypt(respond(program, paillier.public_bytes(), paillier.encrypt(x)))
    np.testing.assert_allclose(score, expected, atol=1e-4)
    ckks = HEClient.generate(program.plan())
    answer = ckks.decrypt(respond(program, ckks.public_context(), ckks.encrypt(x), workers=1))
    np.testing.assert_allclose(answer[0], expected, atol=1e-3)


def test_paillier_is_refused_what_it_cannot_do(linear, paillier: PaillierClient) -> None:
    program, inputs = linear
    request = paillier.encrypt(inputs[0])
    with pytest.raises(InvalidInputError, match="apply to CKKS responses"):
        respond(program, paillier.public_bytes(), request, rerandomize=True)
    torch.manual_seed(4)
    deep = torch.nn.Sequential(torch.nn.Linear(5, 3), poly_activation(), torch.nn.Linear(3, 2))
    with pytest.raises(InvalidInputError, match="linear models only"):
        respond(compile_model(deep, calibration=inputs), paillier.public_bytes(), request)
