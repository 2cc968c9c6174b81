"""One MPC node as its own OS process: ``python -m veil.mpc._party``.

The runner (:mod:`veil.mpc._mpc`) starts one such process per party, plus a
dealer process for multiplications, and speaks to each over its stdin/stdout:

1. it writes the node's job as one JSON line (its id, the protocol, the path of
   **its own** input and nothing of anybody else's, the run's token);
2. the node binds a port on 127.0.0.1 and answers ``PORT <n>``;
3. the runner writes the map of every node's port; the nodes build a TCP mesh
   (:class:`~veil.mpc._net.Mesh`) and run the protocol among themselves;
4. each party answers ``RESULT <json>`` (or ``ERROR <json>``), says ``bye`` to
   its peers (so that its leaving is not taken for a dropout) and exits.

Every frame a node receives is capped at the size its protocol step expects
(:func:`frame_limits`), and every payload must have exactly that size; the
report lists the connections the node refused and its peak memory.

The protocols, for a party holding private ``x_i``:

* **share**: encode ``x_i`` in fixed point, split it (additive n-of-n in
  Z_2^64, or Shamir t-of-n in GF(2^61 - 1)) and send share ``j`` to party ``j``;
* **agree** (Shamir only): every party announces whose shares it received; the
  inputs counted are those every surviving announcer received, so a party
  that died half-way through sending is either counted by all or by none;
* **multiply** (dot product, element-wise product): with a Beaver triple
  ``(a, b, c = ab)`` from the dealer, open ``d = X - a`` and ``e = Y - b`` and
  compute shares of ``XY = c + d b + e a + d e`` locally;
* **open**: broadcast the share of the result and reconstruct (all n shares
  for additive, any t for Shamir).

Only the modules this process needs are imported (NumPy and Veil's errors), so
a party starts in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil._memory import peak_resident_mb
from veil.errors import InvalidInputError, VeilError
from veil.mpc._net import MAX_PENDING, Mesh, PeerDropped
from veil.mpc._party_input import load_input
from veil.mpc._sharing import (
    Domain,
    FixedPoint,
    additive_share,
    beaver_finish,
    beaver_open_masks,
    beaver_triples,
    field_add,
    field_sum,
    product_limit,
    shamir_reconstruct,
    shamir_share,
)

__all__ = ["frame_limits", "main"]

U64 = npt.NDArray[np.uint64]
CRASH_PHASES = ("start", "input", "agree")


class DropoutError(VeilError):
    """Raised inside a party when too few peers are left; the runner re-raises it publicly."""

    code = "party_dropped"


def frame_limits(job: dict[str, Any]) -> dict[str, int]:
    """The largest payload of each frame a party of ``job`` may receive, in bytes."""
    n, m = int(job["parties"]), int(job["length"])
    if job["op"] in ("dot", "mul"):
        limits = {
            "triple": 3 * 8 * m,
            "input": 2 * 8 * m,
            "masks": 2 * 8 * m,
            "open": 8 if job["op"] == "dot" else 8 * m,
        }
    else:  # the encoded total (and count or weight), or one value per element
        width = m if job["elementwise"] else 2
        limits = {"input": 8 * width, "open": 8 * width}
    if job["protocol"] == "shamir":
        limits["agree"] = len(json.dumps(list(range(n))))
    return limits


class Party:
    """The protocol state of one party."""

    def __init__(self, job: dict[str, Any], mesh: Mesh) -> None:
        self.job = job
        self.mesh = mesh
        self.me = int(job["id"])
        self.n = int(job["parties"])
        self.shamir = job["protocol"] == "shamir"
        self.t = int(job["threshold"])
        self.fixed = FixedPoint(int(job["frac_bits"]), "field" if self.shamir else "ring")
        self.others = set(range(self.n)) - {self.me}
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------ helpers

    def _share(self, secret: U64) -> U64:
        if self.shamir:
            return shamir_share(secret, self.n, self.t)
        return additive_share(secret, self.n)

    def _add(self, a: U64, b: U64) -> U64:
        return field_add(a, b) if self.shamir else a + b

    def _need(self, have: set[int], what: str) -> None:
        need = self.t if self.shamir else self.n
        if len(have) < need:
            gone = {
                p: self.mesh.dropped.get(p, "no answer") for p in sorted(set(range(self.n)) - have)
            }
            names = ", ".join(f"party {p} ({why})" for p, why in gone.items())
            rule = (
                f"Shamir {self.t}-of-{self.n} needs {self.t} parties"
                if self.shamir
                else f"additive sharing is {self.n}-of-{self.n}: every party must stay"
            )
            raise DropoutError(
                f"{names} dropped out during {what}",
                expected=rule,
                got=f"{len(have)} part{'y' if len(have) == 1 else 'ies'} left: {sorted(have)}",
                fix=(
                    "rerun when every party is up, or use --protocol shamir with a threshold "
                    "below the number of parties to tolerate dropouts"
                ),
                details={"dropped": sorted(gone), "reasons": {str(p): r for p, r in gone.items()}},
            )

    def _exchange(self, tag: str, mine: U64, outgoing: U64 | None) -> dict[int, U64]:
        """Send ``outgoing[j]`` (or ``mine`` to all when None) to each peer and gather theirs."""
        for peer in sorted(self.others):
            payload = mine if outgoing is None else outgoing[peer]
            self.mesh.send(peer, tag, np.ascontiguousarray(payload).data.cast("B"))
        if self.job.get("linger") == tag:  # tests only: lose the race on purpose
            self.mesh.wait_ended(self.others)
        got: dict[int, U64] = {self.me: mine if outgoing is None else outgoing[self.me]}
        # Every peer, not only those still up: a peer that has finished and left may have
        # sent this round's frame before it went, and that frame counts.
        for peer in sorted(self.others):
            try:
                raw = self.mesh.recv(peer, tag, size=got[self.me].nbytes)
            except PeerDropped:
                continue
            got[peer] = np.frombuffer(raw, dtype=np.uint64).reshape(got[self.me].shape)
        self._need(set(got), tag)
        return got

    def _open(self, tag: str, share: U64) -> U64:
        got = self._exchange(tag, share, None)
        if not self.shamir:
            total = np.zeros_like(share)
            for value in got.values():
                total = total + value
            return total
        points = sorted(got)[: self.t]
        return shamir_reconstruct([got[p] for p in points], [p + 1 for p in points])

    def _crash(self, phase: str) -> None:
        if self.job.get("crash_after") == phase:  # tests only: a real, abrupt process death
            os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------ protocol

    def _input_shares(self, secret: U64) -> tuple[U64, list[int]]:
        """Share ``secret``, gather everyone's shares, and return the sum of the counted ones."""
        started = time.perf_counter()
        rows = self._share(secret)
        received = self._exchange("input", rows[self.me], rows)
        self._crash("input")
        counted = set(received)
        if self.shamir:  # agree on the inputs that count, among the parties still here
            mine = json.dumps(sorted(received)).encode()
            for peer in sorted(self.mesh.alive(self.others)):
                self.mesh.send(peer, "agree", mine)
            for peer in sorted(self.others):
                try:
                    counted &= self._announced(peer, self.mesh.recv(peer, "agree"))
                except PeerDropped:
                    continue
            self._crash("agree")
        total = np.zeros_like(received[self.me])
        for party in sorted(counted):
            total = self._add(total, received[party])
        self.seconds["share"] = time.perf_counter() - started
        return total, sorted(counted)

    def _announced(self, peer: int, raw: bytearray) -> set[int]:
        try:
            announced = json.loads(bytes(raw))
        except ValueError:
            announced = None
        if not isinstance(announced, list) or not all(
            isinstance(p, int) and 0 <= p < self.n for p in announced
        ):
            raise self.mesh.fault(peer, "an 'agree' frame that is not a list of party ids")
        return set(announced)

    def run(self, values: Any, second: Any) -> dict[str, Any]:
        op = self.job["op"]
        if op in ("dot", "mul"):
            return self._multiply(values, second, dot=op == "dot")
        return self._sum(values, second)

    def _sum(self, values: Any, weights: Any) -> dict[str, Any]:
        op, elementwise = self.job["op"], bool(self.job["elementwise"])
        if values is None:  # a party that holds nothing adds zeros and counts no values
            values = np.zeros(int(self.job["length"]) if elementwise else 0)
        x = values
        fixed = self.fixed
        if elementwise:
            if x.size != int(self.job["length"]):
                raise InvalidInputError(
                    f"party {self.me}'s vector has the wrong length",
                    expected=f"{self.job['length']} values, like every party",
                    got=f"{x.size}",
                    fix="give every party a vector of the same length",
                )
            encoded = fixed.to_integers(x, terms=self.n, what=f"party {self.me}'s values")
        elif weights is not None:
            if weights.size != x.size or (weights < 0).any():
                raise InvalidInputError(
                    f"party {self.me}'s weights do not fit its values",
                    expected=f"{x.size} non-negative weights",
                    got=f"{weights.size} weights, min {weights.min() if weights.size else 'n/a'}",
                    fix="give one non-negative weight per value",
                )
            terms = self.n * max(1, x.size)
            weighted = fixed.to_integers(x * weights, terms=terms, what=f"party {self.me}'s w*x")
            mass = fixed.to_integers(weights, terms=terms, what=f"party {self.me}'s weights")
            encoded = np.array([weighted.sum(), mass.sum()], dtype=np.int64)
        else:
            terms = self.n * max(1, x.size)
            total = fixed.to_integers(x, terms=terms, what=f"party {self.me}'s values").sum()
            encoded = np.array([total, x.size] if op == "mean" else [total], dtype=np.int64)
        share, counted = self._input_shares(fixed.lift(encoded))
        started = time.perf_counter()
        opened = fixed.signed(self._open("open", share))
        self.seconds["open"] = time.perf_counter() - started
        scale = float(fixed.scale)
        if elementwise:
            result: Any = opened.astype(np.float64) / scale
            if op == "mean":
                result = result / len(counted)
        elif weights is not None:
            weight_total = int(opened[1])
            result = [float(opened[0]) / weight_total if weight_total else math.nan]
        elif op == "mean":
            result = [float(opened[0]) / scale / int(opened[1]) if int(opened[1]) else math.nan]
        else:
            result = [float(opened[0]) / scale]
        plain_mean = op == "mean" and not elementwise and weights is None
        extra = {"count": int(opened[1])} if plain_mean else {}
        return self._report(np.asarray(result, dtype=np.float64), counted, extra)

    def _multiply(self, x: Any, y: Any, *, dot: bool) -> dict[str, Any]:
        m = int(self.job["length"])
        x = np.zeros(m) if x is None else x
        y = np.zeros(m) if y is None else y
        if x.size != m or y.size != m:
            raise InvalidInputError(
                f"party {self.me}'s vectors have the wrong length",
                expected=f"{m} values in x and in y",
                got=f"{x.size} and {y.size}",
                fix="give every party vectors of the same length (zeros where it holds nothing)",
            )
        limit = product_limit(self.fixed.domain, self.n, m if dot else 1)
        encoded = np.stack(
            [
                self._bounded(x, limit, "x", dot=dot),
                self._bounded(y, limit, "y", dot=dot),
            ]
        )
        triple_started = time.perf_counter()
        raw = self.mesh.recv(int(self.job["dealer"]), "triple", size=3 * 8 * m)
        a, b, c = np.frombuffer(raw, dtype=np.uint64).reshape(3, m)
        self.seconds["triple"] = time.perf_counter() - triple_started
        shares, counted = self._input_shares(self.fixed.lift(encoded))
        domain: Domain = self.fixed.domain
        started = time.perf_counter()
        masks = np.stack(beaver_open_masks(shares[0], shares[1], a, b, domain=domain))
        d, e = self._open("masks", masks)
        z = beaver_finish(d, e, a, b, c, domain=domain, add_constant=self.shamir or self.me == 0)
        if dot:
            z = field_sum(z).reshape(1) if self.shamir else z.sum(dtype=np.uint64, keepdims=True)
        opened = self._open("open", z)
        self.seconds["open"] = time.perf_counter() - started
        result = self.fixed.decode(opened, frac_bits=2 * self.fixed.frac_bits)
        return self._report(result, counted, {})

    def _bounded(self, values: Any, limit: int, name: str, *, dot: bool) -> npt.NDArray[np.int64]:
        scaled = np.rint(np.asarray(values, dtype=np.float64) * self.fixed.scale)
        if not np.isfinite(scaled).all() or (np.abs(scaled) > limit).any():
            finite = np.isfinite(scaled).all()
            raise InvalidInputError(
                f"party {self.me}'s {name} "
                + ("is out of the fixed-point range" if finite else "has NaN or infinite values"),
                expected=(
                    f"finite |{name}| <= {limit / self.fixed.scale:.6g} (a product of "
                    f"{self.fixed.frac_bits}-bit fixed-point values, {self.n} parties"
                    + (f", {scaled.size} terms" if dot else "")
                    + ")"
                ),
                got=f"|{name}| up to {float(np.nanmax(np.abs(scaled))) / self.fixed.scale:.6g}"
                if finite
                else "a non-finite value",
                fix="rescale the values or pass fewer fractional bits (frac_bits)",
            )
        return scaled.astype(np.int64)

    def _report(
        self, result: npt.NDArray[np.float64], counted: list[int], extra: dict[str, Any]
    ) -> dict[str, Any]:
        report: dict[str, Any] = {
            "party": self.me,
            "contributors": counted,
            "sha256": hashlib.sha256(result.tobytes()).hexdigest(),
            "seconds": self.seconds,
            **extra,
        }
        if result.size > 1 or self.job["elementwise"] or self.job["op"] == "mul":
            output = Path(self.job["output"])
            np.save(output, result)
            report["output"] = str(output)
        else:
            report["value"] = float(result[0])
        return report


