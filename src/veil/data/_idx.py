"""The IDX format of MNIST (LeCun et al.), gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values in C
order. Veil reads it with NumPy directly: the format is four lines of spec and
no well-kept library reads it without also downloading the data.
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, NotFoundError

__all__ = ["read_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_MAGIC_LEN = 4
_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise NotFoundError(
            "IDX file not found",
            expected=f"a file at {path}",
            got="nothing there",
            fix="check the path (MNIST ships as train-images-idx3-ubyte.gz and friends)",
        )
    with path.open("rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    if gzipped:
        return gzip.GzipFile(path, "rb")
    return path.open("rb")


def read_idx(path: str | Path) -> npt.NDArray[np.generic]:
    """Read an IDX file (``.gz`` or raw) into an array of its declared shape and type.

    Raises:
        InvalidInputError: The file is not IDX, is truncated, or has trailing bytes.
    """
    path = Path(path)
    try:
        with _open(path) as handle:
            header = handle.read(_MAGIC_LEN)
            if len(header) < _MAGIC_LEN or header[:2] != b"\x00\x00" or header[2] not in _DTYPES:
                raise InvalidInputError(
                    f"{path.name} is not an IDX file",
                    expected="a magic number 0x0000TTDD (TT a type code, DD the dimensions)",
                    got=f"first bytes {header.hex() or '(none)'}",
                    fix="pass MNIST's original idx3/idx1 files, gzipped or not",
                )
            dtype, ndim = _DTYPES[header[2]], header[3]
            dims_bytes = handle.read(4 * ndim)
            if len(dims_bytes) < 4 * ndim:
                raise _truncated(path, 4 * ndim, len(dims_bytes), "dimension header")
            shape = struct.unpack(f">{ndim}I", dims_bytes)
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            payload = handle.read(expected + 1)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise InvalidInputError(
            f"{path.name} cannot be read",
            expected="a readable (optionally gzipped) IDX file",
            got=str(exc),
            fix="re-download or re-copy the file",
        ) from exc
    if len(payload) != expected:
        if len(payload) > expected:
            raise InvalidInputError(
                f"{path.name} has bytes after the data its header declares",
                expected=f"{expected} bytes of data for shape {shape}",
                got="more",
                fix="the file is corrupt or not IDX; re-copy it",
            )
        raise _truncated(path, expected, len(payload), "data")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _truncated(path: Path, expected: int, got: int, part: str) -> InvalidInputError:
    return InvalidInputError(
        f"{path.name} is truncated",
        expected=f"{expected} bytes of {part}",
        got=f"{got} bytes",
        fix="re-copy the file; it was cut short",
    )
