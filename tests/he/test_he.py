"""CKKS inference: the planner, the compiler, both layouts against plaintext, keys and tampering."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

pytest.importorskip("tenseal")
torch = pytest.importorskip("torch")

from veil.errors import InvalidInputError  # noqa: E402
from veil.he import (  # noqa: E402 - after the skips
    HEClient,
    HEPlan,
    HEProgram,
    HEServer,
    compile_model,
    error_bound,
    plan_parameters,
    poly_activation,
)
from veil.he._ckks import MAGIC  # noqa: E402
from veil.he._plan import MAX_COEFF_BITS  # noqa: E402
from veil.he._seal import seal  # noqa: E402


def _mlp(seed: int, sizes: tuple[int, int, int] = (20, 12, 4)) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(sizes[0], sizes[1]),
        poly_activation((0.1, 0.5, 0.25)),
        torch.nn.Linear(sizes[1], sizes[2]),
    )


@pytest.fixture(scope="module")
def small() -> tuple[HEProgram, HEClient, HEServer, np.ndarray]:
    rng = np.random.default_rng(7)
    inputs = rng.uniform(-1, 1, size=(64, 20))
    program = compile_model(_mlp(3), calibration=inputs)
    client = HEClient.generate(program.plan())
    server = HEServer(program, client.public_context(), workers=1)
    return program, client, server, inputs


# ----------------------------------------------------------------------------- planner


def test_the_security_table_is_seals() -> None:
    api = seal()
    for degree, bits in MAX_COEFF_BITS.items():
        assert api.CoeffModulus.MaxBitCount(degree, api.SEC_LEVEL_TYPE.TC128) == bits


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6, 10])
def test_plans_fit_the_standard_and_hold_the_depth(depth: int) -> None:
    plan = plan_parameters(depth, integer_bits=8, slots_needed=1024)
    assert plan.total_coeff_bits <= MAX_COEFF_BITS[plan.poly_modulus_degree]
    assert len(plan.coeff_mod_bit_sizes) == depth + 2
    assert plan.scale_bits >= 25
    assert plan.coeff_mod_bit_sizes[0] == plan.scale_bits + 8
    assert HEPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    # the smallest ring that holds it: the next smaller one must not
    smaller = plan.poly_modulus_degree // 2
    if smaller >= 4096:
        assert (MAX_COEFF_BITS[smaller] - 16) / (depth + 2) < 25


def test_a_plan_that_cannot_exist_is_refused_before_any_key() -> None:
    with pytest.raises(InvalidInputError, match="no CKKS parameters") as caught:
        plan_parameters(40, integer_bits=10)
    assert "fewer layers" in str(caught.value)
    with pytest.raises(InvalidInputError, match="128-bit"):
        HEPlan(8192, (60, 60, 60, 60), 40, 10, 2).check()


# ----------------------------------------------------------------------------- compiler


def test_compiled_mlp_matches_torch(seed: int) -> None:
    model = _mlp(seed)
    x = np.random.default_rng(seed).normal(size=(16, 20))
    program = compile_model(model)
    expected = model(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(program.forward(x), expected, rtol=1e-4, atol=1e-4)
    # a degree-2 activation with a linear term still costs one level each
    assert [type(s).__name__ for s in program.steps] == ["Affine", "Square", "Affine"]


def test_compiled_cnn_matches_torch(seed: int) -> None:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, stride=2, padding=1),
        torch.nn.BatchNorm2d(3),
        poly_activation(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 2 * 2, 5),
        torch.nn.LogSoftmax(dim=1),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    x = np.random.default_rng(seed).normal(size=(8, 1, 8, 8))
    program = compile_model(model, input_shape=(1, 8, 8))
    assert program.output == "softmax"
    logits = model[:-1](torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(program.forward(x), logits, rtol=1e-4, atol=1e-4)
    # conv + batch norm merge into one affine step; pooling + linear into another
    assert program.depth == 3


@pytest.mark.parametrize(
    ("layer", "advice"),
    [
        (torch.nn.ReLU(), "poly_activation"),
        (torch.nn.Tanh(), "poly_activation"),
        (torch.nn.MaxPool1d(2), "AvgPool1d"),
        (torch.nn.Softmax(dim=1), "only a final one"),
    ],
)
def test_what_ckks_cannot_evaluate_is_refused_with_advice(layer: object, advice: str) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), layer, torch.nn.Linear(4, 2))
    with pytest.raises(InvalidInputError, match="cannot be evaluated") as caught:
        compile_model(model)
    assert advice in str(caught.value)


def test_scikit_learn_models_compile(seed: int) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    logistic = LogisticRegression(max_iter=500).fit(x, y)
    program = compile_model(logistic)
    assert program.output == "sigmoid"
    np.testing.assert_allclose(program.forward(x)[:, 0], logistic.decision_function(x), atol=1e-9)
    ridge = Ridge().fit(x, y.astype(float))
    np.testing.assert_allclose(compile_model(ridge).forward(x)[:, 0], ridge.predict(x), atol=1e-9)
    relu = MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=seed)
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):  # enough to refuse it
        relu.fit(x, y)
    with pytest.raises(InvalidInputError, match="identity"):
        compile_model(relu)


def test_programs_round_trip_without_pickles(small) -> None:
    program = small[0]
    again = HEProgram.from_bytes(program.to_bytes())
    x = small[3]
    np.testing.assert_array_equal(again.forward(x), program.forward(x))
    assert again.magnitudes == program.magnitudes
    with pytest.raises(InvalidInputError, match="not a compiled HE program"):
        HEProgram.from_bytes(b"PK\x03\x04 not an archive")


# ----------------------------------------------------------------------------- evaluation


def test_vector_layout_equals_plaintext_within_the_derived_bound(small) -> None:
    program, client, server, inputs = small
    bound = error_bound(program, client.plan, layout="vector")
    assert bound < 1e-3  # the bound is not vacuous
    worst = 0.0
    for row in inputs[:4]:
        result = client.decrypt(server.infer(client.encrypt(row)))
        worst = max(worst, float(np.max(np.abs(result - program.forward(row)))))
    assert worst <= bound, f"CKKS error {worst:.3g} exceeds the derived bound {bound:.3g}"


def test_batch_layout_equals_plaintext_within_the_derived_bound(small) -> None:
    program, client, server, inputs = small
    bound = error_bound(program, client.plan, layout="batch")
    result = client.decrypt(server.infer(client.encrypt(inputs, layout="batch")))
    assert result.shape == (64, 4)
    worst = float(np.max(np.abs(result - program.forward(inputs))))
    assert worst <= bound, f"CKKS error {worst:.3g} exceeds the derived bound {bound:.3g}"


def test_batches_larger_than_the_slots_span_groups_and_workers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(-1, 1, size=(4096 + 5, 3))
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    program = compile_model(model, calibration=inputs)
    client = HEClient.generate(program.plan(layouts=("batch",)))
    server = HEServer(program, client.public_context(), workers=2)
    result = client.decrypt(server.infer(client.encrypt(inputs, layout="batch")))
    assert result.shape == (4101, 2)
    assert float(np.max(np.abs(result - program.forward(inputs)))) <= error_bound(
        program, client.plan, layout="batch"
    )
    with pytest.raises(InvalidInputError, match="vector layout"):
        client.encrypt(inputs[0])


def test_the_public_context_holds_no_secret_and_only_the_planned_rotations(small) -> None:
    program, client, _, _ = small
    context = client.public_context()
    secret = client.to_bytes()
    header_end = len(MAGIC) + 4 + struct.unpack(">I", secret[len(MAGIC) : len(MAGIC) + 4])[0]
    secret_key_bytes = secret[header_end:]
    assert len(secret_key_bytes) > 1000
    assert secret_key_bytes not in context
    assert secret_key_bytes[64:1064] not in context  # not even a slice of the key material
    header = json.loads(
        context[
            len(MAGIC) + 4 : len(MAGIC)
            + 4
            + struct.unpack(">I", context[len(MAGIC) : len(MAGIC) + 4])[0]
        ]
    )
    assert header["kind"] == "context"
    assert len(header["sizes"]) == 3  # relinearisation, Galois and public keys; nothing else
    assert header["public_key"] is True
    from veil.he._seal import load_object

    server_ctx = HEServer(program, context)._ctx
    _, rotations, public = header["sizes"]
    galois = load_object("GaloisKeys", server_ctx.context, context[-(rotations + public) : -public])
    load_object("PublicKey", server_ctx.context, context[-public:])
    assert galois.size() == len(client.plan.galois_steps)
    with pytest.raises(InvalidInputError, match="wrong kind"):
        HEClient.from_bytes(context)
    # batch-only keys need no rotations at all: a small context
    batch_only = HEClient.generate(program.plan(layouts=("batch",)))
    assert len(batch_only.public_context()) < len(context) / 3


def test_secret_keys_round_trip(small) -> None:
    program, client, server, inputs = small
    again = HEClient.from_bytes(client.to_bytes())
    result = again.decrypt(server.infer(client.encrypt(inputs[0])))
    assert float(np.max(np.abs(result - program.forward(inputs[0])))) <= error_bound(
        program, client.plan
    )


def test_a_response_for_other_keys_is_refused(small) -> None:
    _, client, server, inputs = small
    other = HEClient.generate(client.plan)
    response = server.infer(client.encrypt(inputs[0]))
    with pytest.raises(InvalidInputError, match="other keys"):
        other.decrypt(response)
    # even with the key id forged, decryption under the wrong key is caught by the range check
    forged = response.replace(client.key_id.encode(), other.key_id.encode())
    with pytest.raises(InvalidInputError, match=r"planned range|copies"):
        other.decrypt(forged)
    with pytest.raises(InvalidInputError, match="other keys"):
        server.infer(other.encrypt(inputs[0]))


def test_tampered_ciphertexts_fail_cleanly(small) -> None:
    _, client, server, inputs = small
    request = bytearray(client.encrypt(inputs[0]))
    request[-500] ^= 0xFF
    with pytest.raises(InvalidInputError, match="checksum"):
        server.infer(bytes(request))
    with pytest.raises(InvalidInputError, match="checksum"):
        server.infer(bytes(request[:-10]))
    response = server.infer(client.encrypt(inputs[0]))
    # tamper and recompute the checksum, as a deliberate attacker would
    from veil.he._ckks import pack, unpack

    meta, sections = unpack(response, "response")
    body = bytearray(sections[0])
    body[len(body) // 2] ^= 0x55
    header = {k: v for k, v in meta.items() if k not in ("kind", "sizes", "sha256")}
    with pytest.raises(InvalidInputError, match=r"could not be read|planned range|copies"):
        client.decrypt(pack("response", header, [bytes(body)]))
    with pytest.raises(InvalidInputError, match="not a Veil HE file"):
        client.decrypt(b"garbage")


def test_bad_inputs_are_refused_before_encryption(small) -> None:
    _, client, _, _ = small
    with pytest.raises(InvalidInputError, match="wrong shape"):
        client.encrypt(np.zeros(21))
    with pytest.raises(InvalidInputError, match="NaN"):
        client.encrypt(np.full(20, np.nan))
    with pytest.raises(InvalidInputError, match="outside the range"):
        client.encrypt(np.full(20, 1e6))


def test_a_context_for_another_model_is_refused(small) -> None:
    _, client, _, inputs = small
    other = compile_model(_mlp(1, (20, 12, 5)), calibration=inputs)
    with pytest.raises(InvalidInputError, match="another model"):
        HEServer(other, client.public_context())


@pytest.mark.slow
def test_encrypted_mnist_predictions_equal_plaintext(shared_data, seed: int) -> None:
    from veil.data import load_mnist

    train = load_mnist(shared_data / "mnist", "train")
    test = load_mnist(shared_data / "mnist", "test")
    x = torch.tensor(train.images[:6000].reshape(6000, -1) / 255.0, dtype=torch.float32)
    y = torch.tensor(train.labels[:6000]).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 8), poly_activation(), torch.nn.Linear(8, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for start in range(0, 6000, 100):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(
            model(x[start : start + 100]), y[start : start + 100]
        ).backward()
        optimiser.step()
    images = test.images[:200].reshape(200, -1) / 255.0
    program = compile_model(model, calibration=x[:2000].numpy())
    client = HEClient.generate(program.plan())
    server = HEServer(program, client.public_context(), workers=1)
    plain = program.forward(images)
    batched = client.decrypt(server.infer(client.encrypt(images, layout="batch")))
    np.testing.assert_array_equal(batched.argmax(1), plain.argmax(1))
    single = client.decrypt(server.infer(client.encrypt(images[0])))
    assert single.argmax() == plain[0].argmax()
    assert float(np.max(np.abs(batched - plain))) <= error_bound(
        program, client.plan, layout="batch"
    )


def test_predict_applies_the_output_transform_and_dead_units_fold_away(seed: int) -> None:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 5), poly_activation(), torch.nn.Linear(5, 3), torch.nn.Softmax(dim=1)
    )
    with torch.no_grad():
        model[0].weight[2].zero_()  # a dead unit: its output is its bias, squared
    x = np.random.default_rng(seed).uniform(-1, 1, size=(30, 6))
    program = compile_model(model, calibration=x)
    assert program.steps[0].weight.shape == (4, 6)  # the dead unit folded into the next bias
    expected = model(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    client = HEClient.generate(program.plan())
    assert client.plan.output == "softmax"
    server = HEServer(program, client.public_context(), workers=1)
    probabilities = client.predict(server.infer(client.encrypt(x, layout="batch")))
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    np.testing.assert_allclose(
        client.predict(server.infer(client.encrypt(x[0])))[0], expected[0], atol=1e-4
    )


def test_a_response_of_the_wrong_shape_is_refused(small) -> None:
    from veil.he._ckks import pack, unpack

    _, client, server, inputs = small
    meta, sections = unpack(server.infer(client.encrypt(inputs, layout="batch")), "response")
    header = {k: v for k, v in meta.items() if k not in ("kind", "sizes", "sha256")}
    with pytest.raises(InvalidInputError, match="shape"):
        client.decrypt(pack("response", header, sections[:-1]))
    meta, sections = unpack(server.infer(client.encrypt(inputs[0])), "response")
    header = {k: v for k, v in meta.items() if k not in ("kind", "sizes", "sha256")}
    with pytest.raises(InvalidInputError, match="shape"):
        client.decrypt(pack("response", dict(header, period=2), sections))
