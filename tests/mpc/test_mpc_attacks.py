"""Attacks on the MPC mesh from outside a run, and the teardown race.

An outsider is a local process that knows a party's port but not the run's
token. Each test performs the attack on real sockets on 127.0.0.1: against a
:class:`~veil.mpc._net.Mesh` in this process (where tracemalloc sees every
allocation), and against real party processes through ``run_parties``'s
test-only ``_hook``, which fires once every node listens and before the nodes
connect, so the outsider's connection is the first one a party accepts.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from veil.mpc import PartyDroppedError, _net, run_parties, secure_sum
from veil.mpc._net import HEADER, MAX_PENDING, REFUSED_KEPT, FrameRefusedError, Mesh, read_frame

TOKEN = secrets.token_hex(16)
GIB = 1 << 30
#: A party process with NumPy loaded peaks near 60 MiB; an allocated 2 GiB claim is 2,048.
PARTY_MEMORY_CEILING = 512 << 20


def _claim(size: int, tag: bytes = b"hello") -> bytes:
    """A frame header claiming a ``size``-byte payload (the payload itself never follows)."""
    return HEADER.pack(len(tag), size) + tag


def _hello(node: int, token: str) -> bytes:
    body = json.dumps({"from": node, "token": token}).encode()
    return HEADER.pack(5, len(body)) + b"hello" + body


ATTACKS: dict[str, bytes | None] = {
    "claims-2GiB": _claim(2 * GIB),
    "claims-2^64-1": _claim((1 << 64) - 1),
    "silent": None,
    "wrong-token": _hello(1, "f" * 32),
}
REASONS = {
    "claims-2GiB": "claimed a 2147483648-byte hello",
    "claims-2^64-1": f"claimed a {(1 << 64) - 1}-byte hello",
    "silent": "no hello",
    "wrong-token": "wrong run token",
}


@pytest.fixture
def outsiders() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _attack(port: int, payload: bytes | None, opened: list[socket.socket]) -> str:
    """Connect to ``port`` and send ``payload`` (nothing when None); the outsider's address."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    opened.append(sock)
    if payload is not None:
        sock.sendall(payload)
    host, local_port = sock.getsockname()[:2]
    return f"{host}:{local_port}"


# ---------------------------------------------------------------- the frame reader


@pytest.mark.parametrize("claimed", [2 * GIB, (1 << 64) - 1, 257])
def test_frame_reader_refuses_a_claim_above_the_cap_before_reading_it(claimed):
    left, right = socket.socketpair()
    with left, right:
        right.sendall(_claim(claimed) + b"x" * 64)
        tracemalloc.start()
        try:
            with pytest.raises(FrameRefusedError, match=f"claimed a {claimed}-byte hello"):
                read_frame(left, {"hello": 256})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 << 10, f"the refused read allocated {peak} bytes"
        left.settimeout(0.0)  # the 64 bytes after the header were never read
        assert left.recv(1 << 10) == b"x" * 64


def test_frame_reader_refuses_an_unexpected_tag_and_a_frame_over_its_step_cap():
    left, right = socket.socketpair()
    with left, right:
        right.sendall(_claim(8, b"open"))
        with pytest.raises(FrameRefusedError, match="unexpected 'open' frame"):
            read_frame(left, {"input": 16})
        right.sendall(_claim(17, b"input"))
        with pytest.raises(FrameRefusedError, match="at most 16"):
            read_frame(left, {"input": 16})
        right.sendall(HEADER.pack(1 << 20, 0))
        with pytest.raises(FrameRefusedError, match="tag of 1048576 bytes"):
            read_frame(left, {"input": 16})
        right.sendall(_claim(16, b"input") + bytes(16))
        assert read_frame(left, {"input": 16}) == ("input", bytearray(16))


# ---------------------------------------------------------------- a mesh in this process


def _listener() -> socket.socket:
    return socket.create_server(("127.0.0.1", 0), backlog=MAX_PENDING + 16)


def _pair(timeout: float, limits: dict[str, int]) -> tuple[Mesh, Mesh, dict[int, int | None]]:
    meshes = [Mesh(i, _listener(), TOKEN, timeout, limits=limits) for i in (0, 1)]
    ports: dict[int, int | None] = {i: m.listener.getsockname()[1] for i, m in enumerate(meshes)}
    return meshes[0], meshes[1], ports


