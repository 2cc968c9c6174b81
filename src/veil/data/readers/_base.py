"""What every reader is: the :class:`Reader` interface, its records, and the checks it shares.

The file checks (a source that exists, is a regular file and is not empty),
the SHA-256 fingerprint of a source's bytes, and the memory check that
refuses, before reading anything, data that would not fit.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.data._schema import ColumnKind
from veil.errors import DataTooLargeError, InvalidInputError, NotFoundError
from veil.progress import ProgressCallback, ProgressEvent

__all__ = [
    "CHUNK_ROWS",
    "Declaration",
    "ImageArrays",
    "Reader",
    "available_memory_bytes",
    "check_fits_in_memory",
    "require_file",
    "sha256_files",
]

CHUNK_ROWS = 100_000
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Declaration:
    """What a file format's published definition says about one column."""

    kind: ColumnKind
    bounds: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ImageArrays:
    """Images and their labels (MNIST-style data)."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]


def require_file(path: Path, what: str) -> int:
    """The size of the file at ``path``, refusing a missing, non-regular or empty one."""
    if not path.exists():
        raise NotFoundError(
            f"{what} not found",
            expected=f"a file at {path}",
            got="nothing there",
            fix="check the path and the current directory",
        )
    if not path.is_file():
        raise InvalidInputError(
            f"{what} is not a regular file",
            expected=f"a file at {path}",
            got="a directory" if path.is_dir() else "something else",
            fix="pass the path of the file itself",
        )
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(
            f"{path.name} is empty",
            expected="a file with a header and at least one row",
            got="0 bytes",
            fix="check that the export that wrote it finished",
        )
    return size


def sha256_files(paths: Sequence[Path], progress: ProgressCallback | None) -> str:
    """SHA-256 of the files' bytes, in order, with progress in bytes."""
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in paths)
    done = 0
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(ProgressEvent(f"fingerprint {path.name}", done, total, "bytes"))
    return digest.hexdigest()


def available_memory_bytes() -> int:
    """Memory available to a new allocation now (``MemAvailable`` on Linux)."""
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_fits_in_memory(estimate: int, limit: int | None, what: str) -> None:
    """Refuse, before reading anything, data whose estimated size exceeds the limit.

    Args:
        estimate: Estimated in-memory size in bytes.
        limit: The configured limit, or ``None`` for half the available memory.
        what: Name of the data, for the message.
    """
    source = "VEIL_MAX_LOAD_BYTES"
    if limit is None:
        limit = available_memory_bytes() // 2
        source = "half of the available memory"
    if estimate > limit:
        raise DataTooLargeError(
            f"{what} would not fit in memory, so it was not loaded",
            expected=f"at most {limit / 1e9:.2f} GB ({source})",
            got=f"an estimated {estimate / 1e9:.2f} GB in memory",
            fix="load fewer columns (columns=[...]), convert the file to Parquet, "
            "or raise VEIL_MAX_LOAD_BYTES on a machine with more memory",
            details={"estimate_bytes": estimate, "limit_bytes": limit},
        )


class Reader(ABC):
    """One data source in one format."""

    format: ClassVar[str]
    kind: ClassVar[str] = "table"  # or "images"

    @property
    @abstractmethod
    def source(self) -> str:
        """How the source is recorded (absolute path, or ``sklearn:NAME``)."""

    @abstractmethod
    def columns(self) -> list[str]:
        """Column names, in order."""

    def declarations(self) -> dict[str, Declaration]:
        """Facts the format itself declares about columns (none for plain files)."""
        return {}

    @abstractmethod
    def chunks(self) -> Iterator[pd.DataFrame]:
        """The rows, a bounded number at a time."""

    @abstractmethod
    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The whole table (after the caller checked it fits in memory)."""

    @abstractmethod
    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        """SHA-256 of the source's bytes, and its size in bytes."""

    @abstractmethod
    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        """Estimated bytes in memory once read (registration statistics help)."""

    def load_options(self) -> dict[str, Any]:
        """Options needed to open the same source again the same way."""
        return {}
