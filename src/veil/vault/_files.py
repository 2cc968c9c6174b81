"""Files on disk: atomic, owner-only output, and the checks before a file is sealed or opened.

Every file the vault writes (a sealed file, a decrypted file, the manifest)
goes to a temporary file (mode 0600) beside its destination, is fsynced, and
is moved into place with ``os.replace`` followed by an fsync of the
directory: a reader sees the old file or the new one, never half of either.
A decrypted file is moved into place only once its last tag has verified.

Paths are compared lexically (:func:`absolute`), not through
``Path.resolve()``, so that a symbolic link cannot pass one sealed file off
as another.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.progress import ProgressCallback, ProgressEvent

__all__ = [
    "absolute",
    "atomic_output",
    "byte_progress",
    "check_paths",
    "fsync_dir",
    "move_into_place",
    "write_atomic",
]


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file (0600) beside ``path``, fsynced; the caller moves it into place."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp_path = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream, temp_path
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def move_into_place(temporary: Path, path: Path) -> None:
    try:
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as (stream, temporary):
        stream.write(data)
    move_into_place(temporary, path)


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute and normalised lexically (``..`` removed).

    Not ``Path.resolve()``: that follows symbolic links, so a link planted where
    ``2026/payroll.csv.veil`` was, pointing at ``2025/payroll.csv.veil``, would
    pass for the 2025 object's recorded path.
    """
    return os.path.abspath(path)  # noqa: PTH100 - lexical on purpose (see above)


def check_paths(source: Path, output: Path, *, overwrite: bool) -> None:
    if not source.exists():
        raise NotFoundError(
            f"{source} does not exist",
            expected="an existing file",
            got="no such file",
            fix="check the path",
        )
    if not source.is_file():
        raise InvalidInputError(
            f"{source} is not a regular file",
            expected="a file",
            got="a directory or special file",
            fix="pass a file (archive a directory first)",
        )
    if output.exists() and output.resolve() == source.resolve():
        raise InvalidInputError(
            "the output is the input",
            expected="an output path other than the input",
            got=str(output),
            fix="choose another output path",
        )
    if output.exists() and not overwrite:
        raise ConflictError(
            f"{output} already exists",
            expected="an output path that does not exist",
            got="an existing file",
            fix="choose another output path, or pass --force (overwrite=True) to replace it",
        )
    if output.is_dir():
        raise InvalidInputError(
            f"{output} is a directory",
            expected="an output file path",
            got="a directory",
            fix="name the output file",
        )
    if not output.parent.is_dir():
        raise NotFoundError(
            f"the output directory {output.parent} does not exist",
            expected="an existing directory",
            got="no such directory",
            fix="create it first",
        )


def byte_progress(
    progress: ProgressCallback | None, task: str, total: int
) -> Callable[[int], None] | None:
    if progress is None:
        return None

    def report(done: int) -> None:
        progress(ProgressEvent(task, completed=done, total=total, unit="bytes"))

    return report
