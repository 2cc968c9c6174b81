"""Start-up: `veil --help`, `veil --version`, every `--help` and `veil budget show` stay light.

No wall time is asserted (the machine is shared): a fresh interpreter runs the
command and reports which modules it imported; heavy libraries must not be
among them unless the command needs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# What no `--help` needs: models, NLP, encryption, federated learning, query engines.
HEAVY = frozenset(
    {
        "torch",
        "spacy",
        "presidio_analyzer",
        "opendp",
        "tenseal",
        "flwr",
        "polars",
        "sklearn",
        "jax",
        "mbi",
    }
)
# `veil --help` and `veil --version` need no data frames and no database either (NumPy,
# about 0.1 s, is left to cli/he, which uses it throughout).
FRAMES_AND_STORE = frozenset({"pandas", "pyarrow", "sqlalchemy", "alembic"})

_PROBE = """
import json, sys
from veil.cli._app import main
code = main(sys.argv[2:])
names = sorted({m.split(".")[0] for m in sys.modules})
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": names}, f)
"""


def _probe(cwd: Path, probe: str, *args: str) -> dict:
    """Run ``probe`` in a fresh interpreter; what it wrote to the report file named first."""
    report = cwd / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", probe, str(report), *args],
        cwd=cwd,
        env=os.environ | {"COLUMNS": "120"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert report.is_file(), done.stderr
    result = json.loads(report.read_text(encoding="utf-8"))
    report.unlink()
    return result


def _imported(cwd: Path, *args: str) -> tuple[int, set[str]]:
    result = _probe(cwd, _PROBE, *args)
    return result["code"], set(result["modules"])


@pytest.mark.parametrize("args", [("--help",), ("--version",)])
def test_help_and_version_import_no_heavy_library(tmp_path: Path, args):
    code, modules = _imported(tmp_path, *args)
    assert code == 0
    assert not modules & HEAVY, sorted(modules & HEAVY)


def test_help_imports_no_data_frame_and_no_database(tmp_path: Path):
    code, modules = _imported(tmp_path, "--help")
    assert code == 0
    assert not modules & FRAMES_AND_STORE, sorted(modules & FRAMES_AND_STORE)


def test_the_format_help_lists_the_readers_formats():
    from veil.cli.datasets import FORMATS_HELP
    from veil.data.readers import FORMATS

    assert FORMATS_HELP.split(", ") == list(FORMATS)


@pytest.mark.slow
def test_redact_loads_neither_torch_nor_opendp(tmp_path: Path):
    # Presidio imported torch to pick a device for transformer models (seconds), and
    # veil.anonymize imported OpenDP and scikit-learn for one column operator.
    (tmp_path / "notes.txt").write_text("Call John Smith on 020 7946 0958.\n", encoding="utf-8")
    code, modules = _imported(tmp_path, "redact", "notes.txt", "-o", "out.txt")
    assert code == 0
    assert "<PERSON>" in (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert "spacy" in modules and "presidio_analyzer" in modules  # what it needs
    unneeded = {"torch", "transformers", "opendp", "sklearn", "tenseal", "flwr", "polars"}
    assert not modules & unneeded, sorted(modules & unneeded)


SUBCOMMANDS = (
    "init", "db", "datasets", "budget", "query", "train", "models", "audit", "scan",
    "anonymize", "redact", "federate", "he", "bench", "demo", "vault", "mpc", "synth",
)  # fmt: skip


# One interpreter imports what every command imports (`veil.cli._app`), then forks a child per
# subcommand: each child starts from exactly what a fresh `veil CMD --help` would hold at that
# point, and reports what it held after. Eighteen fresh interpreters took ~20 s of CPU.
_HELP_PROBE = """
import contextlib, io, json, os, sys
from veil.cli._app import main
results = {}
for command in sys.argv[2:]:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main([command, "--help"])
        names = sorted({m.split(".")[0] for m in sys.modules})
        with os.fdopen(write, "w") as pipe:
            json.dump({"code": code, "modules": names}, pipe)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        results[command] = json.load(pipe)
    os.waitpid(child, 0)
