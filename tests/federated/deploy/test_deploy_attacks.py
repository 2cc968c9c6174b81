"""Attacks on a real deployment: what an outsider holding only ``ca.pem`` can do
at the data holders' address, what a coordinator's unapproved app can do at a data holder,
and which secrets the app code can read. Real SuperLink, SuperNodes and ``flwr`` CLI on
127.0.0.1; every process is stopped by a finaliser.
"""

from __future__ import annotations

import json
import ssl
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from veil.errors import DeploymentError, PermissionDeniedError
from veil.federated.deploy import (
    DeployCredentials,
    SuperLinkProcess,
    app_hash,
    create_credentials,
    create_node_key,
    free_port,
    register_supernode,
    start_superlink,
    start_supernode,
    submit_run,
    write_flower_app,
)
from veil.federated.deploy._flwr import flwr_home, run_flwr

pytestmark = pytest.mark.slow

SECRETS = {
    "VEIL_VAULT_PASSPHRASE": "vault-passphrase-must-not-leak",
    "VEIL_KEY_PAYROLL": "key-must-not-leak",
    "VEIL_DATABASE_URL": "postgresql://veil:db-password-must-not-leak@db/veil",
}

# An app that a coordinator (or an outsider who got a run submitted) sends to the nodes: its
# ClientApp records the node's environment and working directory and leaves a file behind.
PROBE = textwrap.dedent(
    '''
    """Reads what it can reach on the node and on the coordinator, and says so."""
    import json, os
    from pathlib import Path
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp

    server_app = ServerApp()
    client_app = ClientApp()

    def _seen():
        return {k: v for k, v in os.environ.items() if k.startswith("VEIL") or "DATABASE" in k}

    @client_app.train()
    def _train(message: Message, context: Context) -> Message:
        marker = Path(str(context.run_config["marker"]))
        marker.write_text(json.dumps({"env": _seen(), "cwd": os.getcwd()}))
        seen = ConfigRecord({"env": json.dumps(_seen())})
        return Message(RecordDict({"seen": seen}), reply_to=message)

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        nodes = []
        while len(nodes) < int(context.run_config["nodes"]):
            nodes = list(grid.get_node_ids())
        messages = [
            Message(RecordDict({"ask": ConfigRecord({"x": 1})}), dst_node_id=node,
                    message_type="train")
            for node in nodes
        ]
        replies = list(grid.send_and_receive(messages, timeout=60))
        out = {"server_env": _seen(), "errors": [], "client_env": []}
        for reply in replies:
            if reply.has_error():
                out["errors"].append(reply.error.reason)
            else:
                out["client_env"].append(json.loads(reply.content["seen"]["env"]))
        Path(str(context.run_config["output"])).write_text(json.dumps(out))
    '''
)


def _probe_app(directory: Path, name: str, marker: Path, output: Path) -> Path:
    app = write_flower_app(
        directory,
        {"marker": str(marker), "output": str(output), "nodes": 1},
        serverapp="probe_app:server_app",
        clientapp="probe_app:client_app",
        name=name,
    )
    (app / "probe_app.py").write_text(PROBE, encoding="utf-8")
    return app


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLinkProcess]:
    """One SuperLink for the module, started (like its nodes) with secrets in os.environ."""
    base = tmp_path_factory.mktemp("attacks")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(base / "home"))
        patch.setenv("FLWR_HOME", str(base / "home" / ".flwr"))
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        credentials = create_credentials(base / "credentials", nodes=1)
        superlink = start_superlink(f"127.0.0.1:{free_port()}", credentials, base / "superlink")
        try:
            superlink.register(credentials.node("node-0"))
            yield superlink
        finally:
            superlink.stop()


@pytest.fixture(scope="module")
def outsider(tmp_path_factory: pytest.TempPathFactory, link: SuperLinkProcess) -> Path:
    """What an outsider holds: the public ca.pem and a key pair of its own."""
    assert isinstance(link.credentials, DeployCredentials)
    base = tmp_path_factory.mktemp("outsider")
    (base / "ca.pem").write_bytes(link.credentials.ca_certificate.read_bytes())
    create_node_key(base, "mine")
    return base


