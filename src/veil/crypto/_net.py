"""A full mesh of TCP links on localhost between MPC nodes, with length-prefixed frames.

Every node (a party or the dealer) listens on its own port and dials every
other node: the link it dials carries what it *sends*, the link it accepts
carries what it *receives*. A reader thread per incoming link drains frames
into a queue, so a node can push megabytes to several peers from one thread
without the classic all-send-first deadlock. A peer is **dropped** as soon as
its process is gone (connection refused, reset or closed; the kernel closes a
killed process's sockets) or when it stays silent past ``timeout`` seconds:
nothing waits forever.

A frame is ``!IQ`` (tag length, payload length), the UTF-8 tag, then the
payload. The first frame on every link is a hello carrying the dialler's id
and the run's random token, so a stray local process cannot join a run.

Links are plain TCP on 127.0.0.1: the parties of one run share a machine and
the threat model is semi-honest, so TLS is left out (docs/mpc.md says so).
"""

from __future__ import annotations

import hmac
import json
import queue
import socket
import struct
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import cast

__all__ = ["HEADER", "Mesh", "PeerDropped"]

HEADER = struct.Struct("!IQ")
_DROPPED = object()


class PeerDropped(Exception):  # noqa: N818 - an event between nodes, caught inside the protocol
    """A peer stopped answering (its process died or timed out)."""

    def __init__(self, peer: int, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"node {peer} dropped out ({reason})")


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
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


def _read_frame(sock: socket.socket) -> tuple[str, bytearray]:
    tag_size, payload_size = HEADER.unpack(_recv_exact(sock, HEADER.size))
    tag = bytes(_recv_exact(sock, tag_size)).decode("utf-8") if tag_size else ""
    return tag, _recv_exact(sock, payload_size)


@dataclass
class Mesh:
    """This node's links to the others.

    Args:
        me: This node's id.
        listener: A bound, listening socket (its port was announced beforehand).
        token: The run's shared secret token (hex).
        timeout: Seconds to wait for any one frame or connection before a peer
            counts as dropped.
    """

    me: int
    listener: socket.socket
    token: str
    timeout: float
    bytes_sent: int = 0
    dropped: dict[int, str] = field(default_factory=dict)
    _out: dict[int, socket.socket] = field(default_factory=dict)
    _in: dict[int, socket.socket] = field(default_factory=dict)
    _queues: dict[int, queue.Queue[object]] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _closing: bool = False

    # ------------------------------------------------------------ set-up

    def connect(self, ports: dict[int, int | None], listen_to: set[int]) -> None:
        """Dial every node in ``ports`` and accept a link from each node of ``listen_to``.

        A node whose port is ``None`` (it died before announcing one), that
        refuses the connection, or that never dials back is marked dropped.
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

    def _accept(self, expected: set[int]) -> None:
        deadline = time.monotonic() + self.timeout
        self.listener.settimeout(0.05)
        while True:
            with self._lock:
                missing = expected - set(self._in) - set(self.dropped)
            if not missing or self._closing:
                break
            if time.monotonic() > deadline:
                for peer in missing:
                    self._drop(peer, f"did not connect within {self.timeout:g} s")
                break
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            self._greet(sock, expected)

    def _greet(self, sock: socket.socket, expected: set[int]) -> None:
        sock.settimeout(self.timeout)
        try:
            tag, payload = _read_frame(sock)
            hello = json.loads(bytes(payload))
            peer = int(hello["from"])
            genuine = tag == "hello" and hmac.compare_digest(str(hello["token"]), self.token)
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            genuine, peer = False, -1
        if not genuine or peer not in expected or peer in self._in:
            sock.close()
            return
        with self._lock:
            self._in[peer] = sock
            self._lock.notify_all()
        reader = threading.Thread(target=self._read, args=(peer, sock), daemon=True)
        reader.start()
        self._threads.append(reader)

    def _read(self, peer: int, sock: socket.socket) -> None:
        sock.settimeout(None)  # silence is timed by recv(); the reader only drains
        try:
            while True:
                self._queues[peer].put(_read_frame(sock))
        except (OSError, ConnectionError, struct.error) as exc:
            if not self._closing:
                self._drop(peer, f"link closed: {exc}")
            self._queues[peer].put(_DROPPED)

    def _watch(self, peer: int, sock: socket.socket) -> None:
        """Notice a peer's death on the link this node only writes to."""
        while not self._closing:
            try:
                if not sock.recv(1):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        if not self._closing:
            self._drop(peer, "link closed")
            # With an incoming link, its reader delivers the frames still in flight and then
            # the end marker; without one, nothing else would wake a waiting recv().
            queue_ = self._queues.get(peer)
            with self._lock:
                reader_exists = peer in self._in
            if queue_ is not None and not reader_exists:
                queue_.put(_DROPPED)

    def _drop(self, peer: int, reason: str) -> None:
        with self._lock:
            self.dropped.setdefault(peer, reason)
            self._lock.notify_all()

    # ------------------------------------------------------------ messages

    def alive(self, peers: set[int]) -> set[int]:
        """The nodes of ``peers`` not dropped so far."""
        with self._lock:
            return {p for p in peers if p not in self.dropped}

    def send(self, peer: int, tag: str, payload: bytes | memoryview) -> bool:
        """Send one frame; ``False`` (and the peer marked dropped) if it cannot be delivered."""
        sock = self._out.get(peer)
        if sock is None or peer in self.dropped:
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

    def recv(self, peer: int, tag: str) -> bytearray:
        """The next frame from ``peer``, which must carry ``tag``.

        Raises:
            PeerDropped: The peer is gone or sent nothing for ``timeout`` seconds.
        """
        if peer not in self._in:
            raise PeerDropped(peer, self.dropped.get(peer, "never connected"))
        try:
            item = self._queues[peer].get(timeout=self.timeout)
        except queue.Empty:
            self._drop(peer, f"silent for {self.timeout:g} s")
            raise PeerDropped(peer, self.dropped[peer]) from None
        if item is _DROPPED:
            self._queues[peer].put(_DROPPED)  # later calls see it too
            raise PeerDropped(peer, self.dropped.get(peer, "link closed"))
        got_tag, payload = cast("tuple[str, bytearray]", item)
        if got_tag != tag:
            self._drop(peer, f"protocol error: expected {tag!r}, got {got_tag!r}")
            raise PeerDropped(peer, self.dropped[peer])
        return payload

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
