"""Redaction of files: streamed line by line, in batches, in this process or in worker processes.

Files are read line by line (UTF-8, line endings kept) and analysed in
batches through ``nlp.pipe``; with ``workers > 1`` the batches go to worker
processes (``spawn``), each with its own engine, and come back in order with
a bounded number in flight. The output is written through
:func:`veil._io.open_atomic_text` (a temporary file beside it, fsynced and
renamed at the end, owner-only as before): complete, or not there at all.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil._io import open_atomic_text
from veil._validate import whole_number
from veil.anonymize.text._analyze import BATCH_LINES
from veil.anonymize.text._entities import DEFAULT_THRESHOLD
from veil.anonymize.text._keyed import decrypter
from veil.anonymize.text._redact import Policy, RedactOperator, Replacer, redact_batch
from veil.errors import InvalidInputError, NotFoundError
from veil.progress import ProgressCallback, emit

__all__ = ["RedactionReport", "decrypt_file", "redact_file"]


@dataclass(frozen=True)
class RedactionReport:
    """What :func:`redact_file` or :func:`decrypt_file` did.

    Attributes:
        source: The input file.
        output: The file written (complete, or not at all).
        operator: The operator applied (``"decrypt"`` for :func:`decrypt_file`).
        lines: Lines read.
        bytes: Bytes read.
        seconds: Wall-clock time.
        counts: Entities replaced (or restored) per type.
        workers: Processes that analysed the text.
    """

    source: Path
    output: Path
    operator: str
    lines: int
    bytes: int
    seconds: float
    counts: dict[str, int]
    workers: int = 1

    @property
    def megabytes_per_second(self) -> float:
        """Throughput in MB (10**6 bytes) per second."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "source": str(self.source),
            "output": str(self.output),
            "operator": self.operator,
            "lines": self.lines,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.megabytes_per_second, 4),
            "workers": self.workers,
            "entities": self.counts,
            "total_entities": sum(self.counts.values()),
        }


def _check_paths(src: Path, dst: Path) -> tuple[Path, Path]:
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise NotFoundError(
            "the input file does not exist",
            expected="a readable text file",
            got=str(src),
            fix="check the path",
        )
    if dst.exists() and dst.resolve() == src.resolve():
        raise InvalidInputError(
            "the output would overwrite the input",
            expected="an output path different from the input",
            got=str(dst),
            fix="write to a new file, e.g. -o notes.redacted.txt",
        )
    if src.stat().st_size == 0:
        raise InvalidInputError(
            "the input file is empty",
            expected="UTF-8 text",
            got=f"{src} (0 bytes)",
            fix="check that the right file was given",
        )
    return src, dst


def _check_output_folder(dst: Path) -> None:
    """Missing folders are created inside the current directory only, and never through '..'."""
    folder = dst.parent
    if folder.is_dir():
        return
    here = Path.cwd().resolve()
    inside = ".." not in dst.parts and dst.resolve().is_relative_to(here)
    if not inside:
        raise NotFoundError(
            "the output folder does not exist",
            expected=(
                "an existing folder for an output outside the current directory "
                "(missing folders are created only inside it, and never through '..')"
            ),
            got=f"{folder} (resolves to {folder.resolve()}; current directory {here})",
            fix=f"create the folder first (mkdir -p {folder}) or write inside {here}",
        )
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise InvalidInputError(
                "the output folder is a file",
                expected="a folder (or a path where one can be created)",
                got=f"{parent} is a file",
                fix="choose another output path",
            )


def _read_lines(src: Path, sink: Callable[[int], None]) -> Iterator[str]:
    """Decoded lines (with their line endings); a non-UTF-8 byte stops everything."""
    with src.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    "the input is not UTF-8 text",
                    expected="a UTF-8 encoded text file",
                    got=f"byte 0x{raw[exc.start]:02x} at line {number}, column {exc.start + 1}",
                    fix="convert it first, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8",
                ) from None
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]  # a UTF-8 byte-order mark is not text
            sink(len(raw))
            yield line


def _split_ending(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body) :]


def _redact_chunk(policy: Policy, lines: list[str]) -> tuple[list[str], Counter[str]]:
    """Redact a batch of lines (in this process or in a worker)."""
    replacer = _REPLACERS.get(policy)
    if replacer is None:
        if len(_REPLACERS) >= 4:  # noqa: PLR2004 - a few policies per process at most
            _REPLACERS.clear()
        replacer = _REPLACERS[policy] = Replacer(policy)
    bodies, endings = zip(*(_split_ending(line) for line in lines), strict=True)
    done = redact_batch(replacer, list(bodies))
    counts: Counter[str] = Counter()
    for item in done:
        counts.update(e.entity_type for e in item.entities)
    return [d.text + end for d, end in zip(done, endings, strict=True)], counts


_REPLACERS: dict[Policy, Replacer] = {}


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_atomically(dst: Path, produce: Callable[[Callable[[str], object]], None]) -> None:
    """Write ``dst`` whole (line endings as produced, owner-only), or leave it as it was."""
    with open_atomic_text(dst, newline="") as stream:
        produce(stream.write)


