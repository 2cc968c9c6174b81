"""Model serving over real HTTP: cards, policies, predictions, budgets, refusals and the trail.

Each test starts the gateway on its own copy of the served workspace (``conftest.py``:
the sklearn digits dataset with a budget, the DP logistic regression ``digits-lr`` and a
key per role) with the serving policy it needs, and checks the answers against the
model called in-process.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from tests._cli import run_cli

from veil.access import Access, Trail, parse_key
from veil.errors import ConflictError, InvalidInputError
from veil.serve._served import REFERENCE_PURPOSE, ModelCache
from veil.train import FeatureEncoder, ModelRegistry
from veil.workspace import Workspace

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
    # uvicorn imports websockets.legacy when it starts (the fixture could pass ws="none")
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:uvicorn"),
]

MODEL = "digits-lr"
PREDICT = f"/v1/models/{MODEL}/predict"


def _key_id(gateway: Any, role: str) -> str:
    parsed = parse_key(gateway.keys[role])
    assert parsed is not None
    return parsed[0]


def _records(gateway: Any, n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` digits rows as records named as the model's columns (from GET /v1/models/NAME)."""
    detail = gateway.client("analyst").get(f"/v1/models/{MODEL}").json()
    names = [c["name"] for c in detail["inputs"]["columns"]]
    pixels = load_digits().data[start : start + n]
    return [dict(zip(names, map(float, row), strict=True)) for row in pixels]


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = dict(response.json()["error"])
    assert error["code"] == code, error
    return error


def _requests(gateway: Any) -> list[Any]:
    gateway.state.spool.flush()
    return Trail(gateway.state.store).entries(action="serve.request")


def _in_process(gateway: Any, records: list[dict[str, Any]]) -> np.ndarray:
    import pandas as pd
    import torch

    saved = ModelRegistry.for_workspace(Workspace(gateway.home)).load(MODEL)
    encoder = FeatureEncoder.from_dict(saved.meta["encoder"])
    with torch.no_grad():
        logits = saved.model(encoder.encode(pd.DataFrame(records)))
    return torch.softmax(logits, dim=1).numpy()


# ---------------------------------------------------------------- reading models
def test_list_and_show_models_with_the_callers_policy(gateway):
    listed = gateway.client("analyst").get("/v1/models")
    assert listed.status_code == 200, listed.text
    models = {m["name"]: m for m in listed.json()["models"]}
    assert models[MODEL]["dataset"] == "digits" and models[MODEL]["private"] is True
    detail = gateway.client("analyst").get(f"/v1/models/{MODEL}").json()
    assert detail["classes"] == [str(i) for i in range(10)]
    assert detail["inputs"]["width"] == 64 and len(detail["inputs"]["columns"]) == 64
    assert detail["card"]["dataset"] == "digits" and detail["sisa"] is False
    assert detail["policy"] == {
        "output": "label",
        "queries_per_key": 500,
        "rate": "20/second",
        "max_batch": 100,
    }
    # a consumer may predict but not read cards
    _error(gateway.client("consumer").get("/v1/models"), 403, "permission_denied")
    _error(gateway.client("analyst").get("/v1/models/no-such-model"), 404, "not_found")


