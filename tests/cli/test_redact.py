"""`veil redact` through the real executable: redaction, the key store, decryption, bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

NOTES = (
    "Dr John Smith (john.smith@gmail.com) was seen at St Mary's Hospital on 12 March 2024.\n"
    "Call 020 7946 0958 about card 4111 1111 1111 1111; NHS number 943 476 5919.\n"
)


@pytest.fixture
def veil(tmp_path: Path):
    executable = Path(sys.executable).with_name("veil")

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(executable), *args],
            cwd=tmp_path,
            env=os.environ | {"COLUMNS": "120"},
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


@pytest.mark.slow
def test_redact_tags_every_value_and_reports_json(veil, tmp_path: Path):
    (tmp_path / "notes.txt").write_text(NOTES, encoding="utf-8")
    done = veil("redact", "notes.txt", "-o", "notes.red.txt", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["lines"] == 2 and report["operator"] == "tag"
    assert report["entities"]["PERSON"] == 1 and report["entities"]["UK_NHS"] == 1
    text = (tmp_path / "notes.red.txt").read_text(encoding="utf-8")
    assert text == (
        "Dr <PERSON> (<EMAIL_ADDRESS>) was seen at <ORGANIZATION> on <DATE_TIME>.\n"
        "Call <PHONE_NUMBER> about card <CREDIT_CARD>; NHS number <UK_NHS>.\n"
    )


@pytest.mark.slow
def test_encrypt_with_the_key_store_then_decrypt(veil, capsys, tmp_path: Path):
    assert _main(capsys, "init")[0] == 0
    (tmp_path / "notes.txt").write_text(NOTES, encoding="utf-8")
    sealed = veil("redact", "notes.txt", "-o", "sealed.txt", "--operator", "encrypt")
    assert sealed.returncode == 0, sealed.stderr
    assert "values" in sealed.stdout
    key_file = tmp_path / ".veil" / "keys" / "redact.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "John" not in (tmp_path / "sealed.txt").read_text(encoding="utf-8")
    code, _, err = _main(capsys, "redact", "sealed.txt", "-o", "opened.txt", "--decrypt")
    assert code == 0, err
    assert (tmp_path / "opened.txt").read_text(encoding="utf-8") == NOTES
    # --decrypt never creates the key it asks for, and another key never opens the file.
    code, _, err = _main(capsys, "redact", "sealed.txt", "-o", "x.txt", "--decrypt", "--key", "x")
    assert code == 6 and "no key named 'x'" in err
    assert not (tmp_path / ".veil" / "keys" / "x.key").exists()
    key_file.write_text("ab" * 32 + "\n", encoding="ascii")
    code, _, err = _main(capsys, "redact", "sealed.txt", "-o", "x.txt", "--decrypt")
    assert code == 3 and "does not open with this key" in err
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.slow
def test_bad_input_exits_non_zero_and_leaves_no_file(veil, capsys, tmp_path: Path):
    (tmp_path / "latin1.txt").write_bytes("Ren\u00e9e M\u00fcller\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    done = veil("redact", "latin1.txt", "-o", "out.txt", "--json")
    assert done.returncode == 3, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "not UTF-8" in error["message"] and "not UTF-8" in done.stderr
    assert error["got"] == "byte 0xe9 at line 1, column 4"
    for source, code, message in [("empty.txt", 3, "is empty"), ("gone.txt", 6, "does not exist")]:
        got, out, err = _main(capsys, "redact", source, "-o", "out.txt", "--json")
        assert got == code, err
        assert message in json.loads(out)["error"]["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "latin1.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--operator", "blur"), "unknown redaction operator"),
        (("--entities", "PERSON,SHOE_SIZE"), "unknown entity type"),
        (("--threshold", "2"), "threshold"),
        (("--workers", "-1"), "workers"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(capsys, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text(NOTES, encoding="utf-8")
    code, out, _ = _main(capsys, "redact", "notes.txt", "-o", "out.txt", *args, "--json")
    assert code == 3
    assert message in json.loads(out)["error"]["message"]
    assert not (tmp_path / "out.txt").exists()
    code, _, err = _main(capsys, "redact", "notes.txt")
    assert code == 3 and "needs an input file and -o OUTPUT" in err


@pytest.mark.slow
def test_evaluate_reports_the_held_out_scores(capsys):
    code, out, err = _main(capsys, "redact", "--evaluate", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["part"] == "test" and result["documents"] == 312
    assert result["overlap"]["overall"]["precision"] >= 0.85
    assert result["overlap"]["overall"]["recall"] >= 0.85
    code, out, _ = _main(capsys, "redact", "--evaluate", "--part", "tune")
    assert code == 0 and "overall" in out and "tune part" in out
