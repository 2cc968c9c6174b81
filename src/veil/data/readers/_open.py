"""Choosing a reader: the format a source implies, and opening it with its options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from veil.data.readers._base import Reader
from veil.data.readers._csv import AdultReader, CsvReader
from veil.data.readers._mnist import MnistReader
from veil.data.readers._parquet import ParquetReader
from veil.data.readers._sklearn import SklearnReader
from veil.errors import InvalidInputError

__all__ = ["FORMATS", "guess_format", "open_reader"]

FORMATS = ("csv", "parquet", "adult", "mnist", "sklearn")


def guess_format(source: str) -> str:
    """The format implied by a source string: ``sklearn:``, a directory, or the file name."""
    if source.startswith("sklearn:"):
        return "sklearn"
    path = Path(source).expanduser()
    name = path.name.lower()
    if path.is_dir() or "idx" in name:
        return "mnist"
    if name in ("adult.data", "adult.test"):
        return "adult"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise InvalidInputError(
        f"cannot tell the format of {path.name}",
        expected="a name ending in .csv/.tsv/.parquet, adult.data/adult.test, a MNIST folder or sklearn:NAME",
        got=repr(source),
        fix="pass --format csv|parquet|adult|mnist|sklearn",
    )


def open_reader(source: str, format: str | None = None, **options: Any) -> Reader:  # noqa: A002
    """Open ``source`` in ``format`` (guessed when ``None``) with format options."""
    chosen = format or guess_format(source)
    if chosen == "sklearn":
        return SklearnReader(source.removeprefix("sklearn:"), split=options.get("split") or "all")
    path = Path(source)
    if chosen == "csv":
        delimiter = options.get("delimiter") or ("\t" if path.suffix.lower() == ".tsv" else ",")
        return CsvReader(path, delimiter=delimiter, encoding=options.get("encoding", "utf-8"))
    if chosen == "adult":
        return AdultReader(path, encoding=options.get("encoding", "utf-8"))
    if chosen == "parquet":
        return ParquetReader(path)
    if chosen == "mnist":
        return MnistReader(path, split=options.get("split") or "train")
    raise InvalidInputError(
        "unknown data format",
        expected=" | ".join(FORMATS),
        got=repr(chosen),
        fix="pass one of the formats above to --format",
    )
