"""``veil bench`` (text part): the held-out corpus scored and a notes file redacted; the corpus found in a checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

import veil.anonymize.text._corpus as corpus_module
from veil.anonymize.text import BENCH_DATA_VARIABLE, evaluate_pii, load_corpus, pii_benchmark_folder
from veil.bench._text import load_corpus_generator, run_text_bench
from veil.errors import InvalidInputError, NotFoundError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_text_benchmark_reports_quality_and_throughput():
    report = run_text_bench("tiny")
    assert report["quality"]["part"] == "test" and report["quality"]["documents"] == 60
    assert set(report["quality"]["overlap"]["overall"]) >= {"precision", "recall", "f2"}
    run = report["throughput"]["runs"][0]
    assert run["workers"] == 1 and run["mb_per_s"] > 0 and run["entities"] > 0
    assert report["throughput"]["file_bytes"] >= 40_000
    with pytest.raises(InvalidInputError, match="unknown benchmark size"):
        run_text_bench("huge")


def test_the_corpus_and_its_generator_are_found_in_the_checkout(monkeypatch):
    monkeypatch.delenv(BENCH_DATA_VARIABLE, raising=False)
    assert pii_benchmark_folder() == ROOT / "benchmarks" / "pii"
    assert len(load_corpus_generator().TEMPLATES) == 98
    monkeypatch.setenv(BENCH_DATA_VARIABLE, str(ROOT / "benchmarks"))
    assert pii_benchmark_folder() == ROOT / "benchmarks" / "pii"


def test_the_corpus_is_not_in_the_package():
    package = ROOT / "src" / "veil"
    assert not list(package.rglob("pii_corpus*")), "benchmark data belongs in benchmarks/pii"


def test_without_a_checkout_the_error_says_where_the_corpus_lives(monkeypatch, tmp_path):
    monkeypatch.delenv(BENCH_DATA_VARIABLE, raising=False)
    # As installed from a wheel: no benchmarks/ folder above the module.
    monkeypatch.setattr(corpus_module, "__file__", str(tmp_path / "veil/anonymize/text/_corpus.py"))
    with pytest.raises(NotFoundError, match="not in the wheel") as caught:
        evaluate_pii("test", limit=1)
    assert "VEIL_BENCH_DATA" in str(caught.value) and "--corpus" in str(caught.value)
    with pytest.raises(NotFoundError, match="not in the wheel"):
        pii_benchmark_folder()
    monkeypatch.setenv(BENCH_DATA_VARIABLE, str(tmp_path))
    with pytest.raises(NotFoundError, match="VEIL_BENCH_DATA"):
        load_corpus()
