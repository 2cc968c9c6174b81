"""One way to write a file whole, and one way to write JSON.

Atomic writes. Every file Veil writes for a user or for itself (a report, a
model card, a codebook, a key) appears whole or not at all: the bytes go to a
temporary file in the same directory (so the rename stays on one file
system), the file is flushed and fsynced, ``os.replace`` moves it over the
target in one step, and the directory is fsynced so that the rename itself
survives a power cut. An exception or an interrupt at any point before the
rename leaves the old file (or no file) and removes the temporary one.

The temporary file is created by :func:`tempfile.mkstemp` (``O_EXCL``, owner
only) and set to ``mode`` *before* any byte is written, so a private file is
never readable by others, not even for a moment. ``mode`` defaults to
``0o600``, which is what every writer in Veil produced before; pass ``0o644``
for a file meant to be shared (a public key, a certificate), or ``None`` for
what a plain ``open()`` would create (``0o666`` less the process's umask).

JSON. Veil writes infinities and NaN one way, as the strings ``"inf"``,
``"-inf"`` and ``"nan"`` (the spelling ``float()`` reads back, and the one
stored model cards have always used); JSON itself has no such numbers, and
Python's bare ``Infinity`` tokens break other parsers. :func:`to_jsonable`
also turns NumPy scalars and arrays into numbers and lists, tuples into
lists, and anything else it does not know into ``str(value)`` (paths, dates).
:func:`float_from_json` reads a number back, accepting the older spellings
too (``Infinity``, ``"Infinity"``, ``"NaN"``). Where a field uses ``null``
for "unbounded" (a ledger's spent epsilon after a non-private release), that
is the field's meaning, documented with it, not an encoding of infinity.

>>> dumps({"epsilon": float("inf"), "runs": (1, 2)})
'{"epsilon": "inf", "runs": [1, 2]}'
>>> float_from_json("inf")
inf
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "dumps",
    "float_from_json",
    "fsync_directory",
    "open_atomic_bytes",
    "open_atomic_text",
    "to_jsonable",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

OWNER_ONLY = 0o600

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_OLD_SPELLINGS = {"infinity": math.inf, "+inf": math.inf, "-infinity": -math.inf}


# ---------------------------------------------------------------------------- atomic files


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask_mode() -> int:
    """``0o666`` less the umask: the mode ``open()`` gives a new file."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # no /proc: read the umask by setting it (restored at once)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    *,
    mode: int | None = OWNER_ONLY,
    make_parents: bool = True,
) -> Iterator[Path]:
    """A temporary file beside ``path`` for the body to fill; moved over ``path`` on success.

    The body may write the yielded path by any means (``DataFrame.to_parquet``,
    ``open``). When the body returns, the file is fsynced, renamed over
    ``path`` and the directory fsynced; when it raises, the temporary file is
    removed and ``path`` is left as it was.

    Args:
        path: The file to create or replace.
        mode: Permission bits of the new file, set before anything is written
            (``None``: what ``open()`` would give it).
        make_parents: Create missing parent directories first.
    """
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        try:
            os.fchmod(handle, _umask_mode() if mode is None else mode)
        finally:
            os.close(handle)
        yield temporary
        _fsync_file(temporary)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


@contextlib.contextmanager
def open_atomic_bytes(
    path: str | os.PathLike[str],
    *,
    mode: int | None = OWNER_ONLY,
    make_parents: bool = True,
) -> Iterator[IO[bytes]]:
    """A binary stream whose bytes replace ``path`` whole when the block ends without error."""
    with (
        atomic_path(path, mode=mode, make_parents=make_parents) as temporary,
        temporary.open("wb") as stream,
    ):
        yield stream


@contextlib.contextmanager
def open_atomic_text(
    path: str | os.PathLike[str],
    *,
    mode: int | None = OWNER_ONLY,
    encoding: str = "utf-8",
    newline: str | None = None,
    make_parents: bool = True,
) -> Iterator[IO[str]]:
    """A text stream whose text replaces ``path`` whole when the block ends without error."""
    with (
        atomic_path(path, mode=mode, make_parents=make_parents) as temporary,
        temporary.open("w", encoding=encoding, newline=newline) as stream,
    ):
        yield stream


def write_bytes_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int | None = OWNER_ONLY,
    make_parents: bool = True,
) -> None:
    """Write ``data`` to ``path``: the whole new file, or the old one untouched."""
    with open_atomic_bytes(path, mode=mode, make_parents=make_parents) as stream:
        stream.write(data)


def write_text_atomic(
    path: str | os.PathLike[str],
    text: str,
    *,
    mode: int | None = OWNER_ONLY,
    encoding: str = "utf-8",
    make_parents: bool = True,
) -> None:
    """Write ``text`` to ``path``: the whole new file, or the old one untouched."""
    with open_atomic_text(path, mode=mode, encoding=encoding, make_parents=make_parents) as stream:
        stream.write(text)


def write_json_atomic(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    mode: int | None = OWNER_ONLY,
    indent: int | None = 2,
    make_parents: bool = True,
) -> None:
    """Write ``obj`` as JSON (:func:`dumps`, one line break at the end) to ``path`` atomically."""
    write_text_atomic(path, dumps(obj, indent=indent) + "\n", mode=mode, make_parents=make_parents)


# ---------------------------------------------------------------------------- JSON


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def to_jsonable(obj: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    """``obj`` made of JSON types only, with infinities and NaN as ``"inf"``/``"-inf"``/``"nan"``.

    NumPy scalars and arrays become numbers and lists, tuples and sets become
    lists, mapping keys are kept, and any other object becomes ``str(obj)``.
    """
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        return _float(float(obj))
    if isinstance(obj, Mapping):
        return {key: to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(value) for value in obj]
    if type(obj).__module__ == "numpy":  # scalars and arrays, without importing NumPy here
        if getattr(obj, "ndim", 0) and hasattr(obj, "tolist"):
            return to_jsonable(obj.tolist())
        if hasattr(obj, "item"):
            return to_jsonable(obj.item())
    return str(obj)


def dumps(
    obj: Any,
    *,
    indent: int | None = None,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
) -> str:
    """``obj`` as JSON text, through :func:`to_jsonable` (never a bare ``Infinity``)."""
    return json.dumps(
        to_jsonable(obj),
        indent=indent,
        sort_keys=sort_keys,
        separators=separators,
        allow_nan=False,
    )


def float_from_json(value: Any) -> float:
    """A number as :func:`dumps` writes it (or as older files did) back as a float.

    Accepts numbers, ``"inf"``, ``"-inf"``, ``"nan"`` and the older spellings
    ``"Infinity"``, ``"-Infinity"``, ``"NaN"`` (any case).

    Raises:
        TypeError: For ``None``, booleans and other types.
        ValueError: For any other string.
    """
    if isinstance(value, bool) or value is None:
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _NON_FINITE:
            return _NON_FINITE[key]
        if key in _OLD_SPELLINGS:
            return _OLD_SPELLINGS[key]
        raise ValueError(f"expected a number or 'inf', '-inf', 'nan', got {value!r}")
    raise TypeError(f"expected a number, got {type(value).__name__}")