def redact_file(
    src: Path | str,
    dst: Path | str,
    *,
    operator: RedactOperator | str = RedactOperator.TAG,
    key: bytes | None = None,
    entities: Iterable[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    mask_keep: int = 4,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> RedactionReport:
    """Redact a UTF-8 text file line by line into ``dst``, streaming.

    Lines are analysed in batches of :data:`BATCH_LINES`; line endings are
    kept. ``dst`` is written through a temporary file in its directory and
    renamed at the end, so it is complete or absent, never partial (also when
    the input turns out not to be UTF-8 halfway through, or on Ctrl-C).

    Args:
        src: The input file.
        dst: The output file (replaced if it exists). A missing folder is
            created when ``dst`` lies inside the current directory (and its
            path has no ``..``); elsewhere the folder must exist.
        operator, key, entities, threshold, mask_keep: As for :func:`redact_text`.
        workers: Processes analysing batches in parallel (each loads its own
            engine, about 3 s); 1 analyses in this process. The workers are
            started with ``spawn``, so a script that passes ``workers > 1``
            must call it under ``if __name__ == "__main__":``.
        progress: Receives events counting the bytes read.

    Raises:
        NotFoundError: ``src`` does not exist, or ``dst``'s folder does not
            exist and lies outside the current directory.
        InvalidInputError: Empty or non-UTF-8 input, ``dst`` equal to ``src``,
            or a bad argument (see :func:`redact_text`).
    """
    policy = Policy.make(operator, key, entities, threshold, mask_keep)
    workers = whole_number(workers, "workers", expected="1 (this process) or more worker processes")
    source, output = _check_paths(Path(src), Path(dst))
    _check_output_folder(output)
    total = source.stat().st_size
    state = {"bytes": 0, "lines": 0}
    counts: Counter[str] = Counter()
    task = f"redact {source.name}"

    def read(n: int) -> None:
        state["bytes"] += n
        state["lines"] += 1

    def report(done: int) -> None:
        emit(progress, task, done, total, unit="bytes")

    started = time.perf_counter()

    def produce(write: Callable[[str], object]) -> None:
        chunks = _chunks(_read_lines(source, read), BATCH_LINES)
        if workers == 1:
            for chunk in chunks:
                texts, found = _redact_chunk(policy, chunk)
                counts.update(found)
                write("".join(texts))
                report(state["bytes"])
            return
        _redact_in_workers(policy, chunks, workers, write, counts, report)

    _write_atomically(output, produce)
    report(total)
    return RedactionReport(
        source=source,
        output=output,
        operator=policy.operator.value,
        lines=state["lines"],
        bytes=state["bytes"],
        seconds=time.perf_counter() - started,
        counts=dict(sorted(counts.items())),
        workers=workers,
    )


def _redact_in_workers(  # noqa: PLR0917 - private helper of redact_file
    policy: Policy,
    chunks: Iterator[list[str]],
    workers: int,
    write: Callable[[str], object],
    counts: Counter[str],
    report: Callable[[int], None],
) -> None:
    """Batches to ``workers`` processes, written back in order, a bounded number in flight."""
    import multiprocessing  # noqa: PLC0415 - only parallel runs need it

    context = multiprocessing.get_context("spawn")
    pending: list[tuple[Future[tuple[list[str], Counter[str]]], int]] = []
    done_bytes = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            for chunk in chunks:
                size = sum(len(line.encode("utf-8")) for line in chunk)
                pending.append((pool.submit(_redact_chunk, policy, chunk), size))
                while len(pending) >= workers * 3:
                    done_bytes += _drain_one(pending, write, counts)
                    report(done_bytes)
            while pending:
                done_bytes += _drain_one(pending, write, counts)
                report(done_bytes)
        except BaseException:
            for future, _ in pending:
                future.cancel()
            raise


def _drain_one(
    pending: list[tuple[Future[tuple[list[str], Counter[str]]], int]],
    write: Callable[[str], object],
    counts: Counter[str],
) -> int:
    future, size = pending.pop(0)
    texts, found = future.result()
    counts.update(found)
    write("".join(texts))
    return size


def decrypt_file(
    src: Path | str,
    dst: Path | str,
    key: bytes,
    *,
    progress: ProgressCallback | None = None,
) -> RedactionReport:
    """Restore the values of a file redacted with ``operator="encrypt"`` (same key).

    Written like :func:`redact_file`: complete or not at all.
    """
    run = decrypter(key)
    source, output = _check_paths(Path(src), Path(dst))
    _check_output_folder(output)
    total = source.stat().st_size
    state = {"bytes": 0, "lines": 0}
    counts: Counter[str] = Counter()

    def read(n: int) -> None:
        state["bytes"] += n
        state["lines"] += 1

    started = time.perf_counter()

    def produce(write: Callable[[str], object]) -> None:
        for chunk in _chunks(_read_lines(source, read), BATCH_LINES * 4):
            text, found = run("".join(chunk))
            counts.update(found)
            write(text)
            emit(progress, f"decrypt {source.name}", state["bytes"], total, unit="bytes")

    _write_atomically(output, produce)
    return RedactionReport(
        source=source,
        output=output,
        operator="decrypt",
        lines=state["lines"],
        bytes=state["bytes"],
        seconds=time.perf_counter() - started,
        counts=dict(sorted(counts.items())),
    )
