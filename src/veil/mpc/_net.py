"""A full mesh of TCP links on localhost between MPC nodes, with length-prefixed frames.

Every node (a party or the dealer) listens on its own port and dials every
other node: the link it dials carries what it *sends*, the link it accepts
carries what it *receives*. A reader thread per incoming link drains frames
into a queue, so a node can push megabytes to several peers from one thread
without the classic all-send-first deadlock. A peer is **dropped** as soon as
its process is gone (connection refused, reset or closed; the kernel closes a
killed process's sockets) or when it stays silent past ``timeout`` seconds:
nothing waits forever. A peer that sends ``bye`` has **finished**: the end of
its links is then expected, not a dropout, and the frames it sent before are
still delivered (a party that finishes first must not look dropped to a slower
one still gathering its last round).

A frame is ``!IQ`` (tag length, payload length), the UTF-8 tag, then the
payload. No frame is read beyond what the protocol step expects: the tag is at
most :data:`MAX_TAG` bytes, and each tag has a payload cap (``limits``, set by
the caller from the run's sizes), checked *before* anything is allocated, so a
claimed length cannot make a node reserve memory. The first frame on every link
is a hello (at most :data:`HELLO_MAX` bytes) carrying the dialler's id and the
run's random token, so a stray local process cannot join a run. Connections are
greeted concurrently by one selector loop, each with its own short deadline
(:data:`HELLO_SECONDS`): a silent or slow connection holds up nobody. A refused
connection is recorded in :attr:`Mesh.refused` with its address and the
reason, and never counts against an honest peer.

Links are plain TCP on 127.0.0.1: the parties of one run share a machine and
the threat model is semi-honest, so TLS is left out (docs/mpc.md says so).
The selector loop and the caps are written here because the protocol's frames
are a few fixed shapes over a handful of sockets; an asyncio or RPC stack would
own the process's event loop, which the party, a plain blocking script, has not.
"""

from __future__ import annotations

import hmac
import json
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "HEADER",
    "HELLO_MAX",
    "HELLO_SECONDS",
    "MAX_PENDING",
    "MAX_TAG",
    "FrameRefusedError",
    "Mesh",
    "PeerDropped",
    "read_frame",
]

HEADER = struct.Struct("!IQ")
#: The longest tag any frame may carry (the protocol's tags are a few letters).
MAX_TAG = 16
#: The largest hello payload: ``{"from": <id>, "token": <32 hex digits>}`` is about 60 bytes.
HELLO_MAX = 256
#: Seconds a new connection has to deliver its whole hello (honest nodes send it at once).
HELLO_SECONDS = 5.0
#: Connections greeted at once; past it the oldest waiting one is cut off.
MAX_PENDING = 64
#: Refused connections kept by name (a flood is counted, not stored).
REFUSED_KEPT = 32
_END = object()


class PeerDropped(Exception):  # noqa: N818 - an event between nodes, caught inside the protocol
    """A peer stopped answering (its process died or timed out) or broke the protocol."""

    def __init__(self, peer: int, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"node {peer} dropped out ({reason})")


class FrameRefusedError(Exception):
    """A frame refused before its payload was read (too long, unexpected, or malformed)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _check_tag_size(tag_size: int) -> None:
    if tag_size > MAX_TAG:
        raise FrameRefusedError(f"sent a tag of {tag_size} bytes (at most {MAX_TAG})")


def _check_payload(raw_tag: bytes, payload_size: int, limits: Mapping[str, int]) -> str:
    """The tag, once it is known and ``payload_size`` is within its cap; else a refusal."""
    try:
        tag = raw_tag.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameRefusedError("sent a tag that is not UTF-8") from None
    if tag not in limits:
        raise FrameRefusedError(f"sent an unexpected {tag!r} frame (expected {sorted(limits)})")
    if payload_size > limits[tag]:
        raise FrameRefusedError(
            f"claimed a {payload_size}-byte {tag} frame (at most {limits[tag]} bytes)"
        )
    return tag


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    """Exactly ``size`` bytes; callers have checked ``size`` against a cap."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        got = sock.recv_into(view[filled:], min(size - filled, 1 << 22))
        if got == 0:
            msg = "connection closed"
            raise ConnectionError(msg)
        filled += got
    return buffer


