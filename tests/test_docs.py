"""Every example in README.md, docs/ and examples/ runs (console blocks through the real `veil`)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(page: Path, language: str) -> list[str]:
    return [
        body for lang, body in BLOCK.findall(page.read_text(encoding="utf-8")) if lang == language
    ]


@pytest.fixture
def docs_dir(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory where `data/` is the shared data, as the examples assume."""
    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_page_has_examples_or_is_an_index():
    for page in PAGES:
        has_examples = _blocks(page, "python") or _blocks(page, "console")
        assert has_examples or page.name in {"index.md", "benchmarks.md", "security.md"}, page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_console_examples_run(page: Path, docs_dir: Path):
    veil = Path(sys.executable).with_name("veil")
    for block in _blocks(page, "console"):
        for line in block.splitlines():
            if not line.startswith("$ veil"):
                continue
            args = shlex.split(line[2:])
            done = subprocess.run(
                [str(veil), *args[1:]],
                cwd=docs_dir,
                capture_output=True,
                text=True,
                check=False,
                env=os.environ | {"COLUMNS": "120"},
            )
            assert done.returncode == 0, f"{page.name}: `{line}` failed:\n{done.stderr}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_run(page: Path, docs_dir: Path, capsys: pytest.CaptureFixture[str]):
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in _blocks(page, "python"):
        exec(compile(block, f"{page.name}", "exec"), namespace)  # noqa: S102 - running our own docs
    capsys.readouterr()


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_scripts_run(script: Path, docs_dir: Path):
    for _ in range(2):  # examples must be re-runnable
        done = subprocess.run(
            [sys.executable, str(script)], cwd=docs_dir, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    expected = {"register_dataset.py": "wine: 178 rows", "ledger_charge_curve.py": "charge    50:"}
    assert expected[script.name] in done.stdout


@pytest.mark.parametrize("module_name", ["veil.store", "veil.data", "veil.anonymize"])
def test_docstring_examples_run(module_name: str, docs_dir: Path):
    import doctest
    import importlib

    module = importlib.import_module(module_name)
    failures, attempted = doctest.testmod(module, verbose=False)
    assert attempted > 0
    assert failures == 0


def test_security_page_names_only_tests_and_pages_that_exist():
    """docs/security.md indexes each threat model and the tests that attack it: keep it true."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:tests|src)/[\w/.]+\.py)`", text))
    assert len(named) >= 8
    assert sorted(p for p in named if not (ROOT / p).is_file()) == []
    for page, anchor in re.findall(r"\]\((\w+\.md)(?:#([\w-]+))?\)", text):
        body = (ROOT / "docs" / page).read_text(encoding="utf-8")
        if anchor:
            headings = {
                re.sub(r"[^\w -]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", body, re.MULTILINE)
            }
            assert anchor in headings, f"{page}#{anchor}"
