"""Real deployment on localhost: a SuperLink with TLS and SuperNode authentication, two
authorised SuperNodes, a submitted run; an unregistered SuperNode refused; clear errors
for missing credentials. Every process is stopped by a finaliser, even when a test fails.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, suppress
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("flwr")

from veil.errors import (
    ConflictError,
    DeploymentError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from veil.federated.deploy import (
    DeployCredentials,
    SuperLinkProcess,
    app_hash,
    create_credentials,
    free_port,
    start_superlink,
    start_supernode,
    submit_run,
    veil_run_overrides,
    write_flower_app,
    write_published_app,
)

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "_standin_app.py"
ROOT = HERE.parents[2]
MNIST = Path(os.environ.get("VEIL_TEST_DATA", ROOT.parent / "shared" / "data")) / "mnist"


def _real_apps() -> ModuleType | None:
    """The lead's ServerApp/ClientApp (veil.federated._apps) once it has landed, else None."""
    try:
        return importlib.import_module("veil.federated._apps")
    except ImportError:
        return None


def _processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line mentions ``marker`` (a test's unique temporary path)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def _assert_no_flower_process_left(marker: str) -> None:
    """Fail if a process of this test survived; kill it first, so that none leaks."""
    deadline = time.monotonic() + 10
    while _processes_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = _processes_mentioning(marker)
    for pid in leftovers:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, "Flower processes outlived their test"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLinkProcess]:
    """One SuperLink (TLS, SuperNode auth) for the module, stopped by a finaliser."""
    base = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(base / "home"))  # nothing may touch the user's ~/.flwr
        patch.setenv("FLWR_HOME", str(base / "home" / ".flwr"))
        credentials = create_credentials(base / "credentials", nodes=3)
        link = start_superlink(f"127.0.0.1:{free_port()}", credentials, base / "superlink")
        try:
            yield link
        finally:
            link.stop()
            _assert_no_flower_process_left(str(base))


def _real_run_config(output: Path) -> dict[str, object]:
    """A tiny real run: 2 clients, 1 round, logistic regression on 2,000 MNIST images."""
    settings = {
        "model": "logreg",
        "clients": 2,
        "rounds": 1,
        "limit": 2000,
        "seed": 0,
        "data": str(MNIST),
        "output": str(output),
    }
    try:
        from veil.federated._config import FederatedConfig
    except ImportError:
        return settings
    return dict(FederatedConfig(**settings).to_run_config())


def _app(directory: Path, output: Path) -> tuple[Path, dict[str, object], bool]:
    """The Flower App: Veil's published app when MNIST is here, else the stand-in.

    Returns the app directory, the run-config overrides to submit and whether it is the
    real app (which SuperNodes approve by default; the stand-in must be approved).
    """
    if _real_apps() is not None and MNIST.is_dir():
        return write_published_app(directory), veil_run_overrides(_real_run_config(output)), True
    config = {"rounds": 1, "clients": 2, "output": str(output)}
    app = write_flower_app(
        directory,
        config,
        serverapp="_standin_app:server_app",
        clientapp="_standin_app:client_app",
    )
    shutil.copy(STANDIN, app / STANDIN.name)  # travels in the FAB to the SuperNodes
    return app, {"rounds": 2}, False


def _start_nodes_together(stack, link, credentials, tmp_path, *, count, extra, approved=None):
    """Start SuperNodes concurrently; every one started is stopped by ``stack``."""
    with ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(
                start_supernode,
                link.fleet_address,  # the data holders' address: the Fleet API only
                credentials,
                f"node-{i}",
                {"partition-id": i, "num-partitions": count, **extra},
                state_dir=tmp_path / f"node-{i}",
                approved_apps=approved,
            )
            for i in range(count)
        ]
        wait(futures)
    nodes = [stack.enter_context(f.result()) for f in futures if f.exception() is None]
    for future in futures:
        if (error := future.exception()) is not None:
            raise error
    return nodes


# ---------------------------------------------------------------- fast: no processes