# ---------------------------------------------------------------- predicting
def test_default_policy_answers_labels_that_match_the_model(gateway):
    records = _records(gateway, 20)
    response = gateway.client("consumer").post(PREDICT, json={"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "label" and body["records_left"] == 480
    assert all(set(p) == {"label"} for p in body["predictions"])  # nothing but the label
    expected = _in_process(gateway, records).argmax(axis=1)
    assert [int(p["label"]) for p in body["predictions"]] == expected.tolist()
    # the same rows as encoded vectors give the same answers
    encoder = FeatureEncoder.from_dict(
        ModelRegistry.for_workspace(Workspace(gateway.home)).meta(MODEL)["encoder"]
    )
    import pandas as pd

    vectors = encoder.encode(pd.DataFrame(records)).tolist()
    again = gateway.client("consumer").post(PREDICT, json={"inputs": vectors}).json()
    assert again["predictions"] == body["predictions"] and again["records_left"] == 460


def test_a_warm_prediction_is_answered_on_the_event_loop_and_the_rest_in_threads(
    gateway, monkeypatch
):
    from veil.serve import _model_routes

    ran_on: list[str] = []
    answer = _model_routes._predict

    def spy(*args: Any, **kwargs: Any) -> Any:
        ran_on.append(threading.current_thread().name)
        return answer(*args, **kwargs)

    monkeypatch.setattr(_model_routes, "_predict", spy)
    records = _records(gateway, 20)
    expected = _in_process(gateway, records).argmax(axis=1).tolist()
    client = gateway.client("consumer")
    sizes = [1, 1, 2, _model_routes.INLINE_RECORDS, _model_routes.INLINE_RECORDS + 1]
    answered, left, start = [], 500, 0
    for n in sizes:
        response = client.post(PREDICT, json={"records": records[start : start + n]})
        assert response.status_code == 200, response.text
        answered += [int(p["label"]) for p in response.json()["predictions"]]
        left -= n
        assert response.json()["records_left"] == left
        start = (start + n) % 3  # overlapping windows of the same 20 rows
    loop = gateway.thread.name
    # The first: this key's counter is read from the database (and the monitor's
    # reference fitted) in a thread; then in memory, on the loop; a batch over
    # INLINE_RECORDS in a thread again. The answers are the same either way.
    assert ran_on[0] != loop
    assert ran_on[1:4] == [loop, loop, loop]
    assert ran_on[4] != loop
    windows, start = [], 0
    for n in sizes:
        windows += expected[start : start + n]
        start = (start + n) % 3
    assert answered == windows


def test_a_key_revoked_while_warm_is_refused_once_its_grants_are_stale(gateway):
    client = gateway.client("consumer")
    records = _records(gateway, 1)
    for _ in range(3):  # warm: the token verified, the grants in memory
        assert client.post(PREDICT, json={"records": records}).status_code == 200
    owner = Access(gateway.state.store, signing_key=gateway.state.signing_key)
    owner.revoke_key(_key_id(gateway, "consumer"), reason="test: leaked while in use")
    time.sleep(1.2)  # Access.max_age (1 s): grants older than that are read again
    response = client.post(PREDICT, json={"records": records})
    _error(response, 401, "unauthenticated")


def test_the_event_loop_path_refuses_what_the_thread_path_refuses(gateway):
    from veil.access import Outcome, Role

    records = _records(gateway, 1)  # the model is loaded: the loop path is open to warm keys
    consumer = gateway.client("consumer")
    for _ in range(3):
        assert consumer.post(PREDICT, json={"records": records}).status_code == 200
    # a forged secret for the warm key's id: a token never verified, checked in full
    forged = f"veil_sk_{_key_id(gateway, 'consumer')}_" + "A" * 43
    _error(gateway.client(token=forged).post(PREDICT, json={"records": records}), 401,
           "unauthenticated")  # fmt: skip
    # a key warm in this worker (token verified, grants fresh) but scoped to another dataset
    _veil(gateway.home, "datasets", "add", "sklearn:iris", "--name", "iris")
    info, token = gateway.state.operator.create_key("warm-iris", Role.CONSUMER, "iris")
    scoped = gateway.client(token=token)
    _error(scoped.get("/v1/models"), 403, "permission_denied")  # verifies and caches the key
    for _ in range(2):
        _error(scoped.post(PREDICT, json={"records": records}), 403, "permission_denied")
    refusals = [
        e
        for e in Trail(gateway.state.store).entries(actor="svc:warm-iris")
        if e.action == "serve:model.predict"
    ]
    assert [(e.outcome, e.dataset, e.details["key_id"]) for e in refusals] == [
        (Outcome.REFUSED, "digits", info.key_id)
    ] * 2


def test_record_encoding_matches_training_encoding(serve_home):
    cache = ModelCache(Workspace(serve_home.home))
    model = cache.get(MODEL)
    assert cache.get(MODEL) is model  # loaded once
    assert model.encoder is not None
    rng = np.random.default_rng(0)
    import pandas as pd

    names = list(model.encoder.order)
    rows = rng.uniform(-5, 25, size=(50, len(names)))  # beyond the bounds: clamped as training
    records = [dict(zip(names, row.tolist(), strict=True)) for row in rows]
    records[3][names[0]] = None  # missing: the midpoint, as training
    ours = model.encode(records)
    theirs = model.encoder.encode(pd.DataFrame(records)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    # a model changed on disk (an unlearning run swaps shards; a re-save renames the folder)
    folder = ModelRegistry.for_workspace(Workspace(serve_home.home)).path(MODEL)
    info = folder.stat()
    os.utime(folder, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    assert cache.get(MODEL) is not model


def test_categorical_and_numeric_records_encode_as_training_does():
    from veil.serve._served import ServedModel
    from veil.train import PrivacyCard, build_model

    encoder = FeatureEncoder(
        numeric={"age": (17.0, 90.0), "hours": (1.0, 99.0)},
        categorical={"sex": ("Female", "Male"), "grade": ("1", "2", "3")},
        order=("age", "sex", "hours", "grade"),
    )
    spec = {"kind": "logreg", "input_shape": [encoder.width], "n_classes": 2}
    card = PrivacyCard.from_dict({"model": "m", "dataset": "d"})
    model = ServedModel(
        "m",
        card,
        {"classes": ["<=50K", ">50K"], "encoder": encoder.to_dict(), "spec": spec},
        build_model(spec),
    )
    records = [
        {"age": 39, "sex": "Male", "hours": 40.5, "grade": "2"},
        {"age": 200.0, "sex": None, "hours": -3, "grade": 3},  # clamped; missing; an int category
        {"age": None, "sex": "Female", "hours": float("nan"), "grade": None},
        {"age": float("inf"), "sex": "Male", "hours": 99, "grade": "1"},
    ]
    import pandas as pd

    frame = pd.DataFrame(records).astype({"grade": "object"})
    np.testing.assert_allclose(model.encode(records), encoder.encode(frame).numpy(), atol=1e-6)
    with pytest.raises(InvalidInputError) as info:
        model.encode([{**records[0], "sex": "male"}])  # a typo is refused, not all zeros
    assert info.value.details == {"record": 0, "column": "sex"}
    with pytest.raises(InvalidInputError) as info:
        model.encode([records[0], {**records[0], "hours": "40"}])
    assert info.value.details == {"record": 1, "column": "hours"}
    with pytest.raises(InvalidInputError) as info:
        model.encode([records[0], {**records[0], "age": 10**400}])  # JSON allows it; float64 not
    assert info.value.details == {"record": 1, "column": "age"}
    with pytest.raises(InvalidInputError):
        model.inputs([[10**400] * encoder.width])
    with pytest.raises(InvalidInputError) as info:
        model.encode([{**records[0], "id": 7}])
    assert "unknown 'id'" in (info.value.got or "")


def test_top_k_and_per_key_probabilities(start_gateway, serve_home):
    from veil.access import parse_key as parse

    analyst = parse(serve_home.keys["analyst"])
    assert analyst is not None
    gateway = start_gateway(
        f"""
        models:
          {MODEL}: {{output: top_k, top_k: 3, decimals: 2}}
        keys:
          {analyst[0]}:
            models:
              {MODEL}: {{output: probabilities, temperature: 2.0}}
        """.replace("\n        ", "\n")
    )
    records = _records(gateway, 5)
    proba = _in_process(gateway, records)
    top = gateway.client("consumer").post(PREDICT, json={"records": records}).json()
    assert top["output"] == "top_k"
    for answer, row in zip(top["predictions"], proba, strict=True):
        order = np.argsort(-row)[:3]
        assert [t["label"] for t in answer["top"]] == [str(i) for i in order]
        assert [t["probability"] for t in answer["top"]] == pytest.approx(
            np.round(row[order], 2).tolist(), abs=1e-6
        )
        assert answer["label"] == str(order[0])
    full = gateway.client("analyst").post(PREDICT, json={"records": records}).json()
    assert full["output"] == "probabilities"
    flattened = np.sqrt(proba) / np.sqrt(proba).sum(axis=1, keepdims=True)
    got = np.array([list(p["probabilities"].values()) for p in full["predictions"]])
    # the key's layer changes the output and temperature and keeps the model's decimals
    np.testing.assert_allclose(got, np.round(flattened, 2), rtol=0, atol=1e-6)
    shown = gateway.client("analyst").get(f"/v1/models/{MODEL}").json()["policy"]
    assert (shown["output"], shown["temperature"], shown["decimals"]) == ("probabilities", 2.0, 2)


# ---------------------------------------------------------------- budgets and limits
def test_count_budget_bounds_records_and_refusals_take_nothing(start_gateway):
    gateway = start_gateway(f"models:\n  {MODEL}: {{queries_per_key: 10, max_batch: 8}}\n")
    client = gateway.client("consumer")
    records = _records(gateway, 8)
    assert client.post(PREDICT, json={"records": records}).json()["records_left"] == 2
    error = _error(client.post(PREDICT, json={"records": records[:3]}), 403, "budget_exceeded")
    assert error["details"]["left"] == 2
    assert client.post(PREDICT, json={"records": records[:2]}).json()["records_left"] == 0
    usage = client.get(f"/v1/models/{MODEL}/usage").json()
    assert usage == {
        "model": MODEL,
        "key_id": _key_id(gateway, "consumer"),
        "used": 10,
        "cap": 10,
        "left": 0,
    }
    # another key has its own budget; a batch over max_batch is too large before any spend
    other = gateway.client("analyst")
    _error(other.post(PREDICT, json={"records": _records(gateway, 9)}), 413, "data_too_large")
    assert other.get(f"/v1/models/{MODEL}/usage").json()["used"] == 0
    # the records answered reach the durable count with the trail entries
    gateway.state.spool.flush()
    entries = [
        e for e in _requests(gateway) if e.details.get("route") == PREDICT.replace(MODEL, "{name}")
    ]
    answered = [e.details.get("records") for e in entries if e.details["status"] == 200]
    assert answered == [8, 2]


def test_rate_limit_per_key(start_gateway):
    gateway = start_gateway(f"models:\n  {MODEL}: {{rate: 2/minute}}\n")
    client = gateway.client("consumer")
    record = _records(gateway, 1)
    for _ in range(2):
        assert client.post(PREDICT, json={"records": record}).status_code == 200
    refused = client.post(PREDICT, json={"records": record})
    _error(refused, 429, "rate_limited")
    assert float(refused.headers["retry-after"]) > 0
    assert gateway.client("analyst").post(PREDICT, json={"records": record}).status_code == 200
    # refused requests take no records
    assert client.get(f"/v1/models/{MODEL}/usage").json()["used"] == 2


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda r: r[0].pop(next(iter(r[0]))), 400, "invalid_input"),
        (lambda r: r[0].update({"patient_id": 7}), 400, "invalid_input"),
        (lambda r: r[0].update({next(iter(r[0])): "seven"}), 400, "invalid_input"),
        (lambda r: r[0].update({next(iter(r[0])): True}), 400, "invalid_input"),
    ],
)
def test_bad_records_are_400_naming_record_and_column(gateway, mutate, status, code):
    records = _records(gateway, 2)
    mutate(records)
    error = _error(
        gateway.client("consumer").post(PREDICT, json={"records": records}), status, code
    )
    assert error["details"]["record"] == 0
    assert "seven" not in json.dumps(error)  # values are never quoted back


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"records": [], "inputs": None}, 422),
        ({"records": [{"a": 1}], "inputs": [[0.0]]}, 422),
        ({"inputs": [[0.0] * 63]}, 400),
        ({"inputs": [[0.0] * 64, [0.0] * 65]}, 400),
        ({"inputs": [[0.0] * 64], "extra": 1}, 422),
        ({"records": [{"x" * 300: 1.0}]}, 422),
    ],
)
def test_malformed_bodies_are_clean_4xx(gateway, body, status):
    response = gateway.client("consumer").post(PREDICT, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert gateway.client("consumer").get(f"/v1/models/{MODEL}/usage").json()["used"] == 0


def test_a_key_scoped_to_one_dataset_uses_that_datasets_models_only(gateway):
    from veil.access import Role

    _veil(gateway.home, "datasets", "add", "sklearn:iris", "--name", "iris")
    owner = gateway.state.operator
    _, elsewhere = owner.create_key("scoped-iris", Role.CONSUMER, "iris")
    refused = gateway.client(token=elsewhere).post(PREDICT, json={"inputs": [[0.0] * 64]})
    _error(refused, 403, "permission_denied")
    _, digits_only = owner.create_key("scoped-digits", Role.CONSUMER, "digits")
    allowed = gateway.client(token=digits_only).post(PREDICT, json={"inputs": [[0.0] * 64]})
    assert allowed.status_code == 200, allowed.text
    # listing: an analyst limited to iris sees no digits model; one limited to digits does
    _, iris_reader = owner.create_key("reader-iris", Role.ANALYST, "iris")
    _, digits_reader = owner.create_key("reader-digits", Role.ANALYST, "digits")
    assert gateway.client(token=iris_reader).get("/v1/models").json() == {"models": []}
    listed = gateway.client(token=digits_reader).get("/v1/models").json()["models"]
    assert [m["name"] for m in listed] == [MODEL]
    # no key: 401 before the model is looked up (an unknown name is not revealed as 404)
    _error(gateway.client().post("/v1/models/nope/predict", json={}), 401, "unauthenticated")


# ---------------------------------------------------------------- the trail and the monitor
def test_each_prediction_is_on_the_trail_and_the_monitor_reference_is_recorded(gateway):
    client = gateway.client("consumer")
    assert client.post(PREDICT, json={"records": _records(gateway, 3)}).status_code == 200
    route = PREDICT.replace(MODEL, "{name}")
    entry = next(e for e in _requests(gateway) if e.details.get("route") == route)
    assert entry.details["status"] == 200
    assert entry.dataset == "digits"
    assert entry.details["model"] == MODEL and entry.details["output"] == "label"
    assert entry.details["records"] == 3
    reads = Trail(gateway.state.store).entries(action="dataset.read")
    assert any(e.purpose == REFERENCE_PURPOSE and e.dataset == "digits" for e in reads)
    assert gateway.state.monitor.reference(MODEL) is not None


def test_a_probing_key_is_alerted_and_throttled_or_suspended_as_its_policy_says(
    start_gateway, serve_home
):
    consumer = parse_key(serve_home.keys["consumer"])
    assert consumer is not None
    gateway = start_gateway(
        f"models:\n  {MODEL}: {{monitor: {{action: throttle, throttle_rate: 1/minute}}}}\n"
        f"keys:\n  {consumer[0]}:\n    models:\n      {MODEL}: {{monitor: {{action: suspend}}}}\n"
    )
    # 30 copies of one record in one request: a membership prober's near-duplicates
    probe = {"records": _records(gateway, 1, start=7) * 30}
    analyst = gateway.client("analyst")
    assert analyst.post(PREDICT, json=probe).status_code == 200
    alerts = Trail(gateway.state.store).entries(action="serve.alert")
    assert [(a.details["signal"], a.details["action"]) for a in alerts] == [("probing", "throttle")]
    assert analyst.post(PREDICT, json={"records": _records(gateway, 1)}).status_code == 200
    _error(analyst.post(PREDICT, json={"records": _records(gateway, 1)}), 429, "rate_limited")
    # the consumer's own layer suspends: its key is revoked, and once the revocation reaches
    # the worker (Access.max_age, one second) every request is a 401
    consumer_client = gateway.client("consumer")
    assert consumer_client.post(PREDICT, json=probe).status_code == 200
    alerts = Trail(gateway.state.store).entries(action="serve.alert")
    assert (alerts[-1].details["action"], alerts[-1].details["applied"]) == ("suspend", True)
    deadline = time.monotonic() + 10
    while (response := consumer_client.get(f"/v1/models/{MODEL}/usage")).status_code == 200:
        assert time.monotonic() < deadline, "the suspended key still served after 10 s"
        time.sleep(0.2)
    _error(response, 401, "unauthenticated")


# ---------------------------------------------------------------- private labels
def _veil(home: Any, *args: str) -> None:
    done = run_cli(*args, env={"VEIL_HOME": str(home)})
    assert done.returncode == 0, done.stdout + done.stderr


def _charges(gateway: Any) -> list[Any]:
    return gateway.state.ledger(gateway.state.operator).entries("digits")


def test_private_label_on_a_model_that_is_not_sisa_is_refused_before_any_charge(
    start_gateway, serve_home
):
    from veil.serve._policy import ServePolicy

    # at the start: a policy whose defaults are private_label covers digits-lr, a plain model
    path = serve_home.home.parent / "private.yaml"
    path.write_text("defaults: {output: private_label, epsilon: 0.5}\n", encoding="utf-8")
    with pytest.raises(ConflictError, match="digits-lr"):
        ModelCache(Workspace(serve_home.home)).check_private(ServePolicy.load(path))
    # per request: a model trained after the start under a private_label policy
    gateway = start_gateway("models:\n  later: {output: private_label, epsilon: 0.5}\n")
    _veil(
        serve_home.home, "train", "--dataset", "digits", "--model", "logreg", "--epsilon", "1",
        "--delta", "1e-4", "--epochs", "1", "--batch-size", "100", "--name", "later",
    )  # fmt: skip
    before = len(_charges(gateway))
    refused = gateway.client("analyst").post(
        "/v1/models/later/predict", json={"inputs": [[0.0] * 64]}
    )
    _error(refused, 409, "conflict")
    assert len(_charges(gateway)) == before
    assert gateway.client("analyst").get("/v1/models/later/usage").json()["used"] == 0


def test_private_labels_from_a_sisa_ensemble_are_charged_before_they_are_answered(
    start_gateway, serve_home
):
    _veil(
        serve_home.home, "train", "--dataset", "digits", "--model", "logreg", "--shards", "5",
        "--epsilon", "2", "--delta", "1e-4", "--epochs", "2", "--batch-size", "50",
        "--name", "digits-sisa",
    )  # fmt: skip
    gateway = start_gateway("models:\n  digits-sisa: {output: private_label, epsilon: 0.5}\n")
    url = "/v1/models/digits-sisa/predict"
    before = len(_charges(gateway))
    records = _records(gateway, 4)
    answered = gateway.client("analyst").post(url, json={"records": records})
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["output"] == "private_label" and body["epsilon_per_answer"] == 0.5
    assert all(set(p) == {"label"} for p in body["predictions"])
    charges = _charges(gateway)
    assert len(charges) == before + 1
    charge = charges[-1]
    assert charge.id == body["ledger_event"] and charge.purpose == "prediction"
    assert charge.epsilon == pytest.approx(4 * 0.5, rel=1e-3)  # four pure-epsilon answers
    # a consumer holds no budget.spend: a private answer is a release it may not make
    _error(
        gateway.client("consumer").post(url, json={"records": records}), 403, "permission_denied"
    )
    # the budget bounds the answers: 100 more at 0.5 each exceed what digits has left
    many = gateway.client("analyst").post(url, json={"inputs": [[0.0] * 64] * 100})
    _error(many, 403, "budget_exceeded")
    assert len(_charges(gateway)) == before + 1
    usage = gateway.client("analyst").get("/v1/models/digits-sisa/usage").json()
    assert usage["used"] == 4  # the refused request's records were given back
