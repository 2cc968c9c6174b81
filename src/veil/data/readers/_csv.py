"""Delimited text: plain CSV/TSV files, and the UCI Adult files with their published codebook."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from veil.data._adult import ADULT_CATEGORIES, ADULT_COLUMNS, ADULT_NUMERIC
from veil.data.readers._base import CHUNK_ROWS, Declaration, Reader, require_file, sha256_files
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

__all__ = ["AdultReader", "CsvReader"]

_CODE_SAMPLE_ROWS = 10_000  # rows read to tell digit codes with leading zeros from numbers


class CsvReader(Reader):
    """Delimited text with a header row."""

    format = "csv"

    def __init__(self, path: Path, *, delimiter: str = ",", encoding: str = "utf-8") -> None:
        if len(delimiter) != 1:
            raise InvalidInputError(
                "the delimiter must be one character",
                expected="for example ',' ';' or a tab",
                got=repr(delimiter),
                fix="pass --delimiter ';' (or \\t for a tab)",
            )
        self.path = path.expanduser().resolve()
        self.delimiter = delimiter
        self.encoding = encoding
        self.size = require_file(self.path, "data file")
        self._codes: list[str] | None = None

    @property
    def source(self) -> str:
        return str(self.path)

    def load_options(self) -> dict[str, Any]:
        return {"delimiter": self.delimiter, "encoding": self.encoding}

    def _read_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"sep": self.delimiter, "encoding": self.encoding}
        codes = self._code_columns()
        if codes:
            kwargs["dtype"] = dict.fromkeys(codes, str)
        return kwargs

    def _code_columns(self) -> list[str]:
        """Columns of digit codes with leading zeros (ZIP ``02139``, ``007``), read as text.

        Read as numbers they would lose their zeros (``2139``), be binned as
        intervals, and be released altered. Decided once per reader on the
        first rows, so that every chunk and every read agree.
        """
        if self._codes is None:
            try:
                sample = pd.read_csv(
                    self.path,
                    nrows=_CODE_SAMPLE_ROWS,
                    dtype=str,
                    sep=self.delimiter,
                    encoding=self.encoding,
                )
            except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
                self._codes = []  # the real read names the problem
            else:
                self._codes = [
                    str(column)
                    for column in sample.columns
                    if sample[column].dropna().str.strip().str.fullmatch(r"0\d+").any()
                ]
        return self._codes

    def _wrap(self, exc: Exception) -> InvalidInputError:
        if isinstance(exc, UnicodeDecodeError):
            return InvalidInputError(
                f"{self.path.name} is not valid {self.encoding} text",
                expected=f"text in the {self.encoding} encoding",
                got=f"byte {exc.object[exc.start : exc.start + 1]!r} at offset {exc.start} of a block",
                fix="pass the file's encoding, for example --encoding latin-1",
            )
        if isinstance(exc, pd.errors.EmptyDataError):
            return InvalidInputError(
                f"{self.path.name} has no columns",
                expected="a header row naming the columns",
                got="an empty or blank file",
                fix="check that the export that wrote it finished",
            )
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return InvalidInputError(
            f"{self.path.name} cannot be parsed as delimited text",
            expected=f"rows with the same number of {self.delimiter!r}-separated fields as the header",
            got=message,
            fix="check --delimiter and quoting, or open the file and mend the line named above",
        )

    def columns(self) -> list[str]:
        try:
            header = pd.read_csv(self.path, nrows=0, **self._read_kwargs())
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise self._wrap(exc) from exc
        names = [str(c) for c in header.columns]
        self._check_delimiter(names)
        return names

    def _check_delimiter(self, names: list[str]) -> None:
        if len(names) != 1:
            return
        with self.path.open(encoding=self.encoding, errors="replace", newline="") as handle:
            sample = handle.read(64 * 1024)
        try:
            sniffed = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            return
        if sniffed != self.delimiter:
            shown = "\\t" if sniffed == "\t" else sniffed
            raise InvalidInputError(
                f"{self.path.name} does not look {self.delimiter!r}-delimited",
                expected=f"several columns separated by {self.delimiter!r}",
                got=f"one column named {names[0][:60]!r}; the text looks {sniffed!r}-delimited",
                fix=f"pass --delimiter '{shown}'",
            )

    def chunks(self) -> Iterator[pd.DataFrame]:
        try:
            with pd.read_csv(self.path, chunksize=CHUNK_ROWS, **self._read_kwargs()) as reader:
                yield from (self._post(self._whole_rows(chunk)) for chunk in reader)
        except InvalidInputError:
            raise  # already says what is wrong (and is a ValueError)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise self._wrap(exc) from exc

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        try:
            frame = pd.read_csv(
                self.path, usecols=list(columns) if columns else None, **self._read_kwargs()
            )
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise self._wrap(exc) from exc
        if columns is None:  # one column: name the delimiter rather than blame the column names
            self._check_delimiter([str(c) for c in frame.columns])
        return self._post(self._whole_rows(frame))

    def _whole_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``, refused when its rows held more fields than the header has names.

        pandas reads such a file without a word: the surplus leading fields of every
        row become the index, and the data lose those columns.
        """
        if isinstance(frame.index, pd.RangeIndex):
            return frame
        names = frame.shape[1]
        raise InvalidInputError(
            f"{self.path.name} has more fields in its rows than names in its header",
            expected=f"rows with the same number of {self.delimiter!r}-separated fields as the header",
            got=f"a header of {names} names and rows of {names + frame.index.nlevels} fields",
            fix="name every column in the header row (a first line of counts, as in "
            "scikit-learn's bundled CSV files, is not a header: remove it and add one)",
        )

    def _post(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        return sha256_files([self.path], progress), self.size

    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        # Text numbers and short strings take about 1-3x their file size in pandas.
        share = len(columns) / n_columns if columns else 1.0
        return int(3 * self.size * share) + 64 * n_rows


class AdultReader(CsvReader):
    """The UCI Adult files: no header, ``', '`` separated, ``?`` missing, test labels end in ``.``."""

    format = "adult"

    def __init__(self, path: Path, *, encoding: str = "utf-8") -> None:
        super().__init__(path, delimiter=",", encoding=encoding)
        with self.path.open(encoding=encoding, errors="replace") as handle:
            first = handle.readline()
        # adult.test opens with the comment line "|1x3 Cross validator".
        self.skiprows = 1 if first.startswith("|") else 0
        if first.lower().startswith("age"):
            raise InvalidInputError(
                f"{self.path.name} has a header row, which the UCI Adult files do not",
                expected="adult.data / adult.test as published (no header)",
                got=f"first line {first.strip()[:60]!r}",
                fix="register it with --format csv instead",
            )

    def load_options(self) -> dict[str, Any]:
        return {"encoding": self.encoding}

    def _read_kwargs(self) -> dict[str, Any]:
        return {
            "sep": ",",
            "header": None,
            "names": list(ADULT_COLUMNS),
            "skipinitialspace": True,
            "na_values": ["?"],
            "keep_default_na": False,
            "skiprows": self.skiprows,
            "skip_blank_lines": True,
            "encoding": self.encoding,
            "index_col": False,
        }

    def columns(self) -> list[str]:
        return list(ADULT_COLUMNS)

    def declarations(self) -> dict[str, Declaration]:
        declared = {
            name: Declaration("categorical", categories=cats)
            for name, cats in ADULT_CATEGORIES.items()
        }
        declared.update({name: Declaration("numeric") for name in ADULT_NUMERIC})
        return declared

    def _post(self, frame: pd.DataFrame) -> pd.DataFrame:
        if "income" not in frame.columns:  # a column subset was read
            return frame
        income = frame["income"]
        frame["income"] = income.where(income.isna(), income.astype(str).str.rstrip("."))
        return frame
