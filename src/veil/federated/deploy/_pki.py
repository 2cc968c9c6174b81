"""Real deployment of a federated run on Flower: credentials, SuperLink, SuperNodes, runs.

Flower's deployment runtime has one coordinating process, the *SuperLink*, and one
long-running process per data holder, the *SuperNode*. A run is submitted to the
SuperLink's Control API (``flwr run``); the SuperLink starts the ServerApp, which sends
messages that each SuperNode answers by starting a ClientApp next to its data.

This module drives the Flower 1.42 executables with secure defaults:

* :func:`create_credentials` makes a private certificate authority, the SuperLink's TLS
  certificate (for ``127.0.0.1``, ``::1``, ``localhost`` and any extra hostnames) and one
  authentication key pair per SuperNode (ECDSA P-384, OpenSSH format, private keys 0600).
  The CA's private key is discarded once the certificate is signed, so nobody can mint a
  second certificate that SuperNodes would trust.
* :func:`start_superlink` and :func:`start_supernode` start the processes (telemetry off,
  runtime dependency installation off), wait until they are ready and stop them, with
  their children, when the context manager exits. TLS and SuperNode authentication are
  on unless ``insecure=True`` is passed explicitly.
* :func:`register_supernode` authorises a SuperNode's public key with the SuperLink
  (``flwr supernode register``); a SuperNode whose key is not registered is refused.
* :func:`write_flower_app` writes the Flower App directory and :func:`submit_run` submits
  it (``flwr run --stream``), waits for it and checks that it completed.

The ``flwr`` command-line client reads its SuperLink connections from
``$FLWR_HOME/config.toml``; every call here uses a private temporary ``FLWR_HOME``, so
nothing touches the user's ``~/.flwr``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, NoReturn, Self

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veil._childenv import child_environment
from veil.errors import (
    ConflictError,
    DeploymentError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    PermissionDeniedError,
    VeilError,
)

__all__ = [
    "DeployCredentials",
    "DeployedRun",
    "DeploymentError",
    "NodeKey",
    "SuperLinkProcess",
    "SuperNodeProcess",
    "app_hash",
    "create_credentials",
    "create_node_key",
    "published_app_hash",
    "register_supernode",
    "start_superlink",
    "start_supernode",
    "submit_run",
    "veil_run_overrides",
    "write_flower_app",
    "write_published_app",
]

logger = logging.getLogger("veil.federated")

ConfigValue = str | int | float | bool

CA_CERTIFICATE = "ca.pem"
SERVER_CERTIFICATE = "superlink.pem"
SERVER_KEY = "superlink.key"
NODES_DIR = "nodes"
MANIFEST = "credentials.json"
DEFAULT_SERVER_APP = "veil.federated._apps:server_app"
DEFAULT_CLIENT_APP = "veil.federated._apps:client_app"
APP_MARKER = "# Written by veil.federated.write_flower_app"
RUN_CONFIG_KEY = "veil-config"  # the published app's one run-config key: the run as JSON
PUBLISHED_APP_NAME = "veil-federated"
_CONNECTION = "veil"  # the connection name in the private flwr config
_VALIDITY_DAYS = 365
_TAIL_LINES = 40
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RUN_ID = re.compile(r"Successfully started run (\d+)")


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (ECDSA P-384, OpenSSH format)."""

    name: str
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class DeployCredentials:
    """The files of a credentials directory (see :func:`create_credentials`).

    A SuperNode's machine needs only ``ca.pem`` and its own ``nodes/<name>.key``; the
    SuperLink needs ``ca.pem``, ``superlink.pem`` and ``superlink.key``.
    """

    directory: Path
    ca_certificate: Path
    server_certificate: Path
    server_key: Path
    nodes: tuple[NodeKey, ...] = ()
    hostnames: tuple[str, ...] = ()

    @classmethod
    def load(cls, directory: Path) -> DeployCredentials:
        """Read a credentials directory; only ``ca.pem`` is required to exist."""
        directory = Path(directory).expanduser()
        ca = directory / CA_CERTIFICATE
        if not ca.is_file():
            raise NotFoundError(
                f"no credentials in {directory}",
                expected=f"a CA certificate at {ca}",
                got="nothing there" if not directory.exists() else "a directory without ca.pem",
                fix="create them with `veil federate serve --credentials DIR` (or "
                "veil.federated.create_credentials), or point at the directory that holds "
                "ca.pem",
            )
        nodes = tuple(
            NodeKey(public.stem, public.with_suffix(".key"), public)
            for public in sorted((directory / NODES_DIR).glob("*.pub"))
        )
        hostnames: tuple[str, ...] = ()
        manifest = directory / MANIFEST
        if manifest.is_file():
            with contextlib.suppress(ValueError, OSError):
                hostnames = tuple(json.loads(manifest.read_text("utf-8")).get("hostnames", ()))
        return cls(
            directory=directory,
            ca_certificate=ca,
            server_certificate=directory / SERVER_CERTIFICATE,
            server_key=directory / SERVER_KEY,
            nodes=nodes,
            hostnames=hostnames,
        )

    def node(self, name: str) -> NodeKey:
        """The key pair called ``name`` (for example ``node-0``)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise NotFoundError(
            f"no SuperNode key called {name!r} in {self.directory / NODES_DIR}",
            expected="one of: " + (", ".join(n.name for n in self.nodes) or "(none)"),
            got=repr(name),
            fix="create it with veil.federated.create_node_key, or pass the key file itself",
        )

    def require_server(self) -> None:
        """Check that the SuperLink's certificate and key are present."""
        for path in (self.server_certificate, self.server_key):
            if not path.is_file():
                raise NotFoundError(
                    f"the SuperLink credentials are incomplete: {path.name} is missing",
                    expected=f"{path}",
                    got="nothing there",
                    fix="run the SuperLink from the credentials directory that "
                    "create_credentials wrote (it holds superlink.pem and superlink.key), "
                    "or recreate it with force=True (then give every SuperNode the new ca.pem)",
                )


