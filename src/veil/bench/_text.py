"""``veil bench anonymize`` (text part): redaction quality on the held-out corpus, and throughput.

Quality: span-level precision, recall and F2 per entity type and overall on
the ``test`` part of Veil's labelled corpus (templates never used for
tuning), with both matching rules (overlap and strict). The corpus and its
generator are benchmark data kept in the repository (``benchmarks/pii``), not
in the wheel: this benchmark runs from a checkout, or with ``VEIL_BENCH_DATA``
naming a copy of the ``benchmarks`` folder.

Throughput: a file of clinical and financial notes (about 7 MB at ``full``
size), each line a note of four sentences drawn from the corpus templates
with fresh values (another seed than the corpus, so no line repeats the
evaluation data), redacted by :func:`veil.anonymize.redact_file` with
the ``tag`` operator, once in this process and once with one worker process
per CPU (``full`` size only). The engine is loaded before the clock starts; worker processes load
theirs inside the timed run (that start-up is part of their cost).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

from veil.anonymize.text import (
    DEFAULT_THRESHOLD,
    evaluate_pii,
    load_engine,
    pii_benchmark_folder,
    redact_file,
)
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = ["TEXT_BENCH_SIZES", "load_corpus_generator", "run_text_bench"]

# size -> (target bytes of the notes file, held-out sentences scored (None: all))
TEXT_BENCH_SIZES: dict[str, tuple[int, int | None]] = {
    "tiny": (40_000, 60),
    "full": (7_000_000, None),
}
_NOTES_SEED = 7


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_corpus_generator() -> ModuleType:
    """The corpus generator, ``benchmarks/pii/corpus.py``, loaded from the repository.

    It is benchmark code kept beside the corpus, outside the package; the
    folder is found by :func:`veil.anonymize.text.pii_benchmark_folder`.

    Raises:
        NotFoundError: No checkout of Veil's repository (or ``VEIL_BENCH_DATA``) to load it from.
    """
    name = "veil_benchmarks_pii_corpus"
    if name in sys.modules:
        return sys.modules[name]
    path = pii_benchmark_folder() / "corpus.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(
            "the corpus generator cannot be loaded",
            expected=f"a Python module at {path}",
            got="no loader for it",
            fix="restore benchmarks/pii/corpus.py from the repository",
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def write_notes(path: Path, target_bytes: int, seed: int = _NOTES_SEED) -> tuple[int, int]:
    """Write notes of four corpus sentences per line until ``target_bytes``; (bytes, lines)."""
    generator = load_corpus_generator()
    templates, generate_corpus = generator.TEMPLATES, generator.generate_corpus

    # Sentences average about 95 bytes; drawing for 80 overshoots, and the loop stops at
    # the target.
    per_template = max(2, target_bytes // (80 * len(templates)) + 2)
    records = generate_corpus(seed=seed, per_template=per_template)
    # Interleave the templates, so that each note mixes clinical and financial sentences.
    order = sorted(
        records, key=lambda r: (int(r.id.rsplit("-", 1)[1]), zlib.crc32(r.template.encode()))
    )
    size = lines = 0
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for start in range(0, len(order) - 3, 4):
            note = " ".join(r.text for r in order[start : start + 4]) + "\n"
            handle.write(note)
            size += len(note.encode("utf-8"))
            lines += 1
            if size >= target_bytes:
                break
    return size, lines


def run_text_bench(size: str = "full", progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Score the held-out corpus and time the redaction of a notes file.

    Args:
        size: ``"full"`` (all held-out sentences, a ~7 MB file) or ``"tiny"``
            (60 sentences, 40 kB: a few seconds, for tests).
        progress: Receives events of each step.

    Returns:
        A JSON-ready report: ``quality`` (per entity and overall, overlap and
        strict matching), ``throughput`` (bytes, lines, seconds and MB/s, for
        one process and for the worker processes) and ``machine``.
    """
    if size not in TEXT_BENCH_SIZES:
        raise InvalidInputError(
            "unknown benchmark size",
            expected=f"one of {', '.join(TEXT_BENCH_SIZES)}",
            got=repr(size),
            fix="use --size full for the reported numbers, tiny for a smoke test",
        )

    target, limit = TEXT_BENCH_SIZES[size]

    def step(name: str, done: int, total: int) -> None:
        emit(progress, "bench text", done, total, unit="steps", detail=name)

    step("loading the engine", 0, 4)
    started = time.perf_counter()
    load_engine(with_ner=True)
    load_seconds = time.perf_counter() - started
    step("scoring the held-out corpus", 1, 4)
    quality = evaluate_pii("test", limit=limit).to_dict()
    workers = max(1, min(_cpus(), 16))
    runs = []
    with tempfile.TemporaryDirectory(prefix="veil-bench-text-") as scratch:
        notes = Path(scratch) / "notes.txt"
        step("writing the notes", 2, 4)
        written, lines = write_notes(notes, target)
        step("redacting", 3, 4)
        for count in sorted({1, workers}) if size == "full" else [1]:
            report = redact_file(
                notes, Path(scratch) / f"notes.{count}.txt", operator="tag", workers=count
            )
            runs.append(
                {
                    "workers": count,
                    "seconds": round(report.seconds, 3),
                    "mb_per_s": round(report.megabytes_per_second, 4),
                    "lines_per_s": round(report.lines / report.seconds, 1),
                    "entities": sum(report.counts.values()),
                }
            )
    step("done", 4, 4)
    return {
        "benchmark": "text redaction",
        "size": size,
        "threshold": DEFAULT_THRESHOLD,
        "engine_load_seconds": round(load_seconds, 3),
        "quality": quality,
        "throughput": {
            "file_bytes": written,
            "file_lines": lines,
            "operator": "tag",
            "runs": runs,
        },
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "goal": {
            "precision": 0.85,
            "recall": 0.85,
            "met": quality["overlap"]["overall"]["precision"] >= 0.85  # noqa: PLR2004
            and quality["overlap"]["overall"]["recall"] >= 0.85,  # noqa: PLR2004
        },
    }