with open(sys.argv[1], "w") as f:
    json.dump(results, f)
"""


@pytest.fixture(scope="module")
def help_imports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """What each subcommand's ``--help`` imported, by command."""
    return _probe(tmp_path_factory.mktemp("help"), _HELP_PROBE, *SUBCOMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_each_subcommand_help_imports_no_heavy_library(help_imports: dict[str, dict], command):
    code, modules = help_imports[command]["code"], set(help_imports[command]["modules"])
    assert code == 0
    assert "veil" in modules and "typer" in modules  # the probe ran the command
    assert not modules & HEAVY, sorted(modules & HEAVY)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["query", "anonymize"])
def test_a_forked_child_imports_what_a_fresh_interpreter_does(
    help_imports: dict[str, dict], tmp_path: Path, command: str
):
    code, modules = _imported(tmp_path, command, "--help")
    assert code == 0
    assert set(help_imports[command]["modules"]) == modules


@pytest.mark.slow
def test_budget_show_imports_only_what_the_ledger_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from veil.cli._app import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "people.csv").write_text(
        "age,income\n" + "".join(f"{20 + i % 50},{1000 + i}\n" for i in range(30)),
        encoding="utf-8",
    )
    for args in (  # set up in this process: only the command measured needs a fresh one
        ("init",),
        ("datasets", "add", "people.csv", "-n", "people", "--bounds", "age=0:120"),
        ("budget", "set", "people", "--epsilon", "1"),
    ):
        assert main(list(args)) == 0, capsys.readouterr().err
    code, modules = _imported(tmp_path, "budget", "show", "people")
    assert code == 0
    # The ledger composes with dp_accounting (and so SciPy and NumPy) through SQLAlchemy;
    # no query engine, no model library, no NLP.
    assert "dp_accounting" in modules
    assert not modules & HEAVY, sorted(modules & HEAVY)


_APP_PROBE = """
import json, sys
from pathlib import Path
from starlette.testclient import TestClient
from veil.serve import ServeConfig, create_app
with TestClient(create_app(ServeConfig(home=Path(sys.argv[2])))) as client:  # start-up runs
    assert client.get("/healthz").status_code == 200
with open(sys.argv[1], "w") as f:
    json.dump(sorted({m.split(".")[0] for m in sys.modules}), f)
"""


def _app_modules(cwd: Path, home: Path) -> set[str]:
    """The top-level modules a gateway worker holds once its app has started over ``home``."""
    return set(_probe(cwd, _APP_PROBE, str(home)))


@pytest.mark.slow
def test_model_cards_and_a_model_less_gateway_need_no_torch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """`veil models list/show` read privacy cards; a gateway loads PyTorch only to serve a model.

    Importing PyTorch is 2-4 s of a process's start here: a worker of a workspace without
    models never pays it, and a worker of one with models pays it at start-up (so that its
    first prediction does not).
    """
    from veil.cli._app import main

    home = tmp_path / ".veil"
    monkeypatch.chdir(tmp_path)
    for args in (
        ("init",),
        ("datasets", "add", "sklearn:digits", "--name", "digits"),
        ("budget", "set", "digits", "--epsilon", "5", "--delta", "1e-4"),
    ):
        assert main(list(args)) == 0, capsys.readouterr().err
    assert "torch" not in _app_modules(tmp_path, home)
    code = main(
        ["train", "--dataset", "digits", "--model", "logreg", "--epsilon", "1",
         "--delta", "1e-4", "--epochs", "1", "--batch-size", "200", "--name", "digits-lr"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for args in (("models", "list"), ("models", "show", "digits-lr")):
        code, modules = _imported(tmp_path, *args)
        assert code == 0, args
        assert "torch" not in modules, args
    assert "torch" in _app_modules(tmp_path, home)
