"""Every example in README.md, docs/ and examples/ runs (console blocks through the real `veil`).

A console block may show a command's output under its `$` line; the command must then print
exactly that, with `...` standing for what changes from run to run (as in a doctest). The
`>>>` examples in docstrings run in tests/test_doctests.py.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from veil.cli._app import main
from veil.cli._output import out

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


def _commands(block: str) -> list[tuple[str, str]]:
    """Each `$ ...` line of a console block with the output shown under it (maybe none)."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            commands.append((line, []))
        elif commands:
            commands[-1][1].append(line)
    return [(line, "\n".join(shown).strip("\n")) for line, shown in commands]


def test_a_console_block_pairs_each_command_with_its_shown_output():
    block = "$ veil a\n$ veil b --x\nline 1\n  line 2\n\n$ veil c\n"
    assert _commands(block) == [
        ("$ veil a", ""),
        ("$ veil b --x", "line 1\n  line 2"),
        ("$ veil c", ""),
    ]


def _matches(shown: str, printed: str) -> bool:
    """Doctest's rule: the whole output, `...` for any run of text, spaces and newlines alike."""
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return doctest.OutputChecker().check_output(shown + "\n", printed, flags)


def test_shown_output_is_compared_like_a_doctest():
    assert _matches("wrote 3 rows in ... s", "wrote 3 rows in 0.25 s\n")
    assert _matches("a  b\nc", "a b c\n")
    assert not _matches("wrote 3 rows", "wrote 4 rows\n")
    assert not _matches("wrote 3 rows", "wrote 3 rows\nand more\n")


def _veil_lines(page: Path) -> list[tuple[str, str]]:
    return [
        (line, shown)
        for block in _blocks(page, "console")
        for line, shown in _commands(block)
        if line.startswith("$ veil")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_console_examples_run_and_print_what_they_show(
    page: Path, docs_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """Each `$ veil` line runs; where the page shows its output, the output is that (`...` for
    times, hashes, paths and random values).

    The lines run in this process, through the function behind the `veil` executable (`main`, the
    same argument parsing, exit code and printing), so that the libraries a page needs load once
    rather than once per line: a subprocess per line spent most of its time importing (the
    README's sixteen lines: ~89 s as processes, ~25 s here). The executable itself is run below.
    """
    monkeypatch.setenv("COLUMNS", "120")  # as wide as the pages' tables
    assert out.width == 120, "the console's width was fixed before the test could set it"
    for line, shown in _veil_lines(page):
        capsys.readouterr()
        code = main(shlex.split(line[2:])[1:])
        printed = capsys.readouterr()
        assert code == 0, f"{page.name}: `{line}` failed ({code}):\n{printed.err}"
        if shown:
            assert _matches(shown, printed.out), (
                f"{page.name}: `{line}` printed\n{printed.out}\nwhere the page shows\n{shown}"
            )


@pytest.mark.slow
def test_the_readme_opening_lines_run_through_the_real_executable(docs_dir: Path):
    """The installed `veil` script, as a reader types it: the README's first lines, each a process."""
    veil = Path(sys.executable).with_name("veil")
    lines = _veil_lines(ROOT / "README.md")[:4]
    assert [line.split()[2] for line, _ in lines] == ["init", "datasets", "datasets", "datasets"]
    for line, shown in lines:
        done = subprocess.run(
            [str(veil), *shlex.split(line[2:])[1:]],
            cwd=docs_dir,
            capture_output=True,
            text=True,
            check=False,
            env=os.environ | {"COLUMNS": "120"},
        )
        assert done.returncode == 0, f"`{line}` failed:\n{done.stderr}"
        if shown:
            assert _matches(shown, done.stdout), f"`{line}` printed\n{done.stdout}"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_run(page: Path, docs_dir: Path, capsys: pytest.CaptureFixture[str]):
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in _blocks(page, "python"):
        exec(compile(block, f"{page.name}", "exec"), namespace)  # noqa: S102 - running our own docs
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_scripts_run(script: Path, docs_dir: Path):
    for _ in range(2):  # examples must be re-runnable
        done = subprocess.run(
            [sys.executable, str(script)], cwd=docs_dir, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    expected = {"register_dataset.py": "wine: 178 rows", "ledger_charge_curve.py": "charge    50:"}
    assert expected[script.name] in done.stdout


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
