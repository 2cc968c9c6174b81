"""Files on disk: the two-step sealed output, and the checks before a file is sealed or opened.

Whole files (the manifest, a named key) are written through :mod:`veil._io`.
A sealed or decrypted file takes two steps instead, which ``veil._io``'s
writers do not offer: :func:`atomic_output` fills and fsyncs a temporary file
(mode 0600) beside the destination, and :func:`move_into_place` renames it
over the destination and fsyncs the directory, so that the vault can
register the file's data key, under its lock, between the two (a crash leaves
an unused key, never a sealed file without one). A reader sees the old file
or the new one, never half of either; a decrypted file is moved into place
only once its last tag has verified.

Paths are compared lexically (:func:`absolute`), not through
``Path.resolve()``, so that a symbolic link cannot pass one sealed file off
as another.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from veil._io import fsync_directory
from veil.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = [
    "absolute",
    "atomic_output",
    "check_paths",
    "move_into_place",
]


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
    fsync_directory(path.parent)


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