def _connect_both(first: Mesh, second: Mesh, ports: dict[int, int | None]) -> None:
    thread = threading.Thread(target=second.connect, args=(ports, {0}))
    thread.start()
    first.connect(ports, {1})
    thread.join()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_outsider_cannot_inflate_stall_or_break_a_mesh(attack, outsiders):
    first, second, ports = _pair(timeout=20.0, limits={"open": 8})
    try:
        port = ports[0]
        assert port is not None
        address = _attack(port, ATTACKS[attack], outsiders)  # queued before any honest dial
        tracemalloc.start()
        try:
            _connect_both(first, second, ports)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, f"greeting the outsider allocated {peak} bytes"
        assert first.dropped == {} and second.dropped == {}, "an honest node was blamed"
        assert second.send(0, "open", np.arange(1, dtype=np.uint64).data.cast("B"))
        assert bytes(first.recv(1, "open")) == bytes(8)
        # the run went on without waiting for the silent one: it was cut off, and named
        assert any(address in line and REASONS[attack] in line for line in first.refused), (
            first.refused
        )
        assert _closed_by_the_party(outsiders[0])
    finally:
        first.close()
        second.close()


def _closed_by_the_party(sock: socket.socket) -> bool:
    """The outsider's end sees the party close (end of stream, or a reset when data was unread)."""
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_silent_connection_is_cut_off_at_its_own_hello_deadline(monkeypatch, outsiders):
    monkeypatch.setattr(_net, "HELLO_SECONDS", 0.2)
    first, second, ports = _pair(timeout=20.0, limits={})
    try:
        port = ports[0]
        assert port is not None
        address = _attack(port, None, outsiders)
        linking = threading.Thread(target=first.connect, args=(ports, {1}))
        linking.start()
        with first._lock:  # the honest peer dials only once the silent one has been cut off
            assert first._lock.wait_for(lambda: first.refused, timeout=10)
        second.connect(ports, {0})
        linking.join()
        assert first.refused == [f"{address}: sent no hello within 0.2 s"]
        assert first.dropped == {} and second.dropped == {}
    finally:
        first.close()
        second.close()


def test_a_flood_of_silent_connections_is_cut_off_and_counted(outsiders):
    first, second, ports = _pair(timeout=20.0, limits={})
    try:
        port = ports[0]
        assert port is not None
        flood = MAX_PENDING + 6
        for _ in range(flood):
            _attack(port, None, outsiders)
        _connect_both(first, second, ports)
        assert first.dropped == {} and second.dropped == {}, "an honest node was blamed"
        refusals = first.refusals()
        assert len(refusals) == REFUSED_KEPT + 1
        assert refusals[-1] == f"and {flood - REFUSED_KEPT} more"
        assert "crowded out: more than 64 connections" in refusals[0]
    finally:
        first.close()
        second.close()


def test_an_authenticated_peer_sending_an_oversized_frame_is_dropped_by_name():
    first, second, ports = _pair(timeout=20.0, limits={"open": 8})
    try:
        _connect_both(first, second, ports)
        sock = second._out[0]  # the honest link, misused on purpose
        tracemalloc.start()
        try:
            sock.sendall(_claim(2 * GIB, b"open"))
            with pytest.raises(Exception, match="node 1 dropped out") as caught:
                first.recv(1, "open")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20
        assert "2147483648" in str(caught.value) and "at most 8" in str(caught.value)
        assert set(first.dropped) == {1}
    finally:
        first.close()
        second.close()


def test_a_frame_of_the_wrong_size_for_the_step_is_a_protocol_error():
    first, second, ports = _pair(timeout=20.0, limits={"open": 16})
    try:
        _connect_both(first, second, ports)
        assert second.send(0, "open", bytes(9))
        with pytest.raises(Exception, match="9 bytes, expected 16"):
            first.recv(1, "open", size=16)
        assert set(first.dropped) == {1}
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------- real party processes


def _attacker(
    payload: bytes | None, opened: list[socket.socket], addresses: list[str]
) -> Callable[[dict[int, int | None], dict[str, int]], None]:
    def hook(ports: dict[int, int | None], pids: dict[str, int]) -> None:
        del pids
        port = ports[0]
        assert port is not None
        addresses.append(_attack(port, payload, opened))

    return hook


