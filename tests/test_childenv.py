"""The environment of child processes: an allow-list, never the parent's secrets."""

from __future__ import annotations

from veil._childenv import child_environment

PARENT = {
    "PATH": "/usr/bin",
    "HOME": "/home/a",
    "LC_ALL": "C.UTF-8",
    "OPENBLAS_CORETYPE": "Haswell",
    "VEIL_VAULT_PASSPHRASE": "hunter2",
    "VEIL_KEY_PAYROLL": "00" * 32,
    "VEIL_VAULT_KEY": "11" * 32,
    "VEIL_DATABASE_URL": "postgresql://veil:secret@127.0.0.1/veil",
    "AWS_SECRET_ACCESS_KEY": "abc",
    "PGPASSWORD": "secret",
}


def test_only_allow_listed_names_pass():
    env = child_environment(parent=PARENT)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/a",
        "LC_ALL": "C.UTF-8",
        "OPENBLAS_CORETYPE": "Haswell",
    }


def test_extra_wins_and_is_the_only_way_in():
    env = child_environment({"PATH": "/venv/bin:/usr/bin", "FLWR_HOME": "/x"}, parent=PARENT)
    assert env["PATH"] == "/venv/bin:/usr/bin"
    assert env["FLWR_HOME"] == "/x"
    assert not any(name.startswith("VEIL_") for name in env)


def test_default_parent_is_os_environ(monkeypatch):
    monkeypatch.setenv("VEIL_VAULT_PASSPHRASE", "hunter2")
    monkeypatch.setenv("PATH", "/bin")
    env = child_environment()
    assert "VEIL_VAULT_PASSPHRASE" not in env
    assert env["PATH"] == "/bin"
