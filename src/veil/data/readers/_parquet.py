"""Parquet files, read a row group at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from veil.data.readers._base import CHUNK_ROWS, Reader, require_file, sha256_files
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

__all__ = ["ParquetReader"]


class ParquetReader(Reader):
    """Apache Parquet, read row group by row group."""

    format = "parquet"

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq  # noqa: PLC0415 - keeps `veil --help` fast

        self.path = path.expanduser().resolve()
        self.size = require_file(self.path, "data file")
        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
            raise InvalidInputError(
                f"{self.path.name} is not a readable Parquet file",
                expected="a Parquet file (magic bytes PAR1)",
                got=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                fix="pass --format csv if it is text, or re-export it",
            ) from exc

    @property
    def source(self) -> str:
        return str(self.path)

    def columns(self) -> list[str]:
        return [str(name) for name in self._file.schema_arrow.names]

    def chunks(self) -> Iterator[pd.DataFrame]:
        for batch in self._file.iter_batches(batch_size=CHUNK_ROWS):
            yield batch.to_pandas()

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        frame: pd.DataFrame = self._file.read(
            columns=list(columns) if columns else None
        ).to_pandas()
        return frame

    def unit_stats(self, unit: str) -> tuple[int, int]:
        """How many people ``unit`` names and the most rows one of them has.

        Streamed by Polars from the file (memory grows with the number of
        people, not of rows), so a file larger than memory can be registered.
        """
        import polars as pl  # noqa: PLC0415 - keeps `veil --help` fast

        counts = (
            pl.scan_parquet(self.path)
            .select(unit)
            .filter(pl.col(unit).is_not_null())
            .group_by(unit)
            .len()
            .select(pl.len().alias("units"), pl.col("len").max().alias("most"))
            .collect(engine="streaming")
        )
        units, most = counts.row(0)
        return int(units), int(most or 0)

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        return sha256_files([self.path], progress), self.size

    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        del n_columns  # the Parquet footer knows each column's size
        meta = self._file.metadata
        wanted = set(columns) if columns else None
        total = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                if wanted is None or chunk.path_in_schema in wanted:
                    total += chunk.total_uncompressed_size
        return int(1.5 * total) + 64 * n_rows