@pytest.mark.slow
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_honest_run_completes_correctly_despite_an_outsider(attack, outsiders):
    addresses: list[str] = []
    result = run_parties(
        "sum",
        [[1.5, 2.0], [3.25], [-1.0]],
        timeout=10.0,
        _hook=_attacker(ATTACKS[attack], outsiders, addresses),
    )
    assert result.value == 5.75 and result.contributors == (0, 1, 2)
    assert result.dropped == {}, "an honest party was blamed"
    assert all(peak < PARTY_MEMORY_CEILING for peak in result.peak_memory.values()), (
        result.peak_memory
    )
    (address,) = addresses
    assert any(address in line and REASONS[attack] in line for line in result.refused["0"]), (
        result.refused
    )
    assert set(result.refused) == {"0"}  # only the party attacked reports it, nobody else


@pytest.mark.slow
def test_a_failed_run_names_the_refused_outsider_beside_the_party_that_dropped(outsiders):
    addresses: list[str] = []
    with pytest.raises(PartyDroppedError, match="party 1") as caught:
        run_parties(
            "sum",
            [[1.0], [2.0], [3.0]],
            timeout=10.0,
            _crash={1: "start"},
            _hook=_attacker(ATTACKS["wrong-token"], outsiders, addresses),
        )
    (address,) = addresses
    assert caught.value.details["dropped"] == [1]  # the party that really died, nobody else
    assert any(address in line for line in caught.value.details["refused"]["0"])
    assert f"connections refused meanwhile, by node 0: {address}" in str(caught.value)


def test_party_processes_do_not_see_veil_secrets(monkeypatch):
    monkeypatch.setenv("VEIL_VAULT_PASSPHRASE", "correct horse battery staple")
    monkeypatch.setenv("VEIL_DATABASE_URL", "postgresql://veil:s3cret@db/veil")
    environments: dict[str, bytes] = {}

    def read_environments(ports: dict[int, int | None], pids: dict[str, int]) -> None:
        del ports
        for name, pid in pids.items():
            environments[name] = Path(f"/proc/{pid}/environ").read_bytes()

    if not Path("/proc/self/environ").is_file():
        pytest.skip("no /proc here: a party's environment cannot be read from outside")
    result = run_parties(
        "dot", [[1.0, 2.0], None], second=[None, [3.0, 4.0]], _hook=read_environments
    )
    assert result.value == 11.0
    assert set(environments) == {"0", "1", "dealer"}
    for name, raw in environments.items():
        assert b"correct horse" not in raw and b"s3cret" not in raw, f"node {name} sees a secret"
        assert not any(entry.startswith(b"VEIL_") for entry in raw.split(b"\0")), name


# ---------------------------------------------------------------- the teardown race


@pytest.mark.slow
def test_a_party_that_loses_the_race_does_not_report_the_finished_ones_as_dropped():
    """Party 1 gathers the opened shares only after parties 0 and 2 have finished and left."""
    result = run_parties("sum", [[1.0, 2.0], [10.0], [100.0]], _linger={1: "open"}, timeout=10.0)
    assert result.value == 113.0 and result.dropped == {}
    shamir = run_parties(
        "sum",
        [[1.0, 2.0], [10.0], [100.0]],
        protocol="shamir",
        threshold=2,
        _linger={0: "open"},
        timeout=10.0,
    )
    assert shamir.value == 113.0 and shamir.dropped == {}


@pytest.mark.slow
def test_twenty_clean_runs_report_nobody_dropped():
    """The issue's symptom: a clean 3-party sum printed the right value and a dropped party."""
    rng = np.random.default_rng(0)
    for run in range(20):
        parts = [rng.uniform(0, 100, 100).round(2) for _ in range(3)]
        result = secure_sum(parts)
        assert result.dropped == {}, f"run {run}: {result.dropped}"
        assert abs(result.value - float(np.concatenate(parts).sum())) <= 300 * result.resolution


def test_struct_header_is_unchanged():
    """The wire format the docs describe: tag length (4 bytes), payload length (8 bytes)."""
    assert HEADER.format == "!IQ" and struct.calcsize(HEADER.format) == 12


@pytest.mark.slow
def test_a_party_reports_its_own_peak_memory_not_its_parents():
    # Under a large parent (the CI's pytest process held 3 GB) ru_maxrss reported the parent's
    # size for every party; the attack tests above then failed on honest runs.
    ballast = bytearray(1 << 30)  # 1 GiB, touched so that it is resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    result = run_parties("sum", [[1.5, 2.0], [3.25], [-1.0]], timeout=30.0)
    assert result.value == 5.75
    assert all(0 < peak < PARTY_MEMORY_CEILING for peak in result.peak_memory.values()), (
        result.peak_memory
    )
    del ballast