def _write_secret(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``data`` atomically; private files are created 0600 and never widened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600 if private else 0o644)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_hostname(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9*](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+", name):
        raise InvalidInputError(
            "not a hostname or IP address",
            expected="a DNS name such as superlink.example.org, or an IP address",
            got=repr(name),
            fix="pass the name the SuperNodes will use in --superlink HOST:PORT",
        )
    return x509.DNSName(name.rstrip("."))


def create_node_key(directory: Path, name: str, *, force: bool = False) -> NodeKey:
    """Create one SuperNode key pair ``<directory>/<name>.key`` (0600) and ``<name>.pub``.

    The private key stays on the SuperNode's machine; only the ``.pub`` file goes to the
    SuperLink's operator, who authorises it (:func:`register_supernode`).

    Raises:
        ConflictError: When either file exists and ``force`` is false.
        InvalidInputError: When ``name`` is not a simple file name.
    """
    if not _KEY.fullmatch(name):
        raise InvalidInputError(
            "bad SuperNode key name",
            expected="letters, digits, '-' or '_'",
            got=repr(name),
        )
    directory = Path(directory).expanduser()
    node = NodeKey(name, directory / f"{name}.key", directory / f"{name}.pub")
    existing = [p for p in (node.private_key, node.public_key) if p.exists()]
    if existing and not force:
        raise ConflictError(
            f"a SuperNode key called {name!r} already exists",
            expected="no key files at " + ", ".join(str(p) for p in existing),
            got="existing files",
            fix="reuse it, choose another name, or pass force=True (the SuperLink must then "
            "authorise the new public key)",
        )
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_secret(node.private_key, private, private=True)
    _write_secret(node.public_key, public + f" veil-{name}\n".encode(), private=False)
    return node


def create_credentials(
    directory: Path,
    *,
    hostnames: Sequence[str] = (),
    nodes: int = 2,
    force: bool = False,
    valid_days: int = _VALIDITY_DAYS,
) -> DeployCredentials:
    """Create the TLS and authentication credentials of a deployment in ``directory``.

    Writes ``ca.pem`` (the certificate every SuperNode and ``flwr`` client trusts),
    ``superlink.pem`` and ``superlink.key`` (0600) for the SuperLink, valid for
    ``127.0.0.1``, ``::1``, ``localhost`` and ``hostnames``, ``nodes/node-<i>.key`` (0600)
    and ``nodes/node-<i>.pub`` for ``nodes`` SuperNodes, and a ``credentials.json``
    manifest. All keys are ECDSA P-384. The CA's private key is not kept.

    Args:
        directory: Where to write (created 0700 if missing).
        hostnames: Extra DNS names or IP addresses by which SuperNodes reach the SuperLink.
        nodes: How many SuperNode key pairs to create (0 when nodes make their own).
        force: Replace existing credentials (every SuperNode then needs the new ca.pem).
        valid_days: Lifetime of the certificates.

    Raises:
        ConflictError: When credentials already exist there and ``force`` is false.
        InvalidInputError: On a bad hostname, node count or lifetime.
    """
    if nodes < 0 or valid_days < 1:
        raise InvalidInputError(
            "bad credential parameters",
            expected="nodes >= 0 and valid_days >= 1",
            got=f"nodes={nodes}, valid_days={valid_days}",
        )
    directory = Path(directory).expanduser()
    names = ["localhost", "127.0.0.1", "::1", *hostnames]
    alternative = list(dict.fromkeys(_check_hostname(n) for n in names))
    existing = [
        p
        for p in (directory / CA_CERTIFICATE, directory / SERVER_KEY, directory / MANIFEST)
        if p.exists()
    ]
    if (directory / NODES_DIR).is_dir() and any((directory / NODES_DIR).iterdir()):
        existing.append(directory / NODES_DIR)
    if existing and not force:
        raise ConflictError(
            f"credentials already exist in {directory}",
            expected="an empty or new directory",
            got="existing " + ", ".join(p.name for p in existing),
            fix="reuse them (DeployCredentials.load, or `veil federate serve --credentials "
            "DIR` without --force), or pass force to replace them; replaced credentials "
            "invalidate every SuperNode's ca.pem and key",
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if force and (directory / NODES_DIR).is_dir():
        for stale in (directory / NODES_DIR).glob("*.[kp][eu][yb]"):
            stale.unlink()

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=valid_days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Veil federated deployment"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Veil deployment CA"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    del ca_key  # never written: no one can issue another certificate the nodes trust
    pem = serialization.Encoding.PEM
    _write_secret(
        directory / SERVER_KEY,
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private=True,
    )
    _write_secret(directory / SERVER_CERTIFICATE, server.public_bytes(pem), private=False)
    _write_secret(directory / CA_CERTIFICATE, ca.public_bytes(pem), private=False)
    node_keys = [
        create_node_key(directory / NODES_DIR, f"node-{index}", force=force)
        for index in range(nodes)
    ]
    manifest = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "not_valid_after": until.isoformat(timespec="seconds"),
        "hostnames": names,
        "ca_sha256": ca.fingerprint(hashes.SHA256()).hex(),
        "nodes": [node.name for node in node_keys],
        "key_type": "ECDSA P-384 (SuperNode keys in OpenSSH format)",
    }
    _write_secret(
        directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), private=False
    )
    return DeployCredentials.load(directory)


