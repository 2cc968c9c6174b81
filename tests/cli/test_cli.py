"""The `veil` command: the issue's commands, bad input, exit codes, JSON, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from veil.cli._app import main
from veil.data import Catalog
from veil.errors import DataTooLargeError


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _datasets(capsys) -> list[str]:
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert code == 0
    return [d["name"] for d in json.loads(out)]


@pytest.mark.slow
def test_the_documented_command_through_the_real_executable(tmp_path: Path, shared_data: Path):
    veil = Path(sys.executable).with_name("veil")
    env = os.environ | {"COLUMNS": "120"}

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(veil), *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )

    assert call("--version").stdout.startswith("veil ")
    assert call("init").returncode == 0
    added = call(
        "datasets",
        "add",
        str(shared_data / "adult" / "adult.data"),
        "--format",
        "adult",
        "--name",
        "adult",
        "--qi",
        "age,sex,race",
        "--sensitive",
        "occupation",
    )
    assert added.returncode == 0, added.stderr
    assert "32,561 rows" in added.stdout
    shown = call("datasets", "show", "adult", "--json")
    assert shown.returncode == 0
    record = json.loads(shown.stdout)
    assert record["schema"]["quasi_identifiers"] == ["age", "sex", "race"]
    assert record["schema"]["sensitive"] == ["occupation"]
    assert record["n_rows"] == 32_561


def test_init_is_idempotent_and_reports(capsys, tmp_path: Path):
    code, out, _ = run(capsys, "init", "--json")
    assert code == 0
    first = json.loads(out)
    assert first["created"] is True
    assert first["backend"] == "sqlite"
    code, out, _ = run(capsys, "init", "--json")
    assert json.loads(out)["created"] is False
    code, out, _ = run(capsys, "db", "status", "--json")
    assert json.loads(out)["up_to_date"] is True


def test_commands_without_a_workspace_say_run_init(capsys):
    code, _, err = run(capsys, "datasets", "list")
    assert code == 6
    assert "error [not_found]" in err
    assert "veil init" in err


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize(
    ("make_args", "exit_code", "needle"),
    [
        (lambda d: ["datasets", "add", str(d / "absent.csv"), "--name", "x"], 6, "not found"),
        (lambda d: ["datasets", "add", str(d / "semi.csv"), "--name", "x"], 3, "--delimiter ';'"),
        (
            lambda d: ["datasets", "add", str(d / "good.csv"), "--name", "x", "--qi", "agee"],
            4,
            "did you mean 'age'",
        ),
        (
            lambda d: [
                "datasets",
                "add",
                str(d / "good.csv"),
                "--name",
                "x",
                "--bounds",
                "age=90:17",
            ],
            4,
            "reversed",
        ),
        (
            lambda d: [
                "datasets",
                "add",
                str(d / "good.csv"),
                "--name",
                "x",
                "--bounds",
                "city=0:1",
            ],
            4,
            "not a finite number",
        ),
        (lambda d: ["datasets", "add", str(d / "empty.csv"), "--name", "x"], 3, "is empty"),
        (
            lambda d: ["datasets", "add", str(d / "good.csv"), "--name", "x", "--bounds", "age"],
            3,
            "column=lo:hi",
        ),
        (
            lambda d: ["datasets", "add", str(d / "good.csv"), "--name", "good"],
            7,
            "already registered",
        ),
        (lambda d: ["datasets", "show", "nope"], 6, "no dataset named 'nope'"),
    ],
)
def test_bad_input_is_refused_clearly_and_changes_nothing(
    capsys, tmp_path: Path, make_args, exit_code, needle
):
    (tmp_path / "semi.csv").write_text("age;city\n30;a\n", encoding="utf-8")
    (tmp_path / "good.csv").write_text("age,city\n30,a\n41,b\n", encoding="utf-8")
    (tmp_path / "empty.csv").write_bytes(b"")
    assert run(capsys, "datasets", "add", str(tmp_path / "good.csv"), "--name", "good")[0] == 0
    before = _datasets(capsys)
    code, _out, err = run(capsys, *make_args(tmp_path))
    assert code == exit_code, err
    assert needle in err
    assert "Expected" in err and "Got" in err and "Traceback" not in err
    assert _datasets(capsys) == before == ["good"]


@pytest.mark.usefixtures("workspace")
def test_errors_as_json(capsys, tmp_path: Path):
    code, out, _ = run(
        capsys, "datasets", "add", str(tmp_path / "absent.csv"), "--name", "x", "--json"
    )
    assert code == 6
    error = json.loads(out)["error"]
    assert error["code"] == "not_found"
    assert error["fix"]


@pytest.mark.usefixtures("workspace")
def test_larger_than_memory_is_refused_before_loading(capsys, tmp_path: Path, monkeypatch):
    (tmp_path / "good.csv").write_text("age,city\n30,a\n41,b\n", encoding="utf-8")
    assert run(capsys, "datasets", "add", str(tmp_path / "good.csv"), "--name", "good")[0] == 0
    monkeypatch.setenv("VEIL_MAX_LOAD_BYTES", "10")
    code, _, err = run(capsys, "datasets", "suggest-bounds", str(tmp_path / "good.csv"))
    assert code == 5
    assert "error [data_too_large]" in err
    assert "PRIVACY LEAK WARNING" not in err, (
        "nothing may be read once the estimate exceeds the limit"
    )
    with pytest.raises(DataTooLargeError, match="would not fit"):
        Catalog.open().load_frame("good")


def test_unexpected_errors_hide_the_traceback_unless_debug(capsys, workspace, monkeypatch):
    def broken(self, **_):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(Catalog, "list", broken)
    code, _, err = run(capsys, "datasets", "list")
    assert code == 1
    assert "This is a bug" in err and "kaboom" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "--debug", "datasets", "list")
    assert code == 1
    assert "Traceback" in err


def test_interrupt_exits_130_and_writes_nothing(capsys, workspace, tmp_path: Path, monkeypatch):
    (tmp_path / "good.csv").write_text("age,city\n30,a\n", encoding="utf-8")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("veil.data._catalog.scan_source", interrupted)
    code, _, err = run(capsys, "datasets", "add", str(tmp_path / "good.csv"), "--name", "good")
    assert code == 130
    assert "nothing was changed" in err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert _datasets(capsys) == []


def test_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "datasets", "add")
    assert code == 2
    assert "Missing" in err


@pytest.mark.usefixtures("workspace")
def test_list_and_show_tables(capsys, shared_data: Path):
    code, out, _ = run(capsys, "datasets", "list")
    assert "No datasets yet" in out
    assert (
        run(
            capsys,
            "datasets",
            "add",
            "sklearn:diabetes",
            "--name",
            "diabetes",
            "--qi",
            "age,sex",
            "--bounds",
            "age=18:100,bmi=10:70",
        )[0]
        == 0
    )
    code, out, _ = run(capsys, "datasets", "list")
    assert code == 0 and "diabetes" in out and "age, sex" in out
    code, out, _ = run(capsys, "datasets", "show", "diabetes")
    assert code == 0
    assert "18 .. 100 (user)" in out
    assert "No declared bounds" in out


def test_suggest_bounds_json_marks_the_leak(capsys):
    code, out, err = run(
        capsys, "datasets", "suggest-bounds", "sklearn:diabetes", "--columns", "age", "--json"
    )
    assert code == 0
    payload = json.loads(out)
    assert payload["leaks"] is True
    assert payload["bounds"] == {"age": [19.0, 79.0]}
    assert "PRIVACY LEAK WARNING" in err


def test_db_upgrade_on_a_current_database(capsys, workspace):
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["previous_revision"] == result["revision"] == result["head"]


def test_store_error_for_an_unreachable_database(capsys, workspace, monkeypatch):
    monkeypatch.setenv(
        "VEIL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    )
    code, _, err = run(capsys, "datasets", "list")
    assert code == 11
    assert "error [store_error]" in err