def read_frame(sock: socket.socket, limits: Mapping[str, int]) -> tuple[str, bytearray]:
    """One frame whose tag is in ``limits`` and whose payload is within that tag's cap.

    Raises:
        FrameRefusedError: The header breaks a cap; nothing past the tag was read.
        ConnectionError: The link closed mid-frame.
    """
    tag_size, payload_size = HEADER.unpack(_recv_exact(sock, HEADER.size))
    _check_tag_size(tag_size)
    tag = _check_payload(bytes(_recv_exact(sock, tag_size)), payload_size, limits)
    return tag, _recv_exact(sock, payload_size)


@dataclass
class _Greeting:
    """A new connection whose hello is still arriving (read without blocking)."""

    sock: socket.socket
    address: str
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    need: int = HEADER.size
    payload_size: int | None = None
    tag: str | None = None


@dataclass
class Mesh:
    """This node's links to the others.

    Args:
        me: This node's id.
        listener: A bound, listening socket (its port was announced beforehand).
        token: The run's shared secret token (hex).
        timeout: Seconds to wait for any one frame or connection before a peer
            counts as dropped.
        limits: The largest payload, in bytes, of each tag this node receives
            (``bye`` is always allowed, empty). Anything else is refused unread.
    """

    me: int
    listener: socket.socket
    token: str
    timeout: float
    limits: Mapping[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    dropped: dict[int, str] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    refused_more: int = 0
    _out: dict[int, socket.socket] = field(default_factory=dict)
    _in: dict[int, socket.socket] = field(default_factory=dict)
    _dead: set[int] = field(default_factory=set)
    _queues: dict[int, queue.Queue[object]] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _closing: bool = False

    def __post_init__(self) -> None:
        self.limits = {**self.limits, "bye": 0}

    # ------------------------------------------------------------ set-up

    def connect(self, ports: dict[int, int | None], listen_to: set[int]) -> None:
        """Dial every node in ``ports`` and accept a link from each node of ``listen_to``.

        A node whose port is ``None`` (it died before announcing one), that
        refuses the connection, or that never dials back is marked dropped.
        Connections that are not a genuine node of this run are refused and
        listed in :attr:`refused`; when this returns, none is left waiting.
        """
        for peer in listen_to:
            self._queues[peer] = queue.Queue()
        accepter = threading.Thread(target=self._accept, args=(set(listen_to),), daemon=True)
        accepter.start()
        for peer, port in sorted(ports.items()):
            if peer == self.me:
                continue
            if port is None:
                self._drop(peer, "never started")
                continue
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                hello = json.dumps({"from": self.me, "token": self.token}).encode()
                sock.sendall(HEADER.pack(5, len(hello)) + b"hello" + hello)
            except OSError as exc:
                self._drop(peer, f"connection failed: {exc.strerror or exc}")
                continue
            self._out[peer] = sock
            watcher = threading.Thread(target=self._watch, args=(peer, sock), daemon=True)
            watcher.start()
            self._threads.append(watcher)
        accepter.join()

    def _refuse(self, greeting: _Greeting, reason: str) -> None:
        with suppress(OSError):
            greeting.sock.close()
        with self._lock:
            if len(self.refused) < REFUSED_KEPT:
                self.refused.append(f"{greeting.address}: {reason}")
            else:
                self.refused_more += 1
            self._lock.notify_all()

    def refusals(self) -> list[str]:
        """The refused connections, with a count of those not kept by name."""
        with self._lock:
            more = [f"and {self.refused_more} more"] if self.refused_more else []
            return [*self.refused, *more]

    def _accept(self, expected: set[int]) -> None:  # noqa: C901 - one selector loop
        deadline = time.monotonic() + self.timeout
        hello_seconds = min(HELLO_SECONDS, self.timeout)
        pending: dict[socket.socket, _Greeting] = {}  # oldest first
        selector = selectors.DefaultSelector()
        self.listener.settimeout(0.0)  # non-blocking
        selector.register(self.listener, selectors.EVENT_READ)
        try:
            while True:
                with self._lock:
                    missing = expected - set(self._in) - set(self.dropped)
                if not missing or self._closing:
                    break
                now = time.monotonic()
                if now > deadline:
                    note = f"; {len(self.refused) + self.refused_more} other connection(s) refused"
                    for peer in missing:
                        self._drop(
                            peer,
                            f"did not connect within {self.timeout:g} s"
                            + (note if self.refused else ""),
                        )
                    break
                for sock, greeting in list(pending.items()):
                    if now > greeting.deadline:
                        selector.unregister(sock)
                        del pending[sock]
                        self._refuse(greeting, f"sent no hello within {hello_seconds:g} s")
                for key, _ in selector.select(timeout=0.05):
                    if key.fileobj is self.listener:
                        self._take(selector, pending, now + hello_seconds)
                        continue
                    sock = cast("socket.socket", key.fileobj)
                    greeting = pending[sock]
                    try:
                        done = self._advance(greeting, expected)
                    except FrameRefusedError as refusal:
                        done = True
                        self._refuse(greeting, refusal.reason)
                    if done:
                        selector.unregister(sock)
                        del pending[sock]
        finally:
            for greeting in pending.values():
                self._refuse(greeting, "sent no hello before every peer had connected")
            selector.close()

    def _take(
        self,
        selector: selectors.BaseSelector,
        pending: dict[socket.socket, _Greeting],
        deadline: float,
    ) -> None:
        """Accept every queued connection; cut off the oldest waiting ones past MAX_PENDING."""
        while True:
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.settimeout(0.0)  # non-blocking while it greets
            pending[sock] = _Greeting(sock, f"{address[0]}:{address[1]}", deadline)
            selector.register(sock, selectors.EVENT_READ)
            while len(pending) > MAX_PENDING:
                oldest = next(iter(pending))
                selector.unregister(oldest)
                self._refuse(
                    pending.pop(oldest),
                    f"crowded out: more than {MAX_PENDING} connections were waiting to greet",
                )

    def _advance(self, greeting: _Greeting, expected: set[int]) -> bool:
        """Read what has arrived of a hello; True once the connection is linked or refused."""
        try:
            chunk = greeting.sock.recv(greeting.need - len(greeting.buffer))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise FrameRefusedError(f"failed before its hello ({exc})") from None
        if not chunk:
            raise FrameRefusedError("closed the connection before its hello was complete")
        greeting.buffer += chunk
        if len(greeting.buffer) < greeting.need:
            return False
        if greeting.payload_size is None:  # the header is in: check the tag's length
            tag_size, greeting.payload_size = HEADER.unpack(greeting.buffer)
            _check_tag_size(tag_size)
            greeting.need += tag_size
            if tag_size:
                return False
        if greeting.tag is None:  # the tag is in: check it and the claimed payload size
            raw_tag = bytes(greeting.buffer[HEADER.size :])
            greeting.tag = _check_payload(raw_tag, greeting.payload_size, {"hello": HELLO_MAX})
            greeting.need += greeting.payload_size
            if greeting.payload_size:
                return False
        body = bytes(greeting.buffer[greeting.need - greeting.payload_size :])
        self._admit(greeting, body, expected)
        return True

    def _admit(self, greeting: _Greeting, body: bytes, expected: set[int]) -> None:
        try:
            hello = json.loads(body)
            peer, token = hello["from"], hello["token"]
        except (ValueError, KeyError, TypeError):
            raise FrameRefusedError("sent a hello that is not {from, token} JSON") from None
        if not isinstance(peer, int) or isinstance(peer, bool) or not isinstance(token, str):
            raise FrameRefusedError("sent a hello whose id or token has the wrong type")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise FrameRefusedError(f"wrong run token (claimed to be node {peer})")
        with self._lock:
            if peer not in expected or peer in self._in:
                reason = "already linked" if peer in self._in else "not expected here"
                raise FrameRefusedError(f"claimed to be node {peer}, {reason}")
            sock = greeting.sock
            sock.settimeout(None)  # blocking: its reader only drains
            self._in[peer] = sock
            self._lock.notify_all()
        reader = threading.Thread(target=self._read, args=(peer, sock), daemon=True)
        reader.start()
        self._threads.append(reader)

    def _read(self, peer: int, sock: socket.socket) -> None:
        """Drain frames into the peer's queue until ``bye``, the link's end, or a refusal."""
        try:
            while True:
                tag, payload = read_frame(sock, self.limits)
                if tag == "bye":
                    with self._lock:
                        self.finished.add(peer)
                        self._lock.notify_all()
                    break
                self._queues[peer].put((tag, payload))
        except FrameRefusedError as refusal:
            self._drop(peer, f"protocol error: {refusal.reason}")
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ConnectionError, struct.error) as exc:
            if not self._closing:
                self._drop(peer, f"link closed: {exc}")
        self._queues[peer].put(_END)

    def _watch(self, peer: int, sock: socket.socket) -> None:
        """Notice a peer's death on the link this node only writes to.

        With an incoming link from the same peer, its reader is the judge (it
        sees the same death, or a ``bye`` first); this watch speaks only for
        peers that never linked back.
        """
        while not self._closing:
            try:
                if not sock.recv(1):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        with self._lock:
            judged_elsewhere = peer in self._in or peer in self.finished
        if not self._closing and not judged_elsewhere:
            self._drop(peer, "link closed")
            queue_ = self._queues.get(peer)
            if queue_ is not None:
                queue_.put(_END)

    def _drop(self, peer: int, reason: str) -> None:
        with self._lock:
            self.dropped.setdefault(peer, reason)
            self._lock.notify_all()

    def fault(self, peer: int, reason: str) -> PeerDropped:
        """Mark ``peer`` as having broken the protocol; nothing more is taken from it."""
        self._drop(peer, f"protocol error: {reason}")
        with self._lock:
            self._dead.add(peer)
        return PeerDropped(peer, self.dropped[peer])

    # ------------------------------------------------------------ messages

    def alive(self, peers: set[int]) -> set[int]:
        """The nodes of ``peers`` not dropped so far."""
        with self._lock:
            return {p for p in peers if p not in self.dropped}

    def wait_ended(self, peers: set[int]) -> None:
        """Wait (up to ``timeout``) until every node of ``peers`` has finished or dropped."""
        with self._lock:
            self._lock.wait_for(
                lambda: peers <= set(self.dropped) | self.finished, timeout=self.timeout
            )

    def send(self, peer: int, tag: str, payload: bytes | memoryview) -> bool:
        """Send one frame; ``False`` (and the peer marked dropped) if it cannot be delivered."""
        sock = self._out.get(peer)
        if sock is None or peer in self.dropped or peer in self.finished:
            return False
        encoded = tag.encode("utf-8")
        try:
            sock.sendall(HEADER.pack(len(encoded), len(payload)) + encoded)
            sock.sendall(payload)
        except OSError as exc:
            self._drop(peer, f"send failed: {exc}")
            return False
        self.bytes_sent += HEADER.size + len(encoded) + len(payload)
        return True

    def recv(self, peer: int, tag: str, size: int | None = None) -> bytearray:
        """The next frame from ``peer``, which must carry ``tag`` (and ``size`` bytes, if given).

        Frames that arrived before a peer's link ended are delivered first.

        Raises:
            PeerDropped: The peer is gone, sent nothing for ``timeout`` seconds,
                or sent something else.
        """
        with self._lock:
            dead = peer in self._dead
        if dead:
            raise PeerDropped(peer, self.dropped[peer])
        if peer not in self._in:
            raise PeerDropped(peer, self.dropped.get(peer, "never connected"))
        try:
            item = self._queues[peer].get(timeout=self.timeout)
        except queue.Empty:
            self._drop(peer, f"silent for {self.timeout:g} s")
            with self._lock:
                self._dead.add(peer)
            raise PeerDropped(peer, self.dropped[peer]) from None
        if item is _END:
            self._queues[peer].put(_END)  # later calls see it too
            ended = "finished the run" if peer in self.finished else "link closed"
            raise PeerDropped(peer, self.dropped.get(peer, ended))
        got_tag, payload = cast("tuple[str, bytearray]", item)
        if got_tag != tag:
            raise self.fault(peer, f"expected {tag!r}, got {got_tag!r}")
        if size is not None and len(payload) != size:
            raise self.fault(peer, f"a {tag!r} frame of {len(payload)} bytes, expected {size}")
        return payload

    def finish(self) -> None:
        """Say ``bye`` on every outgoing link: this node has all it needs and is leaving."""
        bye = HEADER.pack(3, 0) + b"bye"
        for peer, sock in self._out.items():
            if peer not in self.dropped:
                with suppress(OSError):
                    sock.sendall(bye)

    def close(self) -> None:
        """Close every link and the listener (idempotent)."""
        self._closing = True
        for sock in [*self._out.values(), *self._in.values()]:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=1.0)