def _load_node_private_key(path: Path) -> None:
    """Check that ``path`` is an unencrypted OpenSSH EC private key on a NIST curve."""

    if not path.is_file():
        raise NotFoundError(
            "the SuperNode's private key was not found",
            expected=f"an OpenSSH private key file at {path}",
            got="nothing there",
            fix="pass the node-<i>.key file from the credentials directory (or create one "
            "with veil.federated.create_node_key and have its .pub authorised)",
        )
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError(
            "the SuperNode key cannot be read",
            expected="an unencrypted OpenSSH ECDSA private key (P-256, P-384 or P-521)",
            got=f"{path}: {exc}",
            fix="use a key written by create_credentials or create_node_key",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInputError(
            "the SuperNode key is not an elliptic-curve key",
            expected="an OpenSSH ECDSA private key (Flower authenticates SuperNodes with ECDSA)",
            got=f"{type(key).__name__} in {path}",
        )


def _load_node_public_key(path: Path) -> None:

    if not path.is_file():
        raise NotFoundError(
            "the SuperNode's public key was not found",
            expected=f"an OpenSSH public key file (.pub) at {path}",
            got="nothing there",
        )
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError(
            "the SuperNode public key cannot be read",
            expected="one OpenSSH line 'ecdsa-sha2-nistp384 AAAA...'",
            got=f"{path}: {exc}",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidInputError(
            "the SuperNode public key is not an elliptic-curve key",
            expected="an OpenSSH ECDSA public key (ecdsa-sha2-nistp256/384/521)",
            got=f"{type(key).__name__} in {path}",
        )


# ---------------------------------------------------------------- processes


def _executable(name: str) -> str:
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


def _environment(flwr_home: Path, executable: str) -> dict[str, str]:
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


def _split_address(address: str, what: str) -> tuple[str, int]:
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


def _connectable(host: str, port: int) -> bool:
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


def _descendants(pid: int) -> list[tuple[int, str]]:
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
class _FlowerProcess:
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

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last lines of the process's log, without colour codes."""
        try:
            with self.log_path.open("rb") as stream:
                stream.seek(0, os.SEEK_END)
                stream.seek(max(0, stream.tell() - 16_384))
                text = stream.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return _ANSI.sub("", self.log_path.read_text("utf-8", errors="replace"))
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process and everything it started: SIGTERM, then SIGKILL after ``timeout``."""
        family = _descendants(self.pid) if self.alive else []
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


@contextlib.contextmanager
def _stopped_on_error(process: _FlowerProcess) -> Iterator[None]:
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


def _spawn(
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


@dataclass
class SuperLinkProcess(_FlowerProcess):
    """A running SuperLink: the Fleet API alone on :attr:`address` (the data holders'),
    everything (Control, Runtime, Fleet) on :attr:`control_address` (loopback)."""

    role: ClassVar[str] = "SuperLink"

    address: str = ""
    credentials: DeployCredentials | None = None
    state_dir: Path = field(default_factory=Path)
    insecure: bool = False
    control: str = ""

    @property
    def control_address(self) -> str:
        """Where ``flwr run``, ``flwr list``, ``flwr log`` and ``flwr supernode register``
        connect: a loopback address, so only someone with a shell on this host can."""
        return self.control

    @property
    def fleet_address(self) -> str:
        """Where a SuperNode on this machine connects (:attr:`address`, wildcard made local)."""
        host, port = _split_address(self.address, "SuperLink")
        # reviewed: an address to connect to (the wildcard made local), not one to bind
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def register(self, public_key: Path | NodeKey, *, timeout: float = 60.0) -> int | None:
        """Authorise a SuperNode's public key (:func:`register_supernode`)."""
        return register_supernode(
            self.control_address,
            self.credentials,
            public_key,
            insecure=self.insecure,
            timeout=timeout,
        )

    def submit(
        self,
        app_dir: Path,
        run_config_overrides: Mapping[str, ConfigValue] | None = None,
        timeout: float = 3600.0,
    ) -> DeployedRun:
        """Submit a Flower App to this SuperLink and wait for the run (:func:`submit_run`)."""
        return submit_run(
            app_dir,
            self.control_address,
            self.credentials,
            run_config_overrides,
            timeout,
            insecure=self.insecure,
        )


@dataclass
class SuperNodeProcess(_FlowerProcess):
    """A running ``flower-supernode`` connected (and, with auth, activated) at a SuperLink,
    with the gate that starts ClientApps of approved apps only (:mod:`veil.federated._gates`)."""

    role: ClassVar[str] = "SuperNode"

    superlink: str = ""
    node_config: dict[str, ConfigValue] = field(default_factory=dict)
    node_id: int | None = None
    insecure: bool = False
    approved_apps: tuple[str, ...] = ()
    gate: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the gate and the ClientApps it started, then the SuperNode."""
        gate, self.gate = self.gate, None
        if gate is not None:
            family = _descendants(gate.pid) if gate.poll() is None else []
            if gate.poll() is None:
                gate.terminate()
                try:
                    gate.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    gate.kill()
                    gate.wait(timeout=timeout)
            self._stop_family(family, timeout=min(timeout, 5.0))
        super().stop(timeout)

    def refusals(self) -> list[str]:
        """The gate's refusals so far, one line each (the app hash that arrived, the run)."""
        return [line for line in self.log_text().splitlines() if "veil: refused app" in line]


def _warn_insecure(what: str) -> None:
    logger.warning(
        "%s started with insecure=True: no TLS (traffic, model updates included, is readable "
        "and alterable on the network) and no SuperNode authentication (any process that "
        "reaches the port can join and receive the global model). Use only on a trusted "
        "machine for testing.",
        what,
    )


def _loopback_address(address: str) -> tuple[str, int]:
    host, port = _split_address(address, "SuperLink Control API")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInputError(
            "the SuperLink's Control API must listen on a loopback address",
            expected="127.0.0.1:PORT, [::1]:PORT or localhost:PORT",
            got=repr(address),
            fix="keep the default; submit runs on the coordinator's host (or through an SSH "
            "tunnel to it). Flower 1.42 authenticates its Control API only with account "
            "authentication (OIDC), which its open-source distribution does not include, so "
            "anyone who reaches that address can register nodes and run code on them",
        )
    return host, port


def start_superlink(
    address: str,
    credentials: DeployCredentials | Path | None,
    state_dir: Path,
    insecure: bool = False,
    *,
    control_address: str | None = None,
    timeout: float = 60.0,
) -> SuperLinkProcess:
    """Start a SuperLink: the Fleet API alone on ``address``, everything on loopback.

    Flower 1.42 serves its Fleet, Control and Runtime APIs from one address, and its
    open-source distribution does not authenticate Control. Veil therefore runs Flower's
    SuperLink (its own app, arguments and state; see :mod:`veil.federated._gates`) with all
    APIs on ``control_address``, a loopback address, and only Fleet API calls answered on
    ``address``, where the data holders connect: every other request gets a 404. Only
    someone with a shell on this host can register a node or submit, list, stop or read
    runs.

    With credentials (the default) both addresses serve TLS with ``superlink.pem`` and only
    SuperNodes whose public keys were registered are admitted. Its state (runs, registered
    nodes) is kept in ``state_dir/superlink.db``, so registrations survive a restart; its
    log is ``state_dir/superlink.log``. Flower's processes get an allow-listed environment
    (no ``VEIL_*`` secret reaches a ServerApp).

    Use it as a context manager: the SuperLink and the ServerApp processes it started are
    stopped on exit.

    Args:
        address: ``HOST:PORT`` of the Fleet API, where SuperNodes connect (``0.0.0.0:9093``
            to accept other machines; reviewed: only the Fleet API answers there, see
            tests/federated/test_deploy_attacks.py).
        credentials: A :class:`DeployCredentials` or its directory; ``None`` only with
            ``insecure=True``.
        state_dir: Directory for the database, the log and Flower's private home.
        insecure: Plain HTTP and no SuperNode authentication. Explicit opt-out; logged.
        control_address: Loopback ``HOST:PORT`` of the Control and Runtime APIs (and the
            Fleet API again); a free port on 127.0.0.1 if None.
        timeout: Seconds to wait for readiness.

    Raises:
        InvalidInputError: When ``control_address`` is not a loopback address.
        NotFoundError: When the credentials are missing or incomplete.
        DeploymentError: When the process exits or is not ready within ``timeout``.
    """
    host, port = _split_address(address, "SuperLink")
    control_host, control_port = _loopback_address(control_address or f"127.0.0.1:{free_port()}")
    creds = _resolve_credentials(credentials, insecure=insecure)
    executable = _executable("flower-superlink")
    state_dir = Path(state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    command = [
        sys.executable,
        "-m",
        "veil.federated._gates",
        "superlink",
        "--veil-fleet-address",
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "--host",
        control_host,
        "--port",
        str(control_port),
        "--database",
        str(state_dir / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]
    if insecure:
        _warn_insecure("the SuperLink")
        command.append("--insecure")
    else:
        assert creds is not None  # noqa: S101 - _resolve_credentials guarantees it
        creds.require_server()
        command += [
            "--ssl-ca-certfile",
            str(creds.ca_certificate.resolve()),
            "--ssl-certfile",
            str(creds.server_certificate.resolve()),
            "--ssl-keyfile",
            str(creds.server_key.resolve()),
            "--enable-supernode-auth",
        ]
    log_path = state_dir / "superlink.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    env = _environment(state_dir / "flwr-home", executable)
    process, log = _spawn(command, log_path=log_path, env=env, cwd=state_dir)
    link = SuperLinkProcess(
        command=command,
        log_path=log_path,
        process=process,
        _log=log,
        address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        credentials=creds,
        state_dir=state_dir,
        insecure=insecure,
        control=(
            f"[{control_host}]:{control_port}"
            if ":" in control_host
            else f"{control_host}:{control_port}"
        ),
    )
    with _stopped_on_error(link):
        deadline = time.monotonic() + timeout
        while True:
            if not link.alive:
                in_use = "address already in use" in link.log_text()[offset:].lower()
                link.fail(
                    "the SuperLink exited during start-up",
                    fix=f"port {port} or {control_port} is taken: choose another --address "
                    "or --control-address"
                    if in_use
                    else "read the log above; check the credential files and the address",
                )
            if (
                link.log_text()[offset:].count("Uvicorn running on") >= 2  # noqa: PLR2004 - both servers
                and _connectable(host, port)
                and _connectable(control_host, control_port)
            ):
                return link
            if time.monotonic() > deadline:
                link.fail(
                    f"the SuperLink was not ready within {timeout:g} s",
                    fix="retry with a longer timeout on a loaded machine, or read the log above",
                )
            time.sleep(0.2)


def _resolve_credentials(
    credentials: DeployCredentials | Path | None, *, insecure: bool
) -> DeployCredentials | None:
    if isinstance(credentials, DeployCredentials):
        return credentials
    if credentials is not None:
        return DeployCredentials.load(Path(credentials))
    if insecure:
        return None
    raise NotFoundError(
        "no credentials were given, and TLS with SuperNode authentication is the default",
        expected="a credentials directory (ca.pem, superlink.pem, superlink.key, nodes/)",
        got="None",
        fix="create them with veil.federated.create_credentials(DIR) or `veil federate serve "
        "--credentials DIR`; pass insecure=True (--insecure) only for a local test",
    )


def _format_node_config(config: Mapping[str, ConfigValue]) -> str:
    """``key=value`` pairs as ``flower-supernode --node-config`` parses them (TOML values)."""
    parts = []
    for key, value in config.items():
        if not _KEY.fullmatch(key):
            raise InvalidInputError(
                "bad node-config key", expected="letters, digits, '-' or '_'", got=repr(key)
            )
        if isinstance(value, str):
            if "'" not in value:
                text = f"'{value}'"  # a TOML literal string: no escapes to worry about
            elif '"' not in value and "\\" not in value:
                text = f'"{value}"'
            else:
                raise InvalidInputError(
                    "a node-config value contains both quote characters",
                    expected="a string without both ' and \"",
                    got=repr(value),
                )
        else:
            text = _toml_value(key, value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _check_hashes(approved_apps: Sequence[str] | None) -> tuple[str, ...]:
    hashes = tuple(approved_apps) if approved_apps is not None else (published_app_hash(),)
    bad = [h for h in hashes if not isinstance(h, str) or not re.fullmatch(r"[0-9a-f]{64}", h)]
    if bad or not hashes:
        raise InvalidInputError(
            "bad approved app hashes",
            expected="one or more SHA-256 hashes of Flower App bundles (64 lowercase hex "
            "digits), as veil.federated.app_hash(APP_DIR) prints them",
            got=", ".join(map(repr, bad)) or "none",
            fix="leave approved_apps unset to approve Veil's published app only "
            "(veil.federated.published_app_hash())",
        )
    return tuple(dict.fromkeys(hashes))


def start_supernode(  # noqa: C901 - the start-up checks, each with its own message
    superlink: str,
    credentials: DeployCredentials | Path | None,
    node_key: NodeKey | Path | str | None,
    node_config: Mapping[str, ConfigValue],
    insecure: bool = False,
    *,
    port: int | None = None,
    state_dir: Path | None = None,
    timeout: float = 60.0,
    approved_apps: Sequence[str] | None = None,
) -> SuperNodeProcess:
    """Start ``flower-supernode`` against ``superlink`` and wait until the link admits it.

    The data holder decides which code runs next to its data: the SuperNode runs with
    ``--isolation process`` and Veil's gate (:mod:`veil.federated._gates`) starts a
    ClientApp only for a run whose app bundle (FAB) hashes to one of ``approved_apps``
    (by default only Veil's published app, :func:`published_app_hash`). Any other run gets
    a Flower error reply that names the hash that arrived and the approved ones, its code
    is never installed or loaded, and the refusal is logged (:meth:`SuperNodeProcess.refusals`).
    The SuperNode, the gate and every ClientApp get an allow-listed environment: no
    ``VEIL_*`` secret and no database URL of this machine reaches app code.

    The SuperNode verifies the SuperLink's certificate against ``ca.pem`` and proves its
    identity with its private key; the SuperLink accepts it only if the matching public
    key was registered. ``node_config`` reaches the ClientApp as ``context.node_config``
    (for Veil: ``partition-id``, ``num-partitions`` and optionally ``data``).

    Args:
        superlink: The SuperLink's ``HOST:PORT``; HOST must be in its certificate.
        credentials: A :class:`DeployCredentials`, its directory, or the ``ca.pem`` file.
        node_key: A :class:`NodeKey`, a private-key file, or a key name in ``credentials``.
        node_config: Flat ``str``/``int``/``float``/``bool`` values.
        insecure: Plain HTTP, no authentication. Explicit opt-out; logged.
        port: Local port of the SuperNode's Runtime API (ClientApp I/O); free one if None.
        state_dir: Log and Flower's private home; a temporary directory (removed on
            stop) if None.
        timeout: Seconds to wait until the SuperLink has admitted the node.
        approved_apps: SHA-256 hashes of the app bundles this node runs
            (:func:`app_hash`); Veil's published app only if None.

    Raises:
        InvalidInputError: When an approved hash is not a SHA-256 hex digest.
        NotFoundError: When the CA certificate or the key is missing.
        PermissionDeniedError: When the SuperLink refuses the node (unregistered key).
        DeploymentError: When the process exits otherwise or is not ready in time.
    """
    _split_address(superlink, "SuperLink")
    approved = _check_hashes(approved_apps)
    executable = _executable("flower-supernode")
    config = dict(node_config)
    command = [executable, "--superlink", superlink]
    if insecure:
        _warn_insecure("the SuperNode")
        command.append("--insecure")
    else:
        ca, key = _node_files(credentials, node_key)
        command += [
            "--root-certificates",
            str(ca.resolve()),
            "--auth-supernode-private-key",
            str(key.resolve()),
        ]
    if config:
        command += ["--node-config", _format_node_config(config)]
    runtime_port = port if port is not None else free_port()
    runtime = f"127.0.0.1:{runtime_port}"
    cleanup = None
    if state_dir is None:
        cleanup = state_dir = Path(tempfile.mkdtemp(prefix="veil-supernode-"))
    state_dir = Path(state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = state_dir / "superexec.secret"  # only the gate may take this node's tasks
    _write_secret(secret, os.urandom(32), private=True)
    command += [
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(secret),
    ]
    log_path = state_dir / "supernode.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    env = _environment(state_dir / "flwr-home", executable)
    process, log = _spawn(command, log_path=log_path, env=env, cwd=state_dir)
    node = SuperNodeProcess(
        command=command,
        log_path=log_path,
        process=process,
        _log=log,
        _cleanup_dir=cleanup,
        superlink=superlink,
        node_config=config,
        insecure=insecure,
        approved_apps=approved,
    )
    with _stopped_on_error(node):
        gate_command = [
            sys.executable,
            "-m",
            "veil.federated._gates",
            "node",
            "--runtime-api-address",
            runtime,
            "--superexec-auth-secret-file",
            str(secret),
            "--parent-pid",
            str(process.pid),
        ]
        for app in approved:
            gate_command += ["--approve", app]
        node.gate = subprocess.Popen(  # noqa: S603 - our own module, no shell
            gate_command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=state_dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            text = node.log_text()[offset:]
            if found := re.search(r"SuperNode ID: (\d+)", text):
                node.node_id = int(found.group(1))
                return node
            if not node.alive or "Failed to activate SuperNode" in text:
                if "Failed to activate SuperNode" in text:
                    node.fail(
                        "the SuperLink refused this SuperNode: its public key is not registered",
                        fix="the SuperLink's operator must authorise the node's .pub file "
                        "(`veil federate serve --authorize KEY.pub`, or register_supernode)",
                        got="'Failed to activate SuperNode' from the SuperLink",
                        error=PermissionDeniedError,
                    )
                if "CERTIFICATE_VERIFY_FAILED" in text:
                    node.fail(
                        "the SuperNode does not trust the SuperLink's TLS certificate",
                        fix="use the ca.pem from the credentials this SuperLink was started "
                        "with, and a --superlink host that its certificate names (localhost, "
                        "127.0.0.1, ::1 and the hostnames given to create_credentials / "
                        "serve --hostname)",
                    )
                node.fail(
                    "the SuperNode exited during start-up",
                    fix="read the log above: a certificate that does not name the --superlink "
                    "host, or a SuperLink that is not running, are the usual causes",
                )
            if time.monotonic() > deadline:
                node.fail(
                    f"the SuperNode was not admitted by {superlink} within {timeout:g} s",
                    fix="check that the SuperLink runs and is reachable at that address (a "
                    "firewall?), or retry with a longer timeout",
                )
            time.sleep(0.2)


def _node_files(
    credentials: DeployCredentials | Path | None, node_key: NodeKey | Path | str | None
) -> tuple[Path, Path]:
    """The CA certificate and the private key a secure SuperNode needs."""
    if credentials is None:
        raise NotFoundError(
            "a secure SuperNode needs the SuperLink's CA certificate",
            expected="credentials: a credentials directory or its ca.pem",
            got="None",
            fix="copy ca.pem from the SuperLink's credentials directory (it is public), or "
            "pass insecure=True (--insecure) only for a local test",
        )
    creds: DeployCredentials | None = None
    if isinstance(credentials, DeployCredentials):
        creds = credentials
        ca = creds.ca_certificate
    elif Path(credentials).is_dir():
        creds = DeployCredentials.load(Path(credentials))
        ca = creds.ca_certificate
    else:
        ca = Path(credentials).expanduser()
        if not ca.is_file():
            raise NotFoundError(
                "the SuperLink's CA certificate was not found",
                expected=f"a PEM file (ca.pem) at {ca}",
                got="nothing there",
                fix="copy ca.pem from the SuperLink's credentials directory",
            )
    if node_key is None:
        raise NotFoundError(
            "a secure SuperNode needs its authentication key",
            expected="node_key: a private key file or a key name in the credentials",
            got="None",
            fix="pass the node's .key file; its .pub must be registered at the SuperLink",
        )
    if isinstance(node_key, NodeKey):
        key = node_key.private_key
    elif isinstance(node_key, str):
        if creds is None:
            raise InvalidInputError(
                "a key name needs a credentials directory",
                expected="a key file path, or credentials given as a directory",
                got=repr(node_key),
            )
        key = creds.node(node_key).private_key
    else:
        key = Path(node_key).expanduser()
    _load_node_private_key(key)
    return ca, key


# ---------------------------------------------------------------- the flwr client


@contextlib.contextmanager
def _flwr_home(
    address: str, credentials: DeployCredentials | Path | None, *, insecure: bool
) -> Iterator[Path]:
    """A private FLWR_HOME whose config.toml names one SuperLink connection, 'veil'."""
    _split_address(address, "SuperLink Control API")
    lines = ["[superlink]", f'default = "{_CONNECTION}"', "", f"[superlink.{_CONNECTION}]"]
    lines.append(f"address = {json.dumps(address)}")
    if insecure:
        lines.append("insecure = true")
    else:
        if credentials is None:
            raise NotFoundError(
                "no credentials were given for a TLS connection to the SuperLink",
                expected="a credentials directory or its ca.pem",
                got="None",
                fix="pass the credentials, or insecure=True against an insecure SuperLink",
            )
        ca = (
            credentials.ca_certificate
            if isinstance(credentials, DeployCredentials)
            else (
                DeployCredentials.load(Path(credentials)).ca_certificate
                if Path(credentials).is_dir()
                else Path(credentials)
            )
        )
        if not ca.is_file():
            raise NotFoundError("the CA certificate was not found", expected=str(ca), got="none")
        lines.append(f"root-certificates = {json.dumps(str(ca.resolve()))}")
    with tempfile.TemporaryDirectory(prefix="veil-flwr-") as home:
        Path(home, "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        yield Path(home)


def _run_flwr(
    args: list[str], home: Path, *, timeout: float, log: IO[bytes] | None = None
) -> subprocess.CompletedProcess[bytes]:
    executable = _executable("flwr")
    env = _environment(home, executable)
    env["COLUMNS"] = "200"
    return subprocess.run(  # noqa: S603 - the fixed flwr executable, no shell
        [executable, *args],
        stdin=subprocess.DEVNULL,
        stdout=log if log is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=home,
        timeout=timeout,
        check=False,
    )


def _json_tail(output: str) -> dict[str, Any]:
    start = output.find("{")
    try:
        parsed = json.loads(output[start:]) if start >= 0 else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def register_supernode(
    superlink_control_address: str,
    credentials: DeployCredentials | Path | None,
    public_key: Path | NodeKey,
    *,
    insecure: bool = False,
    timeout: float = 60.0,
) -> int | None:
    """Authorise a SuperNode's public key at the SuperLink (``flwr supernode register``).

    Returns:
        The node id the SuperLink assigned, or None when the key was registered before
        (a SuperLink restarted on its database keeps its registrations; Flower does not
        say which id the key has).

    Raises:
        InvalidInputError: When the file is not an OpenSSH ECDSA public key.
        DeploymentError: When the SuperLink cannot be reached or refuses the request.
    """
    path = public_key.public_key if isinstance(public_key, NodeKey) else Path(public_key)
    path = path.expanduser().resolve()
    _load_node_public_key(path)
    with _flwr_home(superlink_control_address, credentials, insecure=insecure) as home:
        try:
            done = _run_flwr(
                ["supernode", "register", str(path), _CONNECTION, "--format", "json"],
                home,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(
                "registering the SuperNode key timed out",
                expected=f"an answer from {superlink_control_address} within {timeout:g} s",
                got="no answer",
                fix="check that the SuperLink runs at that address",
            ) from exc
        output = _ANSI.sub("", done.stdout.decode("utf-8", errors="replace"))
        payload = _json_tail(output)
        if done.returncode == 0 and payload.get("success") and "node-id" in payload:
            return int(payload["node-id"])
        if "already in use" in output.lower():
            return None  # registered before: the SuperLink keeps it in its database
    raise DeploymentError(
        "the SuperLink did not register the SuperNode key",
        expected=f"'flwr supernode register' to succeed against {superlink_control_address}",
        got=f"exit code {done.returncode}: {output.strip()[-2000:]}",
        fix="check that the SuperLink runs with TLS and --enable-supernode-auth at that "
        "address and that ca.pem is the one it was started with",
    )


# ---------------------------------------------------------------- apps and runs


def _toml_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(
                f"run config {key!r} is not a finite number",
                expected="a finite float",
                got=repr(value),
            )
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML
    raise InvalidInputError(
        f"run config {key!r} has an unsupported type",
        expected="str, int, float or bool (Flower's run config is flat)",
        got=f"{type(value).__name__}: {value!r}",
        fix="flatten nested values into keys such as 'dp-epsilon'",
    )


def _toml_table(config: Mapping[str, object]) -> list[str]:
    lines = []
    for key, value in config.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InvalidInputError(
                "bad run config key",
                expected="letters, digits, '-' or '_' (for example 'local-epochs')",
                got=repr(key),
            )
        lines.append(f"{key} = {_toml_value(key, value)}")
    return lines


def write_flower_app(
    directory: Path,
    run_config: Mapping[str, ConfigValue],
    *,
    serverapp: str = DEFAULT_SERVER_APP,
    clientapp: str = DEFAULT_CLIENT_APP,
    name: str = "veil-federated",
) -> Path:
    """Write a Flower App directory (its ``pyproject.toml``) for ``flwr run``.

    The app declares Veil's ServerApp and ClientApp and no dependencies: Veil must be
    installed wherever the SuperLink and the SuperNodes run (runtime installation is off).
    ``run_config`` becomes ``[tool.flwr.app.config]``, the defaults a run may override.

    Returns:
        The app directory.

    Raises:
        ConflictError: When ``directory`` holds a pyproject.toml not written here.
        InvalidInputError: On keys or values Flower's flat run config cannot hold.
    """
    from veil import __version__  # noqa: PLC0415

    directory = Path(directory).expanduser()
    pyproject = directory / "pyproject.toml"
    if pyproject.exists() and APP_MARKER not in pyproject.read_text("utf-8", errors="replace"):
        raise ConflictError(
            f"{pyproject} exists and was not written by Veil",
            expected="a new directory, or one written by write_flower_app",
            got="another project's pyproject.toml",
            fix="choose an empty directory for the Flower App",
        )
    for ref in (serverapp, clientapp):
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", ref):
            raise InvalidInputError(
                "bad app component", expected="'module.path:attribute'", got=repr(ref)
            )
    version = re.sub(r"[^0-9.]", "", __version__.split("+")[0]).strip(".") or "0"
    lines = [
        APP_MARKER,
        "# Veil is installed where the SuperLink and SuperNodes run: nothing to install.",
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f"name = {json.dumps(name)}",
        f'version = "{version}"',
        'description = "A Veil federated run on Flower"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "veil"',
        "",
        "[tool.flwr.app.components]",
        f"serverapp = {json.dumps(serverapp)}",
        f"clientapp = {json.dumps(clientapp)}",
        "",
        "[tool.flwr.app.config]",
        *_toml_table(run_config),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    _write_secret(pyproject, ("\n".join(lines) + "\n").encode(), private=False)
    return directory


def app_hash(app_dir: Path) -> str:
    """The SHA-256 of the bundle (FAB) that ``flwr run`` builds from ``app_dir``.

    It is the hash a SuperNode sees for a run of that app, and what a data holder approves
    (``start_supernode(approved_apps=...)``, ``veil federate join --approve-app``).
    """
    try:
        from flwr.cli.build import build_fab_from_disk  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - flwr is the federated extra
        raise MissingDependencyError(
            "Flower is not installed",
            expected="the flwr package",
            got=str(exc),
            fix="run: pip install 'veil[federated]'",
            details={"module": "flwr", "extra": "federated"},
        ) from exc
    with warnings.catch_warnings():
        # Flower 1.42's build uses pathspec's deprecated 'gitwildmatch' pattern name.
        warnings.simplefilter("ignore", DeprecationWarning)
        return hashlib.sha256(build_fab_from_disk(Path(app_dir))).hexdigest()


def write_published_app(directory: Path) -> Path:
    """Write Veil's published Flower App: Veil's ServerApp and ClientApp, one config key.

    Its bundle is the same for every run of a Veil version (the run's settings travel as the
    override ``veil-config``, a JSON object, see :func:`veil_run_overrides`), so its hash,
    :func:`published_app_hash`, is what data holders approve by default.
    """
    return write_flower_app(directory, {RUN_CONFIG_KEY: "{}"}, name=PUBLISHED_APP_NAME)


@functools.lru_cache(maxsize=1)
def published_app_hash() -> str:
    """The FAB hash of :func:`write_published_app` for this Veil version."""
    with tempfile.TemporaryDirectory(prefix="veil-published-") as tmp:
        return app_hash(write_published_app(Path(tmp) / "app"))


def veil_run_overrides(run_config: Mapping[str, ConfigValue]) -> dict[str, ConfigValue]:
    """The run-config overrides that carry ``run_config`` to the published app."""
    return {RUN_CONFIG_KEY: json.dumps(dict(run_config), sort_keys=True)}


@dataclass(frozen=True)
class DeployedRun:
    """A run that the SuperLink executed to completion."""

    run_id: int
    status: str
    seconds: float
    log: str
    output: Path | None = None
    result: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _app_config(app_dir: Path) -> dict[str, Any]:
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise NotFoundError(
            "not a Flower App directory",
            expected=f"a pyproject.toml at {pyproject}",
            got="nothing there",
            fix="write one with veil.federated.write_flower_app",
        )
    try:
        config = tomllib.loads(pyproject.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(
            "the Flower App's pyproject.toml is not valid TOML", expected="TOML", got=str(exc)
        ) from exc
    run_config = config.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    return dict(run_config) if isinstance(run_config, dict) else {}


def submit_run(
    app_dir: Path,
    superlink_control_address: str,
    credentials: DeployCredentials | Path | None,
    run_config_overrides: Mapping[str, ConfigValue] | None = None,
    timeout: float = 3600.0,
    *,
    insecure: bool = False,
) -> DeployedRun:
    """Submit the Flower App in ``app_dir`` (``flwr run --stream``) and wait until it ends.

    The run's log (the ServerApp's output, streamed by the SuperLink) is captured. After
    the stream ends the run's status is read back (``flwr list --run-id``); anything but
    ``finished:completed`` is an error. If the merged run config has an ``output`` path
    that exists on this machine, its JSON is loaded into :attr:`DeployedRun.result`.

    Raises:
        InvalidInputError: When an override names a key the app does not declare.
        DeploymentError: When the submission fails, the run fails, or ``timeout`` passes
            (the run is then stopped on the SuperLink).
    """
    app_dir = Path(app_dir).expanduser().resolve()
    defaults = _app_config(app_dir)
    overrides = dict(run_config_overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise InvalidInputError(
            "run config overrides must name keys the app declares",
            expected="keys of [tool.flwr.app.config]: " + ", ".join(sorted(defaults)),
            got=", ".join(unknown),
            fix="add the keys to the app's run config (write_flower_app), or drop them",
        )
    merged = {**defaults, **overrides}
    started = time.monotonic()
    with (
        _flwr_home(superlink_control_address, credentials, insecure=insecure) as home,
        tempfile.TemporaryFile() as log,
    ):
        args = ["run", str(app_dir), _CONNECTION, "--stream"]
        if overrides:
            override_file = home / "overrides.toml"
            override_file.write_text("\n".join(_toml_table(overrides)) + "\n", "utf-8")
            args += ["--run-config", str(override_file)]
        try:
            done = _run_flwr(args, home, timeout=timeout, log=log)
            code: int | None = done.returncode
        except subprocess.TimeoutExpired:
            code = None
        log.seek(0)
        text = _ANSI.sub("", log.read().decode("utf-8", errors="replace"))
        found = _RUN_ID.search(text)
        run_id = int(found.group(1)) if found else None
        tail = "\n".join(text.splitlines()[-_TAIL_LINES:])
        if code is None:
            if run_id is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    _run_flwr(["stop", str(run_id), _CONNECTION], home, timeout=60)
            raise DeploymentError(
                f"the run did not finish within {timeout:g} s and was stopped",
                expected="the run to complete",
                got=f"run {run_id} still running; the last lines of its log:\n{tail}",
                fix="allow a longer timeout (each round costs several seconds of fixed "
                "latency in deployment), or check that enough SuperNodes are connected",
                details={"run_id": run_id},
            )
        if code != 0 or run_id is None:
            raise DeploymentError(
                "flwr run could not submit the app",
                expected="'Successfully started run <id>'",
                got=f"exit code {code}; the last lines of its output:\n{tail}",
                fix="check the SuperLink address and ca.pem, and the app's pyproject.toml",
            )
        status, info = _run_status(home, run_id)
    seconds = time.monotonic() - started
    if status != "finished:completed":
        raise DeploymentError(
            f"run {run_id} did not complete",
            expected="status finished:completed",
            got=f"status {status} ({info.get('status-details', 'no details')}); the last "
            f"lines of its log:\n{tail}",
            fix="read the ServerApp's log above; the SuperNodes' logs have the ClientApps'",
            details={"run_id": run_id, "status": status, **info},
        )
    packed = merged.get(RUN_CONFIG_KEY)
    if isinstance(packed, str):
        with contextlib.suppress(ValueError, AttributeError):
            merged = {**merged, **json.loads(packed)}
    output_value = merged.get("output")
    output = Path(output_value) if isinstance(output_value, str) and output_value else None
    result = None
    if output is not None and output.is_absolute() and output.is_file():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(output.read_text("utf-8"))
            result = loaded if isinstance(loaded, dict) else {"value": loaded}
    return DeployedRun(
        run_id=run_id,
        status=status,
        seconds=seconds,
        log=text,
        output=output,
        result=result,
        details=info,
    )


def _run_status(home: Path, run_id: int) -> tuple[str, dict[str, Any]]:
    for _ in range(10):  # the stream can end a moment before the status is final
        done = _run_flwr(
            ["list", _CONNECTION, "--run-id", str(run_id), "--format", "json"], home, timeout=60
        )
        payload = _json_tail(done.stdout.decode("utf-8", errors="replace"))
        runs = payload.get("runs") or [{}]
        info = runs[0] if isinstance(runs[0], dict) else {}
        status = str(info.get("status", "unknown"))
        if status.startswith("finished"):
            return status, info
        time.sleep(1.0)
    return status, info
