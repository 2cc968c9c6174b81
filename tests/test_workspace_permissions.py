"""Issue 17: a workspace readable by other users is made private again when Veil opens it.

The attack is a local user reading another user's ``.veil`` (the database of
registered datasets, the ledger, the trail): an existing workspace made with a
loose umask (``.veil`` 0755, ``veil.db`` 0644) must be tightened to 0700 / 0600
with a warning, and a new one must be private from the start.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from veil.store import Store
from veil.workspace import Workspace


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _loose_workspace(home: Path) -> Workspace:
    """A workspace with a real database, then opened up as a 022 umask would have made it."""
    workspace = Workspace.create(home)
    Store.for_workspace(workspace, upgrade=True).dispose()
    home.chmod(0o755)
    for database in home.glob("veil.db*"):
        database.chmod(0o644)
    return workspace


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="veil.workspace")
    return caplog


@pytest.mark.parametrize("opener", ["locate", "create"])
def test_a_loose_workspace_is_tightened_with_a_warning(opener: str, tmp_path: Path, logs):
    home = tmp_path / ".veil"
    _loose_workspace(home)
    logs.clear()
    workspace = Workspace.locate() if opener == "locate" else Workspace.create()
    assert workspace.home == home
    assert _mode(home) == 0o700
    assert _mode(home / "veil.db") == 0o600
    assert all(_mode(p) == 0o600 for p in home.glob("veil.db*"))
    warned = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert any(str(home) in m and "755" in m and "700" in m for m in warned), warned
    assert any(str(home / "veil.db") in m and "644" in m and "600" in m for m in warned), warned
    logs.clear()
    Workspace.locate()  # tight now: nothing more to say
    assert not logs.records


def test_veil_home_is_tightened_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs):
    home = tmp_path / "state"
    _loose_workspace(home)
    monkeypatch.setenv("VEIL_HOME", str(home))
    Workspace.locate()
    assert (_mode(home), _mode(home / "veil.db")) == (0o700, 0o600)
    assert logs.records


def test_a_new_workspace_and_database_are_private_from_the_start(tmp_path: Path, logs):
    from veil.cli._app import main

    old = os.umask(0o022)  # the usual umask, as a user's shell has it
    try:
        assert main(["init"]) == 0
    finally:
        os.umask(old)
    home = tmp_path / ".veil"
    assert _mode(home) == 0o700
    assert _mode(home / "veil.db") == 0o600
    store = Store.for_workspace(Workspace.locate())
    try:
        with store.session():  # a connection is open: SQLite's -wal and -shm files exist
            journals = sorted(p.name for p in home.glob("veil.db-*"))
            assert journals == ["veil.db-shm", "veil.db-wal"]
            assert all(_mode(home / name) == 0o600 for name in journals)
    finally:
        store.dispose()
    assert not logs.records  # nothing was loose, so nothing to warn about


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_workspace_of_another_user_is_left_alone_with_a_warning(tmp_path: Path, logs):
    home = tmp_path / ".veil"
    _loose_workspace(home)
    os.chown(home / "veil.db", 65534, 65534)  # nobody
    Workspace.locate()
    assert _mode(home / "veil.db") == 0o644  # not ours to change
    assert any("owned by another user" in r.getMessage() for r in logs.records)


@pytest.mark.slow
def test_the_veil_command_tightens_and_says_so(tmp_path: Path):
    home = tmp_path / ".veil"
    _loose_workspace(home)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("veil")), "db", "status"],
        cwd=tmp_path,
        env=os.environ.copy(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "readable by other users" in done.stderr
    assert (_mode(home), _mode(home / "veil.db")) == (0o700, 0o600)


def test_config_toml_which_may_hold_a_database_password_is_private(tmp_path: Path, logs):
    old = os.umask(0o022)
    try:
        workspace = Workspace.create(tmp_path / ".veil")
    finally:
        os.umask(old)
    assert _mode(workspace.config_path) == 0o600  # private from the start
    assert not logs.records
    workspace.config_path.write_text(
        '[store]\nurl = "postgresql://veil:s3cret@db.example.org/veil"\n', encoding="utf-8"
    )
    workspace.config_path.chmod(0o644)
    Workspace.locate()
    assert _mode(workspace.config_path) == 0o600
    assert any("config.toml" in r.getMessage() for r in logs.records)
    assert not any("s3cret" in r.getMessage() for r in logs.records)
