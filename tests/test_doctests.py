"""Every `>>>` example in src/veil runs and prints what it shows (doctest, with ``...`` wildcards).

The modules are found by scanning the source when the tests are collected, so a module that
gains an example, moves or is split is picked up without a list to keep.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "veil").rglob("*.py")):
        if ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_scan_finds_the_examples():
    assert len(MODULES) >= 10, MODULES


# veil.bench's examples run a benchmark at a tiny size (~10 s): the slow tier.
_SLOW = {"veil.bench"}


@pytest.mark.parametrize(
    "module_name",
    [pytest.param(m, marks=pytest.mark.slow) if m in _SLOW else m for m in MODULES],
)
def test_docstring_examples_run(
    module_name: str, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)  # as the docs assume
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{module_name} has '>>>' in its source but no example doctest can find"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
