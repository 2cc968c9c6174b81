"""`veil datasets add --managed`, `veil datasets versions`, and what `show` says of a managed dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.cli._app import main
from veil.data import Catalog


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "visits.csv"
    rows = ["patient,age"] + [f"p{i},{20 + i}" for i in range(30)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_add_managed_show_and_versions(
    workspace, vault_key, table: Path, capsys: pytest.CaptureFixture[str]
):
    del workspace, vault_key
    code, out, err = run(
        capsys, "datasets", "add", str(table), "--name", "visits", "--id", "patient", "--managed"
    )
    assert code == 0, err
    code, out, err = run(capsys, "datasets", "show", "visits", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["managed"] is True and shown["version"] == 1
    code, out, _ = run(capsys, "datasets", "show", "visits")
    assert "managed: sealed in the workspace, version 1" in out

    catalog = Catalog.open()
    frame = catalog.load_frame("visits")
    catalog.replace_version(
        "visits", frame.iloc[1:], reason="erasure", action="dataset.erase", shred=False
    )
    catalog.store.dispose()
    code, out, err = run(capsys, "datasets", "versions", "visits", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["shredded_now"] == [1]  # the superseded version is finished first
    assert [(v["version"], v["state"], v["n_rows"]) for v in listed["versions"]] == [
        (1, "shredded", 30),
        (2, "current", 29),
    ]
    code, out, _ = run(capsys, "datasets", "versions", "visits")
    assert code == 0 and "shredded" in out and "current" in out
    code, out, err = run(capsys, "datasets", "remove", "visits")
    assert code == 0, err
    assert "Destroyed the sealed version(s) [2]" in out


def test_add_managed_without_a_key_fails_clearly(
    workspace, table: Path, capsys: pytest.CaptureFixture[str]
):
    del workspace
    code, _, err = run(capsys, "datasets", "add", str(table), "--name", "visits", "--managed")
    assert code != 0
    assert "VEIL_VAULT_PASSPHRASE" in err
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert json.loads(out) == []
