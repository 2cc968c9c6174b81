"""The SuperLink, the coordinator's Flower process: started with TLS and SuperNode
authentication, the data holders' address serving Flower's Fleet API alone, and everything
else (Control, Runtime) on a loopback address.

Flower 1.42 serves its Fleet, Control and Runtime APIs from one address and its open-source
distribution does not authenticate Control, so :func:`start_superlink` runs Flower's
SuperLink through Veil's gate (:mod:`veil.federated.deploy._gates`): all APIs on loopback, and a
Fleet-only filter on the address the data holders reach.

Threat model: docs/federated.md#deployment (indexed in docs/security.md); the outsider at
the data holders' address is played by tests/federated/deploy/test_deploy_attacks.py.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from veil.errors import InvalidInputError
from veil.federated.deploy._app import ConfigValue
from veil.federated.deploy._credentials import DeployCredentials, NodeKey, resolve_credentials
from veil.federated.deploy._flwr import (
    DeployedRun,
    register_supernode,
    submit_run,
    write_flwr_config,
)
from veil.federated.deploy._processes import (
    FlowerProcess,
    connectable,
    flower_environment,
    flower_executable,
    format_address,
    free_port,
    spawn,
    split_address,
    stopped_on_error,
    warn_insecure,
)

__all__ = ["SuperLinkProcess", "start_superlink"]


@dataclass
class SuperLinkProcess(FlowerProcess):
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
        host, port = split_address(self.address, "SuperLink")
        # reviewed: an address to connect to (the wildcard made local), not one to bind
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        return format_address(host, port)

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

    def write_flwr_config(self, directory: Path) -> Path:
        """A Flower CLI home whose ``config.toml`` points at this SuperLink's Control API,
        so that ``FLWR_HOME=DIR flwr ... veil`` works too (:func:`write_flwr_config`)."""
        return write_flwr_config(
            directory, self.control_address, self.credentials, insecure=self.credentials is None
        )


def _loopback_address(address: str) -> tuple[str, int]:
    host, port = split_address(address, "SuperLink Control API")
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
    SuperLink (its own app, arguments and state; see :mod:`veil.federated.deploy._gates`) with all
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
            tests/federated/deploy/test_deploy_attacks.py).
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
    host, port = split_address(address, "SuperLink")
    control_host, control_port = _loopback_address(control_address or f"127.0.0.1:{free_port()}")
    creds = resolve_credentials(credentials, insecure=insecure)
    executable = flower_executable("flower-superlink")
    state_dir = Path(state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    command = [
        sys.executable,
        "-m",
        "veil.federated.deploy._gates",
        "superlink",
        "--veil-fleet-address",
        format_address(host, port),
        "--host",
        control_host,
        "--port",
        str(control_port),
        "--database",
        str(state_dir / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]
    if insecure:
        warn_insecure("the SuperLink")
        command.append("--insecure")
    else:
        assert creds is not None  # noqa: S101 - resolve_credentials guarantees it
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
    env = flower_environment(state_dir / "flwr-home", executable)
    process, log = spawn(command, log_path=log_path, env=env, cwd=state_dir)
    link = SuperLinkProcess(
        command=command,
        log_path=log_path,
        process=process,
        _log=log,
        address=format_address(host, port),
        credentials=creds,
        state_dir=state_dir,
        insecure=insecure,
        control=format_address(control_host, control_port),
    )
    with stopped_on_error(link):
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
                and connectable(host, port)
                and connectable(control_host, control_port)
            ):
                return link
            if time.monotonic() > deadline:
                link.fail(
                    f"the SuperLink was not ready within {timeout:g} s",
                    fix="retry with a longer timeout on a loaded machine, or read the log above",
                )
            time.sleep(0.2)
