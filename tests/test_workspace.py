"""Where state lives and how settings are resolved."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from veil.errors import InvalidInputError, NotFoundError
from veil.workspace import Workspace, login_name


def test_create_is_idempotent_and_private(tmp_path: Path):
    first = Workspace.create()
    assert first.home == tmp_path / ".veil"
    first.config_path.write_text('[store]\nurl = "sqlite:////elsewhere.db"\n', encoding="utf-8")
    second = Workspace.create()
    assert second == first
    assert "elsewhere" in second.config_path.read_text(encoding="utf-8"), "config was overwritten"
    assert stat.S_IMODE(first.home.stat().st_mode) == 0o700


def test_locate_walks_up_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    created = Workspace.create()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert Workspace.locate() == created


def test_locate_without_workspace_says_run_init():
    with pytest.raises(NotFoundError, match="veil init"):
        Workspace.locate()


def test_veil_home_is_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "state"
    monkeypatch.setenv("VEIL_HOME", str(home))
    with pytest.raises(NotFoundError, match="VEIL_HOME"):
        Workspace.locate()
    created = Workspace.create()
    assert created.home == home
    assert Workspace.locate() == created
    assert created.settings.database_url == f"sqlite:///{home / 'veil.db'}"


def test_settings_environment_beats_config_beats_default(monkeypatch: pytest.MonkeyPatch):
    workspace = Workspace.create()
    assert workspace.settings.database_url.endswith(".veil/veil.db")
    assert workspace.settings.max_load_bytes is None
    workspace.config_path.write_text(
        '[store]\nurl = "sqlite:////from-config.db"\n[data]\nmax_load_bytes = 1_000\n',
        encoding="utf-8",
    )
    assert workspace.settings.database_url == "sqlite:////from-config.db"
    assert workspace.settings.max_load_bytes == 1000
    monkeypatch.setenv("VEIL_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("VEIL_MAX_LOAD_BYTES", "2_000")
    assert workspace.settings.database_url == "postgresql://u@h/db"
    assert workspace.settings.max_load_bytes == 2000
    assert workspace.settings.actor == login_name()


@pytest.mark.parametrize("bad", ["-5", "0", "lots", "1.5"])
def test_bad_memory_limit_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str):
    workspace = Workspace.create()
    monkeypatch.setenv("VEIL_MAX_LOAD_BYTES", bad)
    with pytest.raises(InvalidInputError, match="positive whole number"):
        _ = workspace.settings


def test_broken_config_is_a_clear_error():
    workspace = Workspace.create()
    workspace.config_path.write_text("[store\nurl=", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not valid TOML"):
        _ = workspace.settings


def test_create_refuses_a_file_in_the_way(tmp_path: Path):
    (tmp_path / ".veil").write_text("not a directory", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="file already exists"):
        Workspace.create()
