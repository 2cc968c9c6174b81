"""The SuperNode, a data holder's Flower process: it proves its identity with its key,
trusts only the deployment's CA, and starts ClientApps of approved app bundles only.

:func:`start_supernode` runs ``flower-supernode`` with ``--isolation process`` and Veil's
gate (:mod:`veil.federated.deploy._gates`), which starts a ClientApp only for a run whose bundle
hash the data holder approved; any other run is refused and its code never loaded.

Threat model: docs/federated.md#deployment (indexed in docs/security.md); the unapproved
app and the leaked secrets are tried by tests/federated/deploy/test_deploy_attacks.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from veil.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from veil.federated.deploy._app import ConfigValue, published_app_hash, toml_value
from veil.federated.deploy._credentials import (
    NAME,
    DeployCredentials,
    NodeKey,
    node_files,
    write_secret,
)
from veil.federated.deploy._processes import (
    FlowerProcess,
    descendants,
    flower_environment,
    flower_executable,
    free_port,
    spawn,
    split_address,
    stopped_on_error,
    warn_insecure,
)

__all__ = ["SuperNodeProcess", "partition_node_config", "start_supernode"]


@dataclass
class SuperNodeProcess(FlowerProcess):
    """A running ``flower-supernode`` connected (and, with auth, activated) at a SuperLink,
    with the gate that starts ClientApps of approved apps only (:mod:`veil.federated.deploy._gates`)."""

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
            family = descendants(gate.pid) if gate.poll() is None else []
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


def _format_node_config(config: Mapping[str, ConfigValue]) -> str:
    """``key=value`` pairs as ``flower-supernode --node-config`` parses them (TOML values)."""
    parts = []
    for key, value in config.items():
        if not NAME.fullmatch(key):
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
            text = toml_value(key, value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _check_hashes(approved_apps: Sequence[str] | None) -> tuple[str, ...]:
    hashes = tuple(approved_apps) if approved_apps is not None else (published_app_hash(),)
    bad = [h for h in hashes if not isinstance(h, str) or not re.fullmatch(r"[0-9a-f]{64}", h)]
    if bad or not hashes:
        raise InvalidInputError(
            "bad approved app hashes",
            expected="one or more SHA-256 hashes of Flower App bundles (64 lowercase hex "
            "digits), as veil.federated.deploy.app_hash(APP_DIR) prints them",
            got=", ".join(map(repr, bad)) or "none",
            fix="leave approved_apps unset to approve Veil's published app only "
            "(veil.federated.deploy.published_app_hash())",
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
    ``--isolation process`` and Veil's gate (:mod:`veil.federated.deploy._gates`) starts a
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
    split_address(superlink, "SuperLink")
    approved = _check_hashes(approved_apps)
    executable = flower_executable("flower-supernode")
    config = dict(node_config)
    command = [executable, "--superlink", superlink]
    if insecure:
        warn_insecure("the SuperNode")
        command.append("--insecure")
    else:
        ca, key = node_files(credentials, node_key)
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
    write_secret(secret, os.urandom(32), private=True)
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
    env = flower_environment(state_dir / "flwr-home", executable)
    process, log = spawn(command, log_path=log_path, env=env, cwd=state_dir)
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
    with stopped_on_error(node):
        gate_command = [
            sys.executable,
            "-m",
            "veil.federated.deploy._gates",
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


def partition_node_config(
    partition_id: int, num_partitions: int, data: Path | None = None
) -> dict[str, ConfigValue]:
    """The node config of Veil's ClientApp: which shard this node trains on, and where
    its data lies (``partition-id``, ``num-partitions``, optionally ``data``).

    Raises:
        InvalidInputError: When ``partition_id`` is not below ``num_partitions``.
        NotFoundError: When ``data`` is not a directory.
    """
    if partition_id >= num_partitions:
        raise InvalidInputError(
            "--partition-id must be below --num-partitions",
            expected=f"0 <= partition-id < {num_partitions}",
            got=str(partition_id),
        )
    config: dict[str, ConfigValue] = {
        "partition-id": partition_id,
        "num-partitions": num_partitions,
    }
    if data is not None:
        if not data.is_dir():
            raise NotFoundError(
                "the --data directory does not exist",
                expected=f"a directory at {data}",
                got="nothing there",
            )
        config["data"] = str(data.resolve())
    return config