def _deal(job: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    """The dealer: one Beaver triple per element, shared and sent to each party."""
    n, m = int(job["parties"]), int(job["length"])
    shamir = job["protocol"] == "shamir"
    a, b, c = beaver_triples(
        m, n, domain="field" if shamir else "ring", threshold=int(job["threshold"])
    )
    for party in range(n):
        payload = np.ascontiguousarray(np.stack([a[party], b[party], c[party]]))
        mesh.send(party, "triple", payload.data.cast("B"))
    return {"party": "dealer", "triples": m}


def _serve(job: dict[str, Any], stdin: Any, after: dict[str, Any]) -> dict[str, Any]:
    """Run this node; ``after`` receives the refused connections once the mesh is closed."""
    me, n = int(job["id"]), int(job["parties"])
    dealer = job["role"] == "dealer"
    party_crash = job.get("crash_after")
    if party_crash not in (None, *CRASH_PHASES):
        raise InvalidInputError(
            "unknown crash phase", expected=str(CRASH_PHASES), got=repr(party_crash), fix="use one"
        )
    values = second = None
    if not dealer:  # read and check this party's own input before anything is sent
        values = load_input(job.get("input"), me)
        second = load_input(job.get("second"), me)
    # a backlog wide enough that a flood of outsiders is accepted (and cut off) by the mesh,
    # rather than left in the kernel's queue in front of an honest party's dial
    listener = socket.create_server(("127.0.0.1", 0), backlog=max(n + 1, MAX_PENDING))
    limits = {} if dealer else frame_limits(job)
    mesh = Mesh(me, listener, str(job["token"]), float(job["timeout"]), limits=limits)
    try:
        sys.stdout.write(f"PORT {listener.getsockname()[1]}\n")
        sys.stdout.flush()
        ports = {int(k): v for k, v in json.loads(stdin.readline()).items()}
        if job.get("crash_after") == "start":
            os.kill(os.getpid(), signal.SIGKILL)
        started = time.perf_counter()
        if dealer:
            mesh.connect({p: ports[p] for p in range(n)}, set())
            report = _deal(job, mesh)
        else:
            peers = {p: ports[p] for p in range(n)}
            listen = set(range(n)) - {me}
            if job.get("dealer") is not None:
                listen.add(int(job["dealer"]))
            mesh.connect(peers, listen)
            report = Party(job, mesh).run(values, second)
        report["protocol_seconds"] = time.perf_counter() - started
        report["bytes_sent"] = mesh.bytes_sent
        mesh.finish()
        return report
    finally:
        mesh.close()
        after["refused"] = mesh.refusals()


def main() -> int:
    """Run one node: the job on the first stdin line, the port map on the second."""
    stdin = sys.stdin
    after: dict[str, Any] = {}
    try:
        job = json.loads(stdin.readline())
        report = _serve(job, stdin, after)
    except VeilError as error:
        body = {"class": type(error).__name__, **error.to_dict()}
        if after.get("refused"):
            body["details"]["refused"] = after["refused"]
        sys.stdout.write("ERROR " + json.dumps(body) + "\n")
        sys.stdout.flush()
        return error.exit_code
    except PeerDropped as dropped:
        body = {
            "class": "DropoutError",
            "code": "party_dropped",
            "message": str(dropped),
            "details": {
                "dropped": [dropped.peer],
                "reasons": {str(dropped.peer): dropped.reason},
                **({"refused": after["refused"]} if after.get("refused") else {}),
            },
        }
        sys.stdout.write("ERROR " + json.dumps(body) + "\n")
        sys.stdout.flush()
        return 13
    report["refused"] = after.get("refused", [])
    # The party's own peak (VmHWM): ru_maxrss would carry the coordinator's size at fork.
    peak = peak_resident_mb()
    report["peak_memory_bytes"] = 0 if peak is None else round(peak * 2**20)
    sys.stdout.write("RESULT " + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
