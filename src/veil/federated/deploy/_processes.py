"""Supervising Flower's executables: finding them, their environment, starting one with its
log, stopping it with everything it started, and reading its log when it fails.

Flower's processes pass their environment on to the app code they run, so each gets an
allow-listed environment (:func:`flower_environment`: telemetry off, runtime dependency
installation off, no ``VEIL_*`` secret). A process is stopped with SIGTERM, then SIGKILL,
together with its descendants; a PID is signalled only while its start time is the one
first seen, so a reused PID is never hit. The SuperLink and the SuperNode built on this are
:mod:`veil.federated.deploy._superlink` and :mod:`veil.federated.deploy._supernode`.

Threat model: docs/federated.md#deployment (indexed in docs/security.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, NoReturn, Self

from veil._childenv import child_environment
from veil.errors import DeploymentError, InvalidInputError, MissingDependencyError, VeilError

__all__ = [
    "ANSI",
    "TAIL_LINES",
    "FlowerProcess",
    "connectable",
    "descendants",
    "flower_environment",
    "flower_executable",
    "format_address",
    "free_port",
    "spawn",
    "split_address",
    "stopped_on_error",
    "warn_insecure",
]

logger = logging.getLogger("veil.federated")

TAIL_LINES = 40
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def flower_executable(name: str) -> str:
    """The path of a Flower executable, next to this interpreter first."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise MissingDependencyError(
            f"the Flower executable '{name}' was not found",
            expected=f"'{name}' beside {sys.executable} or on PATH (it comes with flwr)",
            got="nothing",
            fix="run: pip install 'veil[federated]'",
            details={"module": "flwr", "extra": "federated"},
        )
    return found


def flower_environment(flwr_home: Path, executable: str) -> dict[str, str]:
    """The environment of every Flower process: allow-listed, telemetry off, no installs.

    Flower's processes pass their environment on to the app code they run (a ServerApp on
    the coordinator, a ClientApp next to a data holder's data), so they get
    :func:`veil._childenv.child_environment`: no ``VEIL_*`` secret, no database URL.
    """
    bin_dir = str(Path(executable).parent)
    return child_environment(
        {
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),  # flwr-*app
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_HOME": str(flwr_home),
            "PYTHONUNBUFFERED": "1",
        }
    )


def split_address(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:  # noqa: PLR2004
        raise InvalidInputError(
            f"bad {what} address",
            expected="HOST:PORT, for example 127.0.0.1:9093 or [::1]:9093",
            got=repr(address),
        )
    return host, int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (for tests and local runs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def connectable(host: str, port: int) -> bool:
    # reviewed: connects (does not bind); a wildcard listener is probed on loopback
    target = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host  # noqa: S104
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _process_start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]  # field 22 of stat: start time in clock ticks


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every descendant of ``pid`` with its start time (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            started = _process_start_time(child)
            if started is not None:
                found.append((child, started))
                stack.append(child)
    return found


def _signal_if_same(pid: int, started: str, sig: int) -> bool:
    """Signal ``pid`` only if it is still the process first seen (no PID reuse)."""
    if _process_start_time(pid) != started:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
        return True
    return False


@dataclass
class FlowerProcess:
    """A started Flower executable, its log, and a clean stop (terminate, then kill)."""

    role: ClassVar[str] = "Flower process"

    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]
    _log: IO[bytes] | None = field(default=None, repr=False)
    _cleanup_dir: Path | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the process's log, without colour codes."""
        try:
            with self.log_path.open("rb") as stream:
                stream.seek(0, os.SEEK_END)
                stream.seek(max(0, stream.tell() - 16_384))
                text = stream.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(ANSI.sub("", text).splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return ANSI.sub("", self.log_path.read_text("utf-8", errors="replace"))
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process and everything it started: SIGTERM, then SIGKILL after ``timeout``."""
        family = descendants(self.pid) if self.alive else []
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._stop_family(family, timeout=min(timeout, 5.0))
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._cleanup_dir is not None:
            shutil.rmtree(self._cleanup_dir, ignore_errors=True)
            self._cleanup_dir = None

    @staticmethod
    def _stop_family(family: list[tuple[int, str]], timeout: float) -> None:
        # Flower starts flower-superexec in its own session; it exits by itself when its
        # parent goes, but not at once. Anything of ours still running gets SIGTERM, then
        # SIGKILL.
        alive = [(p, s) for p, s in family if _signal_if_same(p, s, signal.SIGTERM)]
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [(p, s) for p, s in alive if _process_start_time(p) == s and _running(p)]
        for pid, started in alive:
            _signal_if_same(pid, started, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def fail(
        self,
        message: str,
        *,
        fix: str,
        got: str | None = None,
        error: type[VeilError] = DeploymentError,
    ) -> NoReturn:
        """Stop the process and raise ``error`` with the tail of its log."""
        tail = self.log_tail()
        code = self.process.poll()
        where = "its log" if self._cleanup_dir is not None else str(self.log_path)
        self.stop()
        if got is None:
            got = f"exit code {code}" if code is not None else "no sign of readiness"
        raise error(
            message,
            expected=f"the {self.role} running and ready",
            got=f"{got}; the last lines of {where}:\n{tail}",
            fix=fix,
            details={"log": str(self.log_path), "exit_code": code, "command": self.command},
        )

    def run_until_stopped(self, *, fix: str, poll: float = 0.5) -> NoReturn:
        """Wait while the process runs (Ctrl-C ends the wait); raise if it stops by itself."""
        while self.alive:
            time.sleep(poll)
        self.fail(f"the {self.role} stopped unexpectedly", fix=fix)


@contextlib.contextmanager
def stopped_on_error(process: FlowerProcess) -> Iterator[None]:
    """Stop a process that is still starting when anything (Ctrl-C too) interrupts the wait."""
    try:
        yield
    except BaseException:
        process.stop()
        raise


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def spawn(
    command: list[str], *, log_path: Path, env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    try:
        process = subprocess.Popen(  # noqa: S603 - a fixed Flower executable, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it in order
        )
    except OSError:
        log.close()
        raise
    return process, log


def warn_insecure(what: str) -> None:
    logger.warning(
        "%s started with insecure=True: no TLS (traffic, model updates included, is readable "
        "and alterable on the network) and no SuperNode authentication (any process that "
        "reaches the port can join and receive the global model). Use only on a trusted "
        "machine for testing.",
        what,
    )


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
