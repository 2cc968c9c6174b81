"""What `veil federate serve` and `join` call, without starting a process: reusing or
creating credentials, the keys to authorise, the Flower CLI config, a node's partition."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from veil.errors import InvalidInputError, NotFoundError
from veil.federated.deploy import (
    DeployedRun,
    open_credentials,
    partition_node_config,
    public_keys,
    write_flwr_config,
)


def test_open_credentials_creates_once_then_reuses(tmp_path):
    directory = tmp_path / "credentials"
    created, fresh = open_credentials(directory, hostnames=["link.example.org"], nodes=1)
    assert fresh
    assert "link.example.org" in created.hostnames
    assert [node.name for node in created.nodes] == ["node-0"]
    ca = created.ca_certificate.read_bytes()

    reused, fresh = open_credentials(directory, hostnames=["link.example.org"], nodes=3)
    assert not fresh
    assert reused.ca_certificate.read_bytes() == ca  # the nodes' ca.pem stays valid
    assert [node.name for node in reused.nodes] == ["node-0"]


def test_open_credentials_refuses_a_hostname_the_certificate_lacks(tmp_path):
    open_credentials(tmp_path, nodes=0)
    with pytest.raises(InvalidInputError, match="does not name every --hostname") as caught:
        open_credentials(tmp_path, hostnames=["other.example.org"])
    assert "--force" in caught.value.fix
    replaced, fresh = open_credentials(tmp_path, hostnames=["other.example.org"], force=True)
    assert fresh
    assert "other.example.org" in replaced.hostnames


def test_open_credentials_refuses_a_directory_without_the_superlink_key(tmp_path):
    open_credentials(tmp_path, nodes=0)
    (tmp_path / "superlink.key").unlink()
    with pytest.raises(NotFoundError, match=r"superlink\.key is missing"):
        open_credentials(tmp_path)


def test_public_keys_expands_directories_and_refuses_what_is_missing(tmp_path):
    credentials, _ = open_credentials(tmp_path / "c", nodes=2)
    nodes = tmp_path / "c" / "nodes"
    single = credentials.node("node-1").public_key
    assert public_keys([nodes, single]) == [
        nodes / "node-0.pub",
        nodes / "node-1.pub",
        single,
    ]
    assert public_keys([]) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError, match="no public keys"):
        public_keys([empty])
    with pytest.raises(NotFoundError, match="a key to authorise was not found"):
        public_keys([tmp_path / "absent.pub"])


def test_write_flwr_config_names_one_connection(tmp_path):
    credentials, _ = open_credentials(tmp_path / "c", nodes=0)
    home = write_flwr_config(tmp_path / "home", "127.0.0.1:9095", credentials)
    config = tomllib.loads((home / "config.toml").read_text("utf-8"))
    assert config["superlink"]["default"] == "veil"
    assert config["superlink"]["veil"] == {
        "address": "127.0.0.1:9095",
        "root-certificates": str(credentials.ca_certificate.resolve()),
    }
    insecure = write_flwr_config(tmp_path / "plain", "[::1]:9095", None, insecure=True)
    plain = tomllib.loads((insecure / "config.toml").read_text("utf-8"))
    assert plain["superlink"]["veil"] == {"address": "[::1]:9095", "insecure": True}
    with pytest.raises(NotFoundError, match="no credentials"):
        write_flwr_config(tmp_path / "none", "127.0.0.1:9095", None)
    with pytest.raises(InvalidInputError, match="bad SuperLink Control API address"):
        write_flwr_config(tmp_path / "bad", "no-port", credentials)


def test_partition_node_config(tmp_path):
    assert partition_node_config(1, 2) == {"partition-id": 1, "num-partitions": 2}
    assert partition_node_config(0, 2, tmp_path)["data"] == str(tmp_path.resolve())
    with pytest.raises(InvalidInputError, match="below --num-partitions"):
        partition_node_config(2, 2)
    with pytest.raises(NotFoundError, match="--data directory does not exist"):
        partition_node_config(0, 2, tmp_path / "absent")


def test_a_deployed_run_is_a_frozen_result_with_to_dict():
    run = DeployedRun(
        run_id=7, status="finished:completed", seconds=1.5, log="ok", output=Path("r.json")
    )
    with pytest.raises(AttributeError):
        run.status = "running"  # type: ignore[misc]
    payload = json.loads(json.dumps(run.to_dict()))
    assert payload["run_id"] == 7
    assert payload["output"] == "r.json"
    assert payload["result"] is None