def _runs(address: str, ca: Path) -> tuple[int, str]:
    with flwr_home(address, ca, insecure=False) as home:
        done = run_flwr(["list", "veil", "--format", "json"], home, timeout=60)
    return done.returncode, done.stdout.decode("utf-8", errors="replace")


def test_an_outsider_cannot_register_a_node_at_the_data_holders_address(link, outsider, tmp_path):
    ca = outsider / "ca.pem"
    with pytest.raises(DeploymentError, match="did not register"):
        register_supernode(link.address, ca, outsider / "mine.pub")
    with pytest.raises(PermissionDeniedError, match="not registered"):
        start_supernode(
            link.address, ca, outsider / "mine.key", {"partition-id": 0}, state_dir=tmp_path / "n"
        )


def test_an_outsider_cannot_submit_list_or_read_logs_at_the_data_holders_address(
    link, outsider, tmp_path
):
    ca = outsider / "ca.pem"
    assert isinstance(link.credentials, DeployCredentials)
    marker = tmp_path / "ran.json"
    app = _probe_app(tmp_path / "app", "outsider-app", marker, tmp_path / "out.json")
    with pytest.raises(DeploymentError, match="could not submit"):
        submit_run(app, link.address, ca, timeout=60)
    code, text = _runs(link.address, ca)
    listed = json.loads(text[text.find("{") :])
    assert "runs" not in listed and (code != 0 or listed["success"] is False), text[-2000:]
    assert "serves only the Fleet API" in listed["error-message"]
    with flwr_home(link.address, ca, insecure=False) as home:
        logs = run_flwr(["log", "1", "veil", "--show"], home, timeout=60)
    assert logs.returncode != 0, logs.stdout[-2000:]
    # Every non-Fleet route answers 404 on that address, even the API description.
    context = ssl.create_default_context(cafile=str(ca))
    for path in ("/v1/control/list-runs", "/v1/control/register-node", "/v1/runtime/get-nodes"):
        request = urllib.request.Request(f"https://{link.address}{path}", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=context, timeout=10)  # noqa: S310
        refused.value.close()
        assert refused.value.code == 404, path
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"https://{link.address}/docs", context=context, timeout=10)
    refused.value.close()
    assert refused.value.code == 404
    # The operator, on the loopback Control address, sees that nothing was submitted.
    code, text = _runs(link.control_address, link.credentials.ca_certificate)
    assert code == 0, text[-2000:]
    assert json.loads(text[text.find("{") :])["runs"] == []
    assert not marker.exists()


def _node(link: SuperLinkProcess, tmp_path: Path, approved: list[str]):
    return start_supernode(
        link.address,
        link.credentials,
        "node-0",
        {"partition-id": 0, "num-partitions": 1},
        state_dir=tmp_path / "node",
        approved_apps=approved,
    )


def test_a_node_refuses_an_unapproved_app_and_its_code_never_runs(link, tmp_path):
    marker = tmp_path / "ran.json"
    output = tmp_path / "out.json"
    app = _probe_app(tmp_path / "app", "not-approved", marker, output)
    arrived = app_hash(app)
    approved = app_hash(_probe_app(tmp_path / "other", "approved", marker, output))
    with _node(link, tmp_path, [approved]) as node:
        submit_run(app, link.control_address, link.credentials, timeout=180)
        log = node.log_text()
    assert not marker.exists(), "the unapproved ClientApp ran on the node"
    result = json.loads(output.read_text())
    assert result["client_env"] == []
    [reason] = result["errors"]
    assert arrived in reason and approved in reason and "not approved" in reason
    assert f"refused app {arrived}" in log


def test_app_code_sees_no_secret_of_the_node_or_the_coordinator(link, tmp_path):
    marker = tmp_path / "ran.json"
    output = tmp_path / "out.json"
    app = _probe_app(tmp_path / "app", "approved", marker, output)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)  # the node's operator has them in its shell
        with _node(link, tmp_path, [app_hash(app)]):
            submit_run(app, link.control_address, link.credentials, timeout=180)
    seen = json.loads(marker.read_text())
    result = json.loads(output.read_text())
    assert result["errors"] == []
    assert seen["env"] == {}, "the ClientApp could read the node's secrets"
    assert result["client_env"] == [{}]
    assert result["server_env"] == {}, "the ServerApp could read the coordinator's secrets"
