"""`veil vault` through the real executable: encrypt, decrypt, rotate, status, refusals, exit codes."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

OLD = "old passphrase for the vault"
NEW = "new passphrase for the vault"
RAW = "5f" * 32
NOTES = "patient,diagnosis\nalice,flu\nbob,asthma\n"


@pytest.fixture
def veil(tmp_path: Path):
    executable = Path(sys.executable).with_name("veil")

    def call(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(executable), *args],
            cwd=tmp_path,
            env=os.environ | {"COLUMNS": "120"} | env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )

    return call


def _main(capsys, *args: str) -> tuple[int, str, str]:
    from veil.cli._app import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def project(tmp_path: Path, capsys) -> Path:
    assert _main(capsys, "init")[0] == 0
    (tmp_path / "notes.csv").write_text(NOTES, encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_encrypt_status_decrypt_through_the_executable(veil, project: Path, capsys, monkeypatch):
    done = veil("vault", "encrypt", "notes.csv", "--json", VEIL_VAULT_PASSPHRASE=OLD)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["action"] == "encrypt" and report["object"]["name"] == "notes.csv.veil"
    assert report["object"]["size"] == len(NOTES) and len(report["key_id"]) == 16
    sealed = project / "notes.csv.veil"
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert b"alice" not in sealed.read_bytes()

    code, shown, _ = _main(capsys, "vault", "status", "--json")  # no secret needed
    assert code == 0
    status = json.loads(shown)
    assert status["exists"] and status["key_id"] == report["key_id"]
    assert status["kdf"] == {"name": "scrypt", "n": 2**17, "r": 8, "p": 1}  # OWASP's floor
    assert [(o["name"], o["kind"], o["present"]) for o in status["objects"]] == [
        ("notes.csv.veil", "file", True)
    ]
    code, table, _ = _main(capsys, "vault", "status")
    assert "notes.csv.veil" in table and "scrypt (n=131072, r=8, p=1)" in table

    (project / "notes.csv").unlink()
    monkeypatch.setenv("VEIL_VAULT_PASSPHRASE", OLD)
    code, opened, err = _main(capsys, "vault", "decrypt", "notes.csv.veil")
    assert code == 0, err
    assert "decrypted" in opened
    assert (project / "notes.csv").read_text(encoding="utf-8") == NOTES
    assert OLD not in done.stdout + done.stderr + opened + err + shown + table


@pytest.mark.slow
def test_wrong_passphrase_exits_3_and_writes_nothing(project: Path, capsys, monkeypatch):
    monkeypatch.setenv("VAULT_PW", OLD)
    assert _main(capsys, "vault", "encrypt", "notes.csv", "--passphrase-env", "VAULT_PW")[0] == 0
    monkeypatch.setenv("VEIL_VAULT_PASSPHRASE", NEW)
    code, out, err = _main(capsys, "vault", "decrypt", "notes.csv.veil", "-o", "out.csv", "--json")
    assert code == 3
    error = json.loads(out)["error"]
    assert error["code"] == "invalid_input" and "does not open the vault" in error["message"]
    assert NEW not in out + err
    assert not (project / "out.csv").exists()


def test_a_tampered_file_exits_3_and_writes_nothing(project: Path, capsys, monkeypatch):
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    assert _main(capsys, "vault", "encrypt", "notes.csv")[0] == 0
    sealed = project / "notes.csv.veil"
    damaged = bytearray(sealed.read_bytes())
    damaged[-5] ^= 0x10
    sealed.write_bytes(bytes(damaged))
    code, out, err = _main(capsys, "vault", "decrypt", "notes.csv.veil", "-o", "out.csv", "--json")
    assert code == 3 and "tampered" in err
    assert "fails authentication" in json.loads(out)["error"]["got"]
    assert not (project / "out.csv").exists()


@pytest.mark.slow
def test_swapped_files_are_refused_unless_their_sealed_path_is_given(
    project: Path, capsys, monkeypatch
):
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    (project / "other.csv").write_text("x\n", encoding="utf-8")
    assert _main(capsys, "vault", "encrypt", "notes.csv")[0] == 0
    assert _main(capsys, "vault", "encrypt", "other.csv")[0] == 0
    (project / "other.csv").unlink()
    (project / "notes.csv").unlink()
    (project / "notes.csv.veil").rename(project / "swap")
    (project / "other.csv.veil").rename(project / "notes.csv.veil")
    code, _, err = _main(capsys, "vault", "decrypt", "notes.csv.veil")
    assert code == 3 and "sealed under another name" in err
    assert not (project / "notes.csv").exists()
    code, _, err = _main(capsys, "vault", "decrypt", "notes.csv.veil", "--name", "other.csv.veil")
    assert code == 3 and "sealed at another path" in err  # the name alone is not enough
    assert not (project / "notes.csv").exists()
    code, _, err = _main(
        capsys, "vault", "decrypt", "notes.csv.veil", "--sealed-path", "other.csv.veil"
    )
    assert code == 0, err
    assert (project / "notes.csv").read_text(encoding="utf-8") == "x\n"


def test_existing_outputs_are_refused_with_exit_7_unless_force(project: Path, capsys, monkeypatch):
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    (project / "notes.csv.veil").write_text("keep me\n", encoding="utf-8")
    code, out, _ = _main(capsys, "vault", "encrypt", "notes.csv", "--json")
    assert code == 7 and json.loads(out)["error"]["code"] == "conflict"
    assert (project / "notes.csv.veil").read_text(encoding="utf-8") == "keep me\n"
    assert _main(capsys, "vault", "encrypt", "notes.csv", "--force")[0] == 0
    code, _, err = _main(capsys, "vault", "decrypt", "notes.csv.veil")
    assert code == 7 and "already exists" in err
    assert (project / "notes.csv").read_text(encoding="utf-8") == NOTES
    assert _main(capsys, "vault", "decrypt", "notes.csv.veil", "--force")[0] == 0


@pytest.mark.slow
def test_rotate_keeps_the_data_bytes_and_retires_the_old_passphrase(
    project: Path, capsys, monkeypatch
):
    monkeypatch.setenv("OLD_PW", OLD)
    monkeypatch.setenv("NEW_PW", NEW)
    assert _main(capsys, "vault", "encrypt", "notes.csv", "--passphrase-env", "OLD_PW")[0] == 0
    before = (project / "notes.csv.veil").read_bytes()
    code, out, err = _main(
        capsys,
        "vault",
        "rotate",
        "--passphrase-env",
        "OLD_PW",
        "--new-passphrase-env",
        "NEW_PW",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["objects"] == 1 and report["key_id"] != report["old_key_id"]
    assert OLD not in out + err and NEW not in out + err
    assert (project / "notes.csv.veil").read_bytes() == before
    args = ("vault", "decrypt", "notes.csv.veil", "-o", "out.csv")
    code, _, err = _main(capsys, *args, "--passphrase-env", "OLD_PW")
    assert code == 3 and "does not open the vault" in err
    assert _main(capsys, *args, "--passphrase-env", "NEW_PW")[0] == 0
    assert (project / "out.csv").read_text(encoding="utf-8") == NOTES
    code, out, _ = _main(capsys, "vault", "status")
    assert "1 rotation(s)" in out
    # From a passphrase to a raw key from a secrets manager, then the raw key opens it.
    monkeypatch.setenv("NEW_KEY", RAW)
    code, _, err = _main(
        capsys, "vault", "rotate", "--passphrase-env", "NEW_PW", "--new-key-env", "NEW_KEY"
    )
    assert code == 0, err
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    assert _main(capsys, *args, "--force")[0] == 0
    code, _, err = _main(capsys, "vault", "rotate", "--new-key-env", "NEW_KEY")
    assert code == 3 and "same key as the current one" in err


def test_a_payroll_copied_over_next_years_is_refused(project: Path, capsys, monkeypatch):
    """An attack found from outside: 2025/payroll.csv.veil copied over 2026/payroll.csv.veil."""
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    for year in ("2025", "2026"):
        (project / year).mkdir()
        (project / year / "payroll.csv").write_text(f"year\n{year}\n", encoding="utf-8")
        assert _main(capsys, "vault", "encrypt", f"{year}/payroll.csv")[0] == 0
        (project / year / "payroll.csv").unlink()
    shutil.copy(project / "2025" / "payroll.csv.veil", project / "2026" / "payroll.csv.veil")
    code, out, err = _main(capsys, "vault", "decrypt", "2026/payroll.csv.veil", "--json")
    assert code == 3, err
    error = json.loads(out)["error"]
    assert error["code"] == "invalid_input" and "sealed at another path" in error["message"]
    assert str(project / "2025" / "payroll.csv.veil") in error["got"]
    assert not (project / "2026" / "payroll.csv").exists()


@pytest.mark.slow
def test_rotate_to_the_same_passphrase_exits_3_and_changes_nothing(
    project: Path, capsys, monkeypatch
):
    monkeypatch.setenv("OLD_PW", OLD)
    monkeypatch.setenv("SAME_PW", OLD)
    assert _main(capsys, "vault", "encrypt", "notes.csv", "--passphrase-env", "OLD_PW")[0] == 0
    manifest = project / ".veil" / "vault" / "vault.json"
    before = manifest.read_bytes()
    code, out, err = _main(
        capsys, "vault", "rotate", "--passphrase-env", "OLD_PW", "--new-passphrase-env", "SAME_PW"
    )
    assert code == 3 and "same passphrase as the current one" in err
    assert OLD not in out + err
    assert manifest.read_bytes() == before


@pytest.mark.slow
def test_refusals_and_their_exit_codes(project: Path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal to prompt on
    code, _, err = _main(capsys, "vault", "encrypt", "notes.csv")
    assert code == 3 and "no vault secret given" in err
    code, out, _ = _main(capsys, "vault", "status", "--json")
    assert code == 0 and json.loads(out)["exists"] is False
    code, out, _ = _main(capsys, "vault", "status")
    assert code == 0 and "no vault" in out
    code, _, err = _main(capsys, "vault", "encrypt", "notes.csv", "--passphrase-env", "UNSET_VAR")
    assert code == 3 and "UNSET_VAR is not set" in err
    monkeypatch.setenv("VEIL_VAULT_KEY", "not-a-key")
    code, _, err = _main(capsys, "vault", "encrypt", "notes.csv")
    assert code == 3 and "not a 256-bit key" in err and "not-a-key" not in err
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    code, _, err = _main(capsys, "vault", "decrypt", "notes.csv.veil")
    assert code == 6 and "no vault yet" in err
    assert _main(capsys, "vault", "encrypt", "notes.csv")[0] == 0
    code, _, err = _main(capsys, "vault", "decrypt", "notes.csv")
    assert code == 3 and "needs -o OUTPUT" in err
    code, _, err = _main(capsys, "vault", "decrypt", "notes.csv", "-o", "x.csv")
    assert code == 3 and "not a Veil vault object" in err
    code, _, err = _main(capsys, "vault", "encrypt", "gone.csv")
    assert code == 6 and "does not exist" in err
    monkeypatch.setenv("A", RAW)
    code, _, err = _main(
        capsys, "vault", "rotate", "--new-key-env", "A", "--new-passphrase-env", "A"
    )
    assert code == 3 and "two new secrets" in err
    assert sorted(p.name for p in project.iterdir()) == [".veil", "notes.csv", "notes.csv.veil"]


def test_no_workspace_exits_6(capsys, monkeypatch):
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    code, _, err = _main(capsys, "vault", "status")
    assert code == 6 and "veil init" in err
