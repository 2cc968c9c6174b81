"""A managed dataset's version, read through the catalogue's reader interface.

:meth:`veil.data.Catalog.load_frame` and :meth:`~veil.data.Catalog.update`
read every dataset through a :class:`~veil.data.readers.Reader`; for a
managed dataset that reader is :class:`VersionReader`, so the load's checks
(memory, the trail entry before any byte, consent) stay one code path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from veil.data._dataset_info import DatasetInfo
from veil.data._managed import ManagedFiles
from veil.data.readers import Reader
from veil.data.readers._base import CHUNK_ROWS
from veil.errors import ConflictError, NotFoundError
from veil.progress import ProgressCallback

if TYPE_CHECKING:
    from veil.data._versions import ManagedVersions

__all__ = ["VersionReader"]

_LOAD_TRIES = 8  # a load outlives this many erasures committed while it reads, then gives up


class VersionReader(Reader):
    """A managed dataset's current (or a chosen) version, read as the catalogue reads a file.

    ``fingerprint`` returns the registration's digest (it stays the original
    bytes' digest across versions); the version's own SHA-256 is checked on
    every :meth:`read`, which is where tampering is caught.
    """

    format = "parquet"

    def __init__(
        self,
        versions: ManagedVersions,
        info: DatasetInfo,
        files: ManagedFiles,
        version: int | None = None,
    ) -> None:
        self._versions = versions
        self._info = info
        self._files = files
        self._pinned = version
        self.version = versions._version_row(info, version)  # noqa: SLF001 - its own mixin

    @property
    def source(self) -> str:
        return self._info.source

    def columns(self) -> list[str]:
        return list(self._info.schema.column_names)

    def chunks(self) -> Iterator[pd.DataFrame]:
        frame = self.read()
        for start in range(0, len(frame), CHUNK_ROWS):
            yield frame.iloc[start : start + CHUNK_ROWS]

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The version's rows; a version shredded meanwhile is replaced by the new current one."""
        for _ in range(_LOAD_TRIES):
            try:
                frame = self._files.read(self._info.name, self.version, columns)
            except (FileNotFoundError, NotFoundError):
                if self._pinned is not None:
                    raise self._versions._gone(self._info, self.version.version) from None  # noqa: SLF001
                latest = self._versions._version_row(self._info, None)  # noqa: SLF001
                if latest.version == self.version.version:
                    raise
                self.version = latest
                continue
            frame.attrs["veil.version"] = self.version.version
            return frame
        raise ConflictError(
            f"'{self._info.name}' changed {_LOAD_TRIES} times while it was being read",
            expected="a version that stays current while it is read",
            got=f"{_LOAD_TRIES} new versions in a row",
            fix="run the load again once the erasures or retention runs have finished",
        )

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        del progress
        return self._info.content_sha256, self._info.size_bytes

    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        del n_rows  # the version's own count
        return self._files.estimate_memory(self.version, n_columns, columns)
