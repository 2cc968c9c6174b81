"""CKKS inference attacked from outside: contexts without the rotation keys they
claim, the secret key on disk under kill -9, and what a malicious client gets from a response.

Real TenSEAL keys, real child processes, real signals.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")
torch = pytest.importorskip("torch")

from veil._childenv import child_environment  # noqa: E402
from veil.errors import InvalidInputError  # noqa: E402
from veil.he import (  # noqa: E402 - after the skips
    HEClient,
    HEProgram,
    HEServer,
    compile_model,
    error_bound,
    poly_activation,
)
from veil.he._ckks import pack, unpack  # noqa: E402 - to forge the attacker's files


@pytest.fixture(scope="module")
def program() -> HEProgram:
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), poly_activation(), torch.nn.Linear(5, 3))
    inputs = np.random.default_rng(5).uniform(-1, 1, size=(50, 6))
    return compile_model(model, calibration=inputs)


def _with_header(blob: bytes, kind: str, **changes: object) -> bytes:
    meta, sections = unpack(blob, kind)
    header = {k: v for k, v in meta.items() if k not in ("kind", "sizes", "sha256")}
    return pack(kind, {**header, **changes}, sections)


# ----------------------------------------------------------------------------- Galois keys


def test_a_context_without_a_needed_rotation_key_is_refused(program: HEProgram) -> None:
    plan = program.plan()
    assert len(plan.galois_steps) >= 2
    short = HEClient.generate(dataclasses.replace(plan, galois_steps=plan.galois_steps[:1]))
    request = short.encrypt(np.full(6, 0.5))
    # the context names its own (short) plan ...
    with pytest.raises(InvalidInputError, match="rotation") as refused:
        HEServer(program, short.public_context(), workers=1).infer(request)
    assert str(plan.galois_steps[1]) in str(refused.value)
    # ... or lies about the keys it holds: the keys themselves are checked
    lying = _with_header(short.public_context(), "context", plan=plan.to_dict())
    with pytest.raises(InvalidInputError, match="rotation"):
        HEServer(program, lying, workers=1).infer(request)


def test_a_batch_only_context_still_serves_batches(program: HEProgram) -> None:
    client = HEClient.generate(program.plan(layouts=("batch",)))
    server = HEServer(program, client.public_context(), workers=1)
    x = np.random.default_rng(1).uniform(-1, 1, size=(3, 6))
    np.testing.assert_allclose(
        client.decrypt(server.infer(client.encrypt(x, layout="batch"))),
        program.forward(x),
        atol=error_bound(program, client.plan, layout="batch"),
    )
    with pytest.raises(InvalidInputError, match="vector layout"):
        server.infer(
            _with_header(client.encrypt(x[:1], layout="batch"), "request", layout="vector")
        )


# ----------------------------------------------------------------------------- the secret key


_CHILD = textwrap.dedent(
    """
    import sys
    from veil.he import HEClient, plan_parameters
    from veil.he import _seal

    plan = plan_parameters(1, integer_bits=4, slots_needed=8, input_dim=4, output_dim=1,
                           magnitude=10.0, input_limit=2.0, layouts=("batch",))
    client = HEClient.generate(plan)
    HEClient.from_bytes(client.to_bytes())
    print("ready", _seal._scratch.get("dir"), flush=True)
    while True:  # the secret key out to bytes and back, until the parent kills us
        HEClient.from_bytes(client.to_bytes())
    """
)


def _scratch_files(pid: int) -> list[Path]:
    """Files a process named ``pid`` left in any Veil HE scratch directory."""
    bases = {Path("/dev/shm"), Path(tempfile.gettempdir())}  # noqa: S108 - where SEAL scratch lives
    found: list[Path] = []
    for base in bases:
        if base.is_dir():
            for directory in base.glob("veil-he-*"):
                found.extend(directory.glob(f"{pid}-*"))
    return found


@pytest.mark.slow
def test_the_secret_key_never_lands_in_a_file_even_under_kill_9(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdout=subprocess.PIPE,
        text=True,
        env=child_environment({}),
        cwd=tmp_path,
    )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline().split()
        assert ready[:1] == ["ready"], ready
        seen: list[Path] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # watch while the key goes back and forth
            seen.extend(_scratch_files(child.pid))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    left = _scratch_files(child.pid)
    scratch = None if ready[1] == "None" else Path(ready[1])
    assert not left, f"the killed process left secret-key files behind: {left}"
    assert not seen, f"the secret key passed through named files: {sorted(set(seen))[:3]}"
    assert scratch is None, f"the secret key went through the scratch directory {scratch}"


# ----------------------------------------------------------------------------- a malicious client


def test_a_batched_request_is_evaluated_on_every_slot_whatever_count_it_declares(
    program: HEProgram,
) -> None:
    # documented: the server cannot see how many slots a client filled, so one request that
    # declares one input returns the model's outputs on N/2 inputs
    client = HEClient.generate(program.plan(layouts=("batch",)))
    server = HEServer(program, client.public_context(), workers=1)
    slots = client.plan.slots
    x = np.random.default_rng(2).uniform(-1, 1, size=(slots, 6))
    request = _with_header(client.encrypt(x, layout="batch"), "request", count=1)
    response = server.infer(request)
    _, sections = unpack(response, "response")
    stolen = np.stack([client._decrypt_slots(s) for s in sections], axis=1)
    assert stolen.shape == (slots, 3)
    np.testing.assert_allclose(
        stolen, program.forward(x), atol=error_bound(program, client.plan, layout="batch")
    )


def test_responses_are_a_deterministic_function_of_request_and_weights(
    program: HEProgram,
) -> None:
    # documented: no noise flooding and no re-randomisation of CKKS responses
    client = HEClient.generate(program.plan())
    server = HEServer(program, client.public_context(), workers=1)
    request = client.encrypt(np.full(6, 0.25))
    assert server.infer(request) == server.infer(request)
