"""The party processes as the runner sees them: launch, read their lines, finish, raise their errors.

Each node is ``python -m veil.mpc._party`` with the allow-listed child
environment (no ``VEIL_*`` secret, no database URL), talking to the runner
by lines of JSON on its standard input and output. A node that outlives the
deadline is killed; a node's error comes back as the same exception class it
raised, with its message, expectation and fix.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from veil._childenv import child_environment
from veil.errors import InvalidInputError, NotFoundError, PartyDroppedError, VeilError

__all__ = ["Node", "finish", "launch", "raise_from"]


@dataclass
class Node:
    name: str
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    reader: threading.Thread | None = None
    last: str = ""

    def start_reading(self) -> None:
        def pump() -> None:
            assert self.process.stdout is not None  # noqa: S101 - opened with PIPE
            for line in self.process.stdout:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def write(self, line: str) -> None:
        assert self.process.stdin is not None  # noqa: S101 - opened with PIPE
        with contextlib.suppress(OSError):
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()

    def next_line(self, deadline: float) -> str | None:
        try:
            return self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return None


def launch(name: str) -> Node:
    # only the allow-listed environment: no VEIL_* secret and no database URL reaches a party
    env = child_environment({"PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "veil.mpc._party"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    node = Node(name, process)
    node.start_reading()
    return node


def finish(nodes: list[Node], deadline: float) -> dict[str, str]:
    """Wait for every node (killing any that outlive ``deadline``); their last stdout line."""
    last: dict[str, str] = {}
    for node in nodes:
        line: str | None = ""
        while line is not None:
            line = node.next_line(deadline)
            if line is None:
                break
            node.last = line
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
        if node.reader is not None:
            node.reader.join(timeout=5)
        stderr = node.process.stderr.read() if node.process.stderr else ""
        for stream in (node.process.stdin, node.process.stdout, node.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        last[node.name] = node.last or (f"CRASH {stderr.strip()[-800:]}" if stderr.strip() else "")
    return last


_ERRORS: dict[str, type[VeilError]] = {
    "InvalidInputError": InvalidInputError,
    "NotFoundError": NotFoundError,
    "DropoutError": PartyDroppedError,
}


def raise_from(body: dict[str, Any], refused: dict[str, list[str]] | None = None) -> None:
    cls = _ERRORS.get(str(body.get("class")), VeilError)
    message = str(body.get("message", "a party failed"))
    details = dict(body.get("details") or {})
    if refused:  # outsiders that were turned away: the error names them, not only the parties
        details["refused"] = refused
        first = next(iter(refused.items()))
        message += f" (connections refused meanwhile, by node {first[0]}: {first[1][0]}"
        count = sum(len(v) for v in refused.values())
        message += f", and {count - 1} more)" if count > 1 else ")"
    raise cls(
        message,
        expected=body.get("expected"),
        got=body.get("got"),
        fix=body.get("fix"),
        details=details,
    )
