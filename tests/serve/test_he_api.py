"""Encrypted inference over HTTP: the round trip against plaintext, and every refusal.

Over real HTTP (``start_gateway`` in ``conftest.py``), with a logistic
regression on scikit-learn's digits compiled for CKKS (N = 4096: a key pair in
about 50 ms, an inference in tens of milliseconds). The client side is
:class:`veil.he.HEClient`, exactly as a remote client would run it: keys from
the plan ``GET /v1/he/models`` publishes, the public context uploaded once,
requests encrypted and responses decrypted locally.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tenseal")
pytest.importorskip("sklearn")

from veil.access import Trail
from veil.he import HEClient, HEPlan, HEProgram, compile_model, error_bound
from veil.he._ckks import MAGIC, pack, unpack
from veil.serve._he_store import install_program

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
]  # slow tier (not in `make test-fast`): half a second to seconds a test

OCTETS = {"Content-Type": "application/octet-stream"}
FLOODED, EXACT = "digits-he", "digits-he-exact"
# batch requests are charged N/2 = 2048 records per group: this key may send two
POLICY = f"""
models:
  {FLOODED}: {{queries_per_key: 5000}}
  {EXACT}: {{queries_per_key: 5000}}
"""


@pytest.fixture(scope="module")
def digits() -> tuple[HEProgram, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    model = LogisticRegression(max_iter=300).fit(x[:1000], y[:1000])
    return compile_model(model, calibration=x[:500]), x[1500:]


@pytest.fixture(scope="module")
def client(digits: tuple[HEProgram, np.ndarray]) -> HEClient:
    return HEClient.generate(digits[0].plan())


@pytest.fixture
def he_gateway(start_gateway: Any, digits: tuple[HEProgram, np.ndarray]) -> Any:
    gateway = start_gateway(POLICY, max_he_bytes=4 << 20, max_he_request_bytes=3 << 20)
    install_program(gateway.home, FLOODED, digits[0])
    install_program(gateway.home, EXACT, digits[0], flood_sigma=None)
    return gateway


def _upload(http: Any, name: str, context: bytes) -> str:
    response = http.post(f"/v1/he/{name}/contexts", content=context, headers=OCTETS)
    assert response.status_code == 201, response.text
    return str(response.json()["context"])


def _infer(http: Any, name: str, context: str, request: bytes) -> Any:
    return http.post(
        f"/v1/he/{name}/infer", params={"context": context}, content=request, headers=OCTETS
    )


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = dict(response.json()["error"])
    assert error["code"] == code, error
    return error


def _entries(gateway: Any) -> list[Any]:
    gateway.state.spool.flush()
    return [
        e
        for e in Trail(gateway.state.store).entries(action="serve.request")
        if str(e.details.get("route", "")).startswith("/v1/he/")
    ]


def test_the_listing_publishes_a_plan_clients_make_matching_keys_from(he_gateway, digits):
    program, _ = digits
    listing = he_gateway.client("consumer").get("/v1/he/models")
    assert listing.status_code == 200, listing.text
    models = {m["name"]: m for m in listing.json()["models"]}
    assert set(models) == {FLOODED, EXACT}
    plan = HEPlan.from_dict(models[EXACT]["plan"])
    assert plan == program.plan()  # what the client builds its keys from, exactly
    assert models[EXACT]["flood_sigma"] is None
    assert models[FLOODED]["flood_sigma"] == pytest.approx(1e-3 * plan.magnitude)
    assert models[EXACT]["error_bound"]["batch"] == error_bound(program, plan, layout="batch")
    assert models[FLOODED]["records_per_request"] == {"vector": 2048 // 64, "batch_group": 2048}


def test_a_program_veil_he_compile_writes_into_the_workspace_is_served(he_gateway, tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from veil.cli._app import main

    x, y = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=200).fit(x[:600] / 16.0, y[:600])
    np.savez(tmp_path / "lr.npz", coef=model.coef_, intercept=model.intercept_, output="softmax")
    np.save(tmp_path / "sample.npy", x[:200])
    target = he_gateway.home / "he" / "cli-lr" / "program.veilhe"
    args = ["he", "compile", str(tmp_path / "lr.npz"), "--calibrate", str(tmp_path / "sample.npy")]
    assert main([*args, "--scale", "16", "--layouts", "vector", "-o", str(target), "--json"]) == 0
    listed = {
        m["name"]: m for m in he_gateway.client("consumer").get("/v1/he/models").json()["models"]
    }
    assert listed["cli-lr"]["plan"]["layouts"] == ["vector"]
    assert listed["cli-lr"]["flood_sigma"] == pytest.approx(
        1e-3 * listed["cli-lr"]["plan"]["magnitude"]
    )


@pytest.mark.slow
def test_encrypted_answers_equal_plaintext_within_the_published_bounds(he_gateway, digits, client):
    program, x = digits
    http = he_gateway.client("consumer")
    listing = {m["name"]: m for m in http.get("/v1/he/models").json()["models"]}
    context = client.public_context()
    exact, flooded = _upload(http, EXACT, context), _upload(http, FLOODED, context)

    vector = client.encrypt(x[0])
    answer = _infer(http, EXACT, exact, vector)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["x-veil-records-charged"] == "32"  # the copies one ciphertext holds
    assert answer.headers["x-veil-records-left"] == str(5000 - 32)
    error = np.max(np.abs(client.decrypt(answer.content) - program.forward(x[0])))
    assert error <= listing[EXACT]["error_bound"]["vector"]

    rows = x[:40]
    batch = _infer(http, EXACT, exact, client.encrypt(rows, layout="batch"))
    assert batch.status_code == 200, batch.text
    decrypted = client.decrypt(batch.content)
    assert decrypted.shape == (40, 10)
    assert (
        np.max(np.abs(decrypted - program.forward(rows))) <= listing[EXACT]["error_bound"]["batch"]
    )

    # flooded: within error_bound + 6 sigma per output (a Gaussian passes 6 sigma with
    # probability 2e-9; over the 10 + 400 outputs here, type I error <= 1e-6), and two
    # answers to one request differ (fresh noise and re-randomisation every time)
    first = _infer(http, FLOODED, flooded, vector)
    second = _infer(http, FLOODED, flooded, vector)
    assert first.status_code == second.status_code == 200
    assert first.content != second.content
    error = np.max(np.abs(client.decrypt(first.content) - program.forward(x[0])))
    assert error <= listing[FLOODED]["max_error"]["vector"]
    flooded_batch = client.decrypt(
        _infer(http, FLOODED, flooded, client.encrypt(rows, layout="batch")).content
    )
    assert (
        np.max(np.abs(flooded_batch - program.forward(rows)))
        <= listing[FLOODED]["max_error"]["batch"]
    )
    # the smallest top-two logit gap in these rows is 0.35, 6.7 standard deviations of the
    # difference of two flooded logits (sigma 0.037 each): type I error < 1e-9
    assert (flooded_batch.argmax(1) == program.forward(rows).argmax(1)).all()

    answered = [e for e in _entries(he_gateway) if e.details["route"].endswith("/infer")]
    assert [e.details["records_charged"] for e in answered] == [32, 2048, 32, 32, 2048]
    assert {e.details["records_declared"] for e in answered} == {1, 40}
    assert all(
        e.outcome.value == "allowed" and e.purpose == "encrypted inference" for e in answered
    )


def _context_with(
    context: bytes, *, plan: dict[str, Any] | None = None, extra: bytes = b""
) -> bytes:
    meta, sections = unpack(context, "context")
    header = {k: v for k, v in meta.items() if k not in ("kind", "sizes", "sha256")}
    if plan is not None:
        header["plan"] = plan
    return pack("context", header, [*sections, extra] if extra else sections)


def test_contexts_that_are_not_exactly_the_plans_public_keys_are_refused(
    he_gateway, digits, client
):
    program, _ = digits
    http = he_gateway.client("consumer")
    secret = _error(
        http.post(f"/v1/he/{EXACT}/contexts", content=client.to_bytes(), headers=OCTETS),
        400,
        "invalid_input",
    )
    assert "secret key" in secret["message"]
    assert not list((he_gateway.home / "serve" / "he-contexts").glob("*/*.ctx"))

    # a secret key tucked into a public context as one more section
    secret_section = unpack(client.to_bytes(), "secret")[1][0]
    tucked = _context_with(client.public_context(), extra=secret_section)
    assert (
        "exactly the keys"
        in _error(
            http.post(f"/v1/he/{EXACT}/contexts", content=tucked, headers=OCTETS),
            400,
            "invalid_input",
        )["message"]
    )

    # keys for other parameters (batch only: no rotations), and rotations beyond the plan's
    other = HEClient.generate(program.plan(layouts=("batch",)))
    mismatch = _error(
        http.post(f"/v1/he/{EXACT}/contexts", content=other.public_context(), headers=OCTETS),
        400,
        "invalid_input",
    )
    assert "other parameters" in mismatch["message"]
    assert "galois_steps" in mismatch["expected"]
    plan = program.plan().to_dict()
    wider = HEPlan.from_dict({**plan, "galois_steps": [*plan["galois_steps"], 2, 8]})
    relabelled = _context_with(HEClient.generate(wider).public_context(), plan=plan)
    beyond = _error(
        http.post(f"/v1/he/{EXACT}/contexts", content=relabelled, headers=OCTETS),
        400,
        "invalid_input",
    )
    assert "Galois keys the program does not need" in beyond["message"]


def test_only_the_key_that_uploaded_a_context_may_use_it(he_gateway, digits, client):
    _, x = digits
    owner, other = he_gateway.client("consumer"), he_gateway.client("analyst")
    context = _upload(owner, EXACT, client.public_context())
    request = client.encrypt(x[0])
    assert _infer(owner, EXACT, context, request).status_code == 200
    _error(_infer(other, EXACT, context, request), 404, "not_found")
    _error(other.delete(f"/v1/he/{EXACT}/contexts/{context}"), 404, "not_found")
    refused = [e for e in _entries(he_gateway) if e.details.get("refused")]
    assert [e.details["refused"] for e in refused] == ["another key's context"] * 2
    assert owner.delete(f"/v1/he/{EXACT}/contexts/{context}").status_code == 204
    _error(_infer(owner, EXACT, context, request), 404, "not_found")
    # unknown programs, malformed ids
    _error(_infer(owner, "no-such-program", context, request), 404, "not_found")
    _error(_infer(owner, EXACT, "not-hex", request), 422, "invalid_input")


def test_expired_contexts_are_gone_and_a_recompiled_program_refuses_old_ones(
    he_gateway, digits, client
):
    program, x = digits
    http = he_gateway.client("consumer")
    folder = he_gateway.home / "serve" / "he-contexts" / EXACT
    context = _upload(http, EXACT, client.public_context())
    record = json.loads((folder / f"{context}.json").read_text())
    assert record["key_id"] == he_gateway.keys["consumer"].split("_")[2]
    assert oct((folder / f"{context}.ctx").stat().st_mode & 0o777) == "0o600"
    (folder / f"{context}.json").write_text(json.dumps({**record, "expires": record["created"]}))
    _error(_infer(http, EXACT, context, client.encrypt(x[0])), 404, "not_found")
    assert list(folder.iterdir()) == [folder / ".lock"]  # the expired context was removed

    context = _upload(http, EXACT, client.public_context())
    install_program(he_gateway.home, EXACT, program, layouts=("batch",), flood_sigma=None)
    stale = _error(_infer(http, EXACT, context, client.encrypt(x[0])), 409, "conflict")
    assert "recompiled" in stale["message"]
    # a folder whose plan is not its program's is left out of the listing, not served
    plan = he_gateway.home / "he" / FLOODED / "program.plan.json"
    plan.write_text(json.dumps({**json.loads(plan.read_text()), "scale_bits": 20}))
    listed = http.get("/v1/he/models").json()["models"]
    assert [m["name"] for m in listed] == [EXACT]
    assert listed[0]["plan"]["layouts"] == ["batch"]
    assert (
        "not its program"
        in _error(
            http.post(f"/v1/he/{FLOODED}/contexts", content=b"x", headers=OCTETS),
            400,
            "invalid_input",
        )["message"]
    )


def test_a_key_keeps_at_most_four_contexts_per_program(he_gateway, client):
    http = he_gateway.client("consumer")
    context = client.public_context()
    ids = [_upload(http, FLOODED, context) for _ in range(4)]
    # what a crash mid-upload leaves: a temporary file, a context without its record
    folder = he_gateway.home / "serve" / "he-contexts" / FLOODED
    (folder / f".{'0' * 32}.ctx.abc.tmp").write_bytes(b"partial")
    (folder / f"{'0' * 32}.ctx").write_bytes(b"no record")
    other = _upload(he_gateway.client("analyst"), FLOODED, context)  # another key's: kept
    fifth = http.post(f"/v1/he/{FLOODED}/contexts", content=context, headers=OCTETS)
    assert fifth.status_code == 201
    assert fifth.json()["replaced"] == ids[:1]
    stored = sorted(path.name for path in folder.iterdir() if path.name != ".lock")
    kept = [*ids[1:], other, fifth.json()["context"]]
    assert stored == sorted([f"{c}.ctx" for c in kept] + [f"{c}.json" for c in kept])


def test_oversized_mistyped_and_garbage_bodies_are_clean_4xx(he_gateway, digits, client):
    _, x = digits
    http = he_gateway.client("consumer")
    context = _upload(http, EXACT, client.public_context())
    # beyond max_he_bytes (4 MiB): refused by the gateway, declared or streamed
    huge = b"\0" * (5 << 20)
    _error(
        http.post(f"/v1/he/{EXACT}/contexts", content=huge, headers=OCTETS), 413, "data_too_large"
    )
    streamed = http.post(
        f"/v1/he/{EXACT}/contexts", content=iter([huge[: 1 << 20]] * 5), headers=OCTETS
    )
    _error(streamed, 413, "data_too_large")
    # beyond max_he_request_bytes (3 MiB) but within max_he_bytes: refused by its length
    big = _error(_infer(http, EXACT, context, b"\0" * (3 << 20) + b"\0"), 413, "data_too_large")
    assert big["details"]["limit"] == 3 << 20
    request = client.encrypt(x[0])
    typed = http.post(
        f"/v1/he/{EXACT}/infer",
        params={"context": context},
        content=request,
        headers={"Content-Type": "application/json"},
    )
    _error(typed, 415, "unsupported_media_type")
    _error(http.post(f"/v1/he/{EXACT}/contexts", content=b"{}"), 415, "unsupported_media_type")
    assert (
        "not a Veil HE file"
        in _error(_infer(http, EXACT, context, b"garbage"), 400, "invalid_input")["message"]
    )
    flipped = bytearray(request)
    flipped[-100] ^= 0xFF
    assert (
        "checksum"
        in _error(_infer(http, EXACT, context, bytes(flipped)), 400, "invalid_input")["message"]
    )
    _error(
        http.post(
            f"/v1/he/{EXACT}/contexts", content=MAGIC + struct.pack(">I", 3) + b"{x", headers=OCTETS
        ),
        400,
        "invalid_input",
    )
    # a request for other keys is refused before it is charged
    stranger = HEClient.generate(client.plan)
    _error(_infer(http, EXACT, context, stranger.encrypt(x[0])), 400, "invalid_input")
    # none of the refusals took a record: the next answer has the whole budget left but one
    answer = _infer(http, EXACT, context, request)
    assert answer.status_code == 200
    assert answer.headers["x-veil-records-left"] == str(5000 - 32)


def test_the_count_budget_and_the_rate_limit_hold(start_gateway, digits, client):
    program, x = digits
    gateway = start_gateway(f"models:\n  {EXACT}: {{queries_per_key: 2100, rate: 3/minute}}\n")
    install_program(gateway.home, EXACT, program, flood_sigma=None)
    http = gateway.client("consumer")
    context = _upload(http, EXACT, client.public_context())  # request 1 of 3 this minute
    batch = _infer(http, EXACT, context, client.encrypt(x[:2], layout="batch"))
    assert batch.status_code == 200
    assert batch.headers["x-veil-records-left"] == str(2100 - 2048)
    spent = _error(
        _infer(http, EXACT, context, client.encrypt(x[:2], layout="batch")), 403, "budget_exceeded"
    )
    assert spent["details"]["left"] == 2100 - 2048
    assert "vector layout" in spent["fix"]
    limited = _infer(http, EXACT, context, client.encrypt(x[0]))
    _error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    usage = [e for e in _entries(gateway) if e.details["route"].endswith("/infer")]
    assert [e.details["status"] for e in usage] == [200, 403, 429]
    assert json.loads(json.dumps(usage[0].details))["records_charged"] == 2048


@pytest.mark.slow
@pytest.mark.postgres
def test_four_workers_share_contexts_and_one_count_budget(gateway_pg, digits, client):
    from concurrent.futures import ThreadPoolExecutor

    program, x = digits
    install_program(gateway_pg.home, EXACT, program, flood_sigma=None)
    with gateway_pg.client("consumer") as http:
        context = _upload(http, EXACT, client.public_context())
        request = client.encrypt(x[0])

        def ask(_: int) -> tuple[int, str | None]:
            with gateway_pg.client("consumer") as own:  # a connection each: spread over workers
                answer = _infer(own, EXACT, context, request)
                return answer.status_code, answer.headers.get("x-veil-records-left")

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(16)))
    # 16 answers of 32 records from one budget of 500: the counter saw every one exactly once
    assert sorted(status for status, _ in answers) == [200] * 15 + [403]
    left = sorted(int(value) for status, value in answers if status == 200)
    assert left == [500 - 32 * k for k in range(15, 0, -1)]