def test_credentials_are_private_and_never_silently_replaced(tmp_path):
    from cryptography import x509

    credentials = create_credentials(tmp_path / "c", hostnames=["link.example.org"], nodes=2)
    assert [node.name for node in credentials.nodes] == ["node-0", "node-1"]
    for secret in (credentials.server_key, *(n.private_key for n in credentials.nodes)):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not list(credentials.directory.glob("ca*.key")), "the CA key must not be kept"
    certificate = x509.load_pem_x509_certificate(credentials.server_certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "link.example.org"} <= set(names.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert credentials.nodes[0].public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    before = credentials.ca_certificate.read_bytes()
    with pytest.raises(ConflictError, match="already exist"):
        create_credentials(tmp_path / "c")
    assert credentials.ca_certificate.read_bytes() == before
    replaced = create_credentials(tmp_path / "c", nodes=1, force=True)
    assert replaced.ca_certificate.read_bytes() != before
    assert [node.name for node in replaced.nodes] == ["node-0"]


def test_missing_credentials_give_a_clear_error(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(NotFoundError, match="no credentials in") as caught:
        start_superlink(address, tmp_path / "nowhere", tmp_path / "state")
    assert "create_credentials" in str(caught.value)
    with pytest.raises(NotFoundError, match="TLS with SuperNode authentication is the default"):
        start_superlink(address, None, tmp_path / "state")
    credentials = create_credentials(tmp_path / "c", nodes=1)
    credentials.server_key.unlink()
    with pytest.raises(NotFoundError, match=r"superlink\.key is missing"):
        start_superlink(address, credentials, tmp_path / "state")
    with pytest.raises(NotFoundError, match="needs its authentication key"):
        start_supernode(address, credentials, None, {"partition-id": 0})
    with pytest.raises(NotFoundError, match="private key was not found"):
        start_supernode(address, credentials.ca_certificate, tmp_path / "none.key", {})
    with pytest.raises(NotFoundError, match="no SuperNode key called 'node-7'"):
        start_supernode(address, credentials, "node-7", {})
    assert not (tmp_path / "state" / "superlink.log").exists(), "nothing may start"


def test_flower_app_is_written_with_a_flat_run_config(tmp_path):
    import tomllib

    app = write_flower_app(tmp_path / "app", {"rounds": 2, "lr": 0.05, "dp": True, "model": "m"})
    project = tomllib.loads((app / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["publisher"] == "veil"
    assert project["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "veil.federated._apps:server_app",
        "clientapp": "veil.federated._apps:client_app",
    }
    assert project["tool"]["flwr"]["app"]["config"] == {
        "rounds": 2,
        "lr": 0.05,
        "dp": True,
        "model": "m",
    }
    assert project["project"]["dependencies"] == []
    with pytest.raises(InvalidInputError, match="unsupported type"):
        write_flower_app(tmp_path / "bad", {"nested": {"a": 1}})
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ConflictError):
        write_flower_app(tmp_path / "theirs", {})
    with pytest.raises(InvalidInputError, match="keys the app declares"):
        submit_run(app, "127.0.0.1:1", None, {"epochs": 3}, insecure=True)


def test_join_without_credentials_explains_what_to_pass():
    import typer
    from typer.testing import CliRunner

    from veil.cli._federate_deploy import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app, ["join", "--superlink", "127.0.0.1:9", "--partition-id", "0", "--num-partitions", "2"]
    )
    assert isinstance(result.exception, NotFoundError)
    assert "--root-cert ca.pem with --key" in str(result.exception)


# ---------------------------------------------------------------- slow: real processes


@pytest.mark.slow
def test_two_authorised_supernodes_complete_a_run(deployment, tmp_path):
    link = deployment
    credentials = link.credentials
    assert isinstance(credentials, DeployCredentials)
    with ThreadPoolExecutor(2) as pool:  # each flwr CLI call costs ~1.5 s: overlap them
        ids = list(pool.map(link.register, credentials.nodes[:2]))
    assert all(isinstance(node_id, int) for node_id in ids) and ids[0] != ids[1]
    assert link.register(credentials.node("node-0")) is None  # already registered
    output = tmp_path / "result.json"
    app, overrides, real = _app(tmp_path / "app", output)
    data = {"data": str(MNIST)} if real else {}
    approved = None if real else [app_hash(app)]  # Veil's published app is the default
    with ExitStack() as stack:
        nodes = _start_nodes_together(
            stack, link, credentials, tmp_path, count=2, extra=data, approved=approved
        )
        assert sorted(node.node_id for node in nodes) == sorted(ids)
        run = link.submit(app, overrides, timeout=180)
        if real:  # the same deployment driven by the CLI: `veil federate --deploy`
            cli = _federate_deploy_cli(link, credentials)
    assert run.status == "finished:completed"
    assert output.is_file()
    result = json.loads(output.read_text())
    assert run.result == result
    if not real:  # the stand-in: each round adds the mean of 1 and 2
        assert result["rounds_completed"] == 2
        assert result["weights"] == [3.0, 3.0, 3.0, 3.0]
    assert "Uvicorn running on https://" in link.log_text()  # TLS
    assert all(not node.alive for node in nodes)
    if real:
        assert cli["rounds_completed"] == 1
        assert cli["history"][0]["participants"] == 2
        assert 0.0 <= cli["accuracy"] <= 1.0


def _federate_deploy_cli(link: SuperLinkProcess, credentials: DeployCredentials) -> dict:
    veil = Path(sys.executable).with_name("veil")
    done = subprocess.run(
        [
            str(veil),
            "federate",
            "--deploy",
            "--superlink",
            link.control_address,
            "--credentials",
            str(credentials.directory),
            "--data",
            str(MNIST),
            "--model",
            "logreg",
            "--clients",
            "2",
            "--rounds",
            "1",
            "--set",
            "limit=2000",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_an_unregistered_supernode_is_refused(deployment, tmp_path):
    credentials = deployment.credentials
    assert isinstance(credentials, DeployCredentials)
    with pytest.raises(PermissionDeniedError, match="not registered") as caught:
        start_supernode(
            deployment.fleet_address,
            credentials,
            "node-2",  # created with the credentials, never registered
            {"partition-id": 2, "num-partitions": 3},
            state_dir=tmp_path / "intruder",
            timeout=60,
        )
    assert "Failed to activate SuperNode" in str(caught.value)
    _assert_no_flower_process_left(str(tmp_path))
    assert "No SuperNode found with the given public key" in deployment.log_text()


@pytest.mark.slow
def test_a_supernode_refuses_a_superlink_its_ca_did_not_certify(deployment, tmp_path):
    credentials = deployment.credentials
    assert isinstance(credentials, DeployCredentials)
    deployment.register(credentials.node("node-1"))  # a known key: only TLS can fail
    stranger = create_credentials(tmp_path / "stranger", nodes=0)
    with pytest.raises(DeploymentError, match="does not trust the SuperLink's TLS certificate"):
        start_supernode(
            deployment.fleet_address,
            stranger.ca_certificate,
            credentials.node("node-1"),
            {"partition-id": 1, "num-partitions": 2},
            state_dir=tmp_path / "misled",
        )
    _assert_no_flower_process_left(str(tmp_path))


@pytest.mark.slow
def test_serve_prints_a_start_up_line_and_stops_cleanly_on_sigterm(tmp_path):
    script = textwrap.dedent(
        """
        import sys, typer
        from veil.cli._federate_deploy import register
        from veil.cli._output import print_error
        from veil.errors import VeilError
        app = typer.Typer()
        register(app)
        try:
            app(args=sys.argv[1:], standalone_mode=False)
        except VeilError as error:
            print_error(error, as_json=False)
            sys.exit(error.exit_code)
        """
    )
    credentials = tmp_path / "credentials"
    command = [
        sys.executable,
        "-c",
        script,
        "serve",
        "--address",
        f"127.0.0.1:{free_port()}",
        "--credentials",
        str(credentials),
        "--state",
        str(tmp_path / "state"),
        "--nodes",
        "1",
        "--authorize",
        str(credentials / "nodes"),
        "--json",
    ]
    env = {**os.environ, "HOME": str(tmp_path), "FLWR_TELEMETRY_ENABLED": "0"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as serve:
        try:
            line = serve.stdout.readline() if serve.stdout else ""
            assert line, serve.stderr.read() if serve.stderr else "no output"
            started = json.loads(line)
            assert started["event"] == "superlink-started"
            assert started["tls"] and started["supernode_authentication"]
            assert started["credentials_created"]
            assert [Path(r["public_key"]).name for r in started["registered"]] == ["node-0.pub"]
            assert isinstance(started["registered"][0]["node_id"], int)
            assert (Path(started["flwr_home"]) / "config.toml").is_file()
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=30) == 0
        finally:
            if serve.poll() is None:  # SIGTERM first: serve stops its SuperLink
                serve.terminate()
                try:
                    serve.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    serve.kill()
            _assert_no_flower_process_left(str(tmp_path))
