"""Re-randomised and noise-flooded CKKS responses: the server-side mitigation
against a client that reads the weights from a response's components and error.

Real TenSEAL keys. The flooding noise comes from ``os.urandom`` (it cannot be seeded), so
its tests are statistical with a declared false-failure rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("tenseal")
torch = pytest.importorskip("torch")

from veil.errors import InvalidInputError  # noqa: E402
from veil.he import (  # noqa: E402 - after the skips
    HEClient,
    HEProgram,
    HEServer,
    compile_model,
    error_bound,
    poly_activation,
)
from veil.he._ckks import pack, unpack  # noqa: E402 - to read and forge envelopes
from veil.he._seal import load_object  # noqa: E402

ALPHA = 1e-6  # per statistical assertion
SIGMA = 1e-2  # flooding noise in the outputs' units (outputs here are within +-6.4)


@pytest.fixture(scope="module")
def program() -> HEProgram:
    # the model of test_he_ckks_attacks.py
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), poly_activation(), torch.nn.Linear(5, 3))
    inputs = np.random.default_rng(5).uniform(-1, 1, size=(50, 6))
    return compile_model(model, calibration=inputs)


@pytest.fixture(scope="module")
def client(program: HEProgram) -> HEClient:
    return HEClient.generate(program.plan())


def _old_context(client: HEClient) -> bytes:
    """A public context as earlier versions wrote it: no public key section."""
    meta, sections = unpack(client.public_context(), "context")
    assert meta["public_key"] is True
    header = {k: v for k, v in meta.items() if k not in ("kind", "sizes", "sha256", "public_key")}
    return pack("context", header, sections[:-1])


def _spread_bounds(n: int, bias: float) -> tuple[float, float]:
    """Bounds on the RMS of ``n`` draws of N(0, SIGMA^2) shifted by at most ``bias`` each,
    violated with probability <= ALPHA (chi-square with n degrees of freedom, two-sided)."""
    low = SIGMA * math.sqrt(stats.chi2.ppf(ALPHA / 2, n) / n)
    high = SIGMA * math.sqrt(stats.chi2.isf(ALPHA / 2, n) / n)
    return low - bias, high + bias


def _mean_bound(n: int, bias: float) -> float:
    """|mean| of ``n`` such draws stays below this with probability >= 1 - ALPHA."""
    return float(stats.norm.isf(ALPHA / 2)) * SIGMA / math.sqrt(n) + bias


@pytest.mark.slow
def test_rerandomised_responses_differ_yet_decrypt_to_the_model_output(
    program: HEProgram, client: HEClient, seed: int
) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, size=6)
    request = client.encrypt(x)
    plain = HEServer(program, client.public_context(), workers=1)
    # without the option the leak is still there: the same request gives the same bytes
    assert plain.infer(request) == plain.infer(request)
    server = HEServer(program, client.public_context(), workers=1, rerandomize=True)
    first, second = server.infer(request), server.infer(request)
    assert first != second
    bound = error_bound(program, client.plan)
    for response in (first, second):
        np.testing.assert_allclose(client.decrypt(response), program.forward(x[None]), atol=bound)
    # the batch layout too
    rows = np.random.default_rng(seed).uniform(-1, 1, size=(4, 6))
    batch = client.encrypt(rows, layout="batch")
    one, two = server.infer(batch), server.infer(batch)
    assert one != two
    np.testing.assert_allclose(
        client.decrypt(one),
        program.forward(rows),
        atol=error_bound(program, client.plan, layout="batch"),
    )


def _slots(client: HEClient, response: bytes) -> np.ndarray:
    """Every complex slot of every response ciphertext, as the secret key holder sees them."""
    ctx = client._ctx
    rows = []
    for section in unpack(response, "response")[1]:
        plain = ctx.api.Plaintext()
        client._decryptor.decrypt(load_object("Ciphertext", ctx.context, section), plain)
        rows.append(np.asarray(ctx.encoder.decode_complex(plain)))
    return np.stack(rows)


def _assert_gaussian(deviations: np.ndarray, bias: float, what: str) -> None:
    """The RMS and the mean of ``deviations`` agree with N(0, SIGMA^2) up to ``bias`` each."""
    n = deviations.size
    rms = float(np.sqrt(np.mean(deviations**2)))
    low, high = _spread_bounds(n, bias)
    assert low <= rms <= high, (
        f"RMS {rms:.6g} of {n} {what} outside [{low:.6g}, {high:.6g}] for sigma {SIGMA} "
        f"(type I error <= {ALPHA})"
    )
    mean = float(np.mean(deviations))
    assert abs(mean) <= _mean_bound(n, bias), (
        f"mean {mean:.3g} of {n} {what} (type I error <= {ALPHA})"
    )


def test_flooding_adds_noise_of_the_chosen_spread_in_the_batch_layout(
    program: HEProgram, client: HEClient, seed: int
) -> None:
    # zero the signal: the same input in every slot, deviations from the plaintext output
    x = np.random.default_rng(seed).uniform(-1, 1, size=6)
    count = client.plan.poly_modulus_degree // 2
    rows = np.tile(x, (count, 1))
    server = HEServer(program, client.public_context(), workers=1, flood_sigma=SIGMA)
    response = server.infer(client.encrypt(rows, layout="batch"))
    expected = program.forward(rows)
    bias = error_bound(program, client.plan, layout="batch")
    assert bias < SIGMA / 1000  # the test's sigma is far above the CKKS error it masks
    # what the client gets: every input's outputs carry independent noise of spread SIGMA
    _assert_gaussian(client.decrypt(response) - expected, bias, "flooded outputs")
    # what a client with the secret key sees: the imaginary parts are flooded too
    slots = _slots(client, response)
    _assert_gaussian(slots.imag, bias, "imaginary parts of flooded slots")


def test_flooding_in_the_vector_layout_floods_every_copy(
    program: HEProgram, client: HEClient, seed: int
) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, size=6)
    request = client.encrypt(x)
    server = HEServer(program, client.public_context(), workers=1, flood_sigma=SIGMA)
    period = 4  # three outputs, rounded up to a power of two
    copies = client.plan.poly_modulus_degree // 2 // period
    expected = np.zeros(period)
    expected[:3] = program.forward(x[None])[0]
    bias = error_bound(program, client.plan)
    real, imag = [], []
    for _ in range(3):  # repeated identical requests
        response = server.infer(request)
        slots = _slots(client, response)[0]
        real.append(slots.real - np.tile(expected, copies))
        imag.append(slots.imag)
        # the client's median over the copies: spread about 1.25 SIGMA / sqrt(copies) = 0.04
        # SIGMA here, so SIGMA / 2 is over ten of its standard deviations
        np.testing.assert_allclose(client.decrypt(response)[0], expected[:3], atol=SIGMA / 2)
    _assert_gaussian(np.concatenate(real), bias, "real parts of flooded slots")
    _assert_gaussian(np.concatenate(imag), bias, "imaginary parts of flooded slots")


def test_a_context_without_a_public_key_is_refused_for_flooding(
    program: HEProgram, client: HEClient
) -> None:
    old = _old_context(client)
    for options in ({"rerandomize": True}, {"flood_sigma": SIGMA}):
        with pytest.raises(InvalidInputError, match="no public key") as refused:
            HEServer(program, old, workers=1, **options)  # type: ignore[arg-type]
        assert "public_context()" in str(refused.value)
    # an old context still serves without the options
    x = np.full(6, 0.25)
    np.testing.assert_allclose(
        client.decrypt(HEServer(program, old, workers=1).infer(client.encrypt(x))),
        program.forward(x[None]),
        atol=error_bound(program, client.plan),
    )


@pytest.mark.parametrize("sigma", [0.0, -1e-3, math.nan, math.inf, 1e3])
def test_a_bad_flood_sigma_is_refused_up_front(
    program: HEProgram, client: HEClient, sigma: float
) -> None:
    with pytest.raises(InvalidInputError, match="flood_sigma"):
        HEServer(program, client.public_context(), workers=1, flood_sigma=sigma)


def test_a_response_declaring_more_noise_than_the_plan_allows_is_refused(
    program: HEProgram, client: HEClient
) -> None:
    # the declared sigma widens the client's check of the copies: it is bounded, not trusted
    server = HEServer(program, client.public_context(), workers=1, flood_sigma=SIGMA)
    meta, sections = unpack(server.infer(client.encrypt(np.full(6, 0.25))), "response")
    header = {k: v for k, v in meta.items() if k not in ("kind", "sizes", "sha256")}
    for claim in (client.plan.magnitude, -1.0, "0.01"):
        forged = pack("response", {**header, "flood_sigma": claim}, sections)
        with pytest.raises(InvalidInputError, match="flooding noise"):
            client.decrypt(forged)
