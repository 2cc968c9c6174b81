"""Driving Flower's command line (``flwr``): the private Flower CLI config it reads, node
registration, and submitting a run and waiting for its outcome.

The ``flwr`` client reads its SuperLink connections from ``$FLWR_HOME/config.toml``; every
call here uses a private temporary ``FLWR_HOME`` (:func:`flwr_home`) that names one
connection, ``veil``, so nothing touches the user's ``~/.flwr``. :func:`write_flwr_config`
writes the same file where an operator wants to keep it.

Threat model: docs/federated.md#deployment (indexed in docs/security.md): these calls go to
the SuperLink's loopback Control API, so only the operator of its host makes them.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from veil.errors import DeploymentError, InvalidInputError, NotFoundError
from veil.federated.deploy._app import RUN_CONFIG_KEY, ConfigValue, app_config, toml_table
from veil.federated.deploy._credentials import (
    DeployCredentials,
    NodeKey,
    ca_certificate,
    check_node_public_key,
)
from veil.federated.deploy._processes import (
    ANSI,
    TAIL_LINES,
    flower_environment,
    flower_executable,
    split_address,
)

__all__ = [
    "CONNECTION",
    "DeployedRun",
    "flwr_home",
    "register_supernode",
    "run_flwr",
    "submit_run",
    "write_flwr_config",
]

CONNECTION = "veil"  # the connection name in the private flwr config
_RUN_ID = re.compile(r"Successfully started run (\d+)")


def write_flwr_config(
    directory: Path,
    address: str,
    credentials: DeployCredentials | Path | None,
    *,
    insecure: bool = False,
) -> Path:
    """Write a Flower CLI home: ``directory/config.toml`` names one SuperLink connection,
    ``veil``, at ``address`` (a Control API), trusting the CA of ``credentials``.

    Returns:
        ``directory``, to be used as ``FLWR_HOME``.

    Raises:
        InvalidInputError: When ``address`` is not ``HOST:PORT``.
        NotFoundError: When a TLS connection has no CA certificate.
    """
    split_address(address, "SuperLink Control API")
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
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
        ca = ca_certificate(credentials)
        if not ca.is_file():
            raise NotFoundError("the CA certificate was not found", expected=str(ca), got="none")
        lines.append(f"root-certificates = {json.dumps(str(ca.resolve()))}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@contextlib.contextmanager
def flwr_home(
    address: str, credentials: DeployCredentials | Path | None, *, insecure: bool
) -> Iterator[Path]:
    """A private, temporary FLWR_HOME (:func:`write_flwr_config`), removed on exit."""
    with tempfile.TemporaryDirectory(prefix="veil-flwr-") as home:
        yield write_flwr_config(Path(home), address, credentials, insecure=insecure)


def run_flwr(
    args: list[str], home: Path, *, timeout: float, log: IO[bytes] | None = None
) -> subprocess.CompletedProcess[bytes]:
    executable = flower_executable("flwr")
    env = flower_environment(home, executable)
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
    check_node_public_key(path)
    with flwr_home(superlink_control_address, credentials, insecure=insecure) as home:
        try:
            done = run_flwr(
                ["supernode", "register", str(path), CONNECTION, "--format", "json"],
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
        output = ANSI.sub("", done.stdout.decode("utf-8", errors="replace"))
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

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready values (its log included)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "seconds": self.seconds,
            "log": self.log,
            "output": str(self.output) if self.output is not None else None,
            "result": self.result,
            "details": self.details,
        }


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
    defaults = app_config(app_dir)
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
        flwr_home(superlink_control_address, credentials, insecure=insecure) as home,
        tempfile.TemporaryFile() as log,
    ):
        args = ["run", str(app_dir), CONNECTION, "--stream"]
        if overrides:
            override_file = home / "overrides.toml"
            override_file.write_text("\n".join(toml_table(overrides)) + "\n", "utf-8")
            args += ["--run-config", str(override_file)]
        try:
            done = run_flwr(args, home, timeout=timeout, log=log)
            code: int | None = done.returncode
        except subprocess.TimeoutExpired:
            code = None
        log.seek(0)
        text = ANSI.sub("", log.read().decode("utf-8", errors="replace"))
        found = _RUN_ID.search(text)
        run_id = int(found.group(1)) if found else None
        tail = "\n".join(text.splitlines()[-TAIL_LINES:])
        if code is None:
            if run_id is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run_flwr(["stop", str(run_id), CONNECTION], home, timeout=60)
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
        done = run_flwr(
            ["list", CONNECTION, "--run-id", str(run_id), "--format", "json"], home, timeout=60
        )
        payload = _json_tail(done.stdout.decode("utf-8", errors="replace"))
        runs = payload.get("runs") or [{}]
        info = runs[0] if isinstance(runs[0], dict) else {}
        status = str(info.get("status", "unknown"))
        if status.startswith("finished"):
            return status, info
        time.sleep(1.0)
    return status, info
