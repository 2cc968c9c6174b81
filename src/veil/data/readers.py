"""Readers for the formats Veil registers: CSV, Parquet, UCI Adult, MNIST IDX, scikit-learn sets.

A reader opens one source and offers three things: its column names and the
facts its *format* declares (the Adult codebook's categories, MNIST's pixel
range), a stream of chunks (so a file larger than memory can still be
validated at registration), and a whole-table read for analysis, which is
refused up front when the estimated size would not fit in memory.

A public submodule for Veil's own packages (training and federated learning
read a registered dataset through the catalogue's reader, so that the
fingerprint is the one the registration recorded; the benchmarks use the
Adult codebook), and for users who add a format. Users who only load data
call :func:`veil.data.load_table` and :class:`veil.data.Catalog`.
"""

from __future__ import annotations

import csv
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

from veil.data._adult import ADULT_CATEGORIES, ADULT_COLUMNS, ADULT_NUMERIC
from veil.data._idx import read_idx
from veil.data._schema import ColumnKind
from veil.errors import DataTooLargeError, InvalidInputError, NotFoundError
from veil.progress import ProgressCallback, ProgressEvent

__all__ = [
    "ADULT_CATEGORIES",
    "FORMATS",
    "SKLEARN_DATASETS",
    "SKLEARN_TARGETS",
    "Declaration",
    "ImageArrays",
    "Reader",
    "guess_format",
    "open_reader",
]

CHUNK_ROWS = 100_000
_CODE_SAMPLE_ROWS = 10_000  # rows read to tell digit codes with leading zeros from numbers
_HASH_BLOCK = 1 << 20
FORMATS = ("csv", "parquet", "adult", "mnist", "sklearn")
SKLEARN_DATASETS = ("breast_cancer", "diabetes", "digits", "iris", "wine")


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


def _require_file(path: Path, what: str) -> int:
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


def _sha256_files(paths: Sequence[Path], progress: ProgressCallback | None) -> str:
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


# ---------------------------------------------------------------------- CSV
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
        self.size = _require_file(self.path, "data file")
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
                yield from (self._post(chunk) for chunk in reader)
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
        return self._post(frame)

    def _post(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        return _sha256_files([self.path], progress), self.size

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


# ------------------------------------------------------------------- Parquet
class ParquetReader(Reader):
    """Apache Parquet, read row group by row group."""

    format = "parquet"

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq  # noqa: PLC0415 - keeps `veil --help` fast

        self.path = path.expanduser().resolve()
        self.size = _require_file(self.path, "data file")
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

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        return _sha256_files([self.path], progress), self.size

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


# ----------------------------------------------------------------- sklearn
SKLEARN_TARGETS = {
    "breast_cancer": "diagnosis",
    "diabetes": "progression",
    "digits": "digit",
    "iris": "species",
    "wine": "cultivar",
}


SKLEARN_SPLITS = ("all", "train", "test")
SKLEARN_TEST_SHARE = 1 / 3


def sklearn_split_rows(n_rows: int, split: str) -> npt.NDArray[np.int64]:
    """The rows of a fixed, documented split of a bundled set.

    A permutation from ``numpy.random.default_rng(0)``; the first two thirds are
    ``train``, the rest ``test``; each split keeps the original row order. The
    seed makes the split reproducible: it is a partition, not a privacy mechanism.
    """
    if split == "all":
        return np.arange(n_rows)
    order = np.random.default_rng(0).permutation(n_rows)
    cut = n_rows - round(n_rows * SKLEARN_TEST_SHARE)
    return np.sort(order[:cut] if split == "train" else order[cut:])


class SklearnReader(Reader):
    """A data set bundled inside scikit-learn (no download): ``sklearn:NAME``.

    ``split`` is ``all`` (default), or ``train`` / ``test``: a fixed two-thirds /
    one-third partition (:func:`sklearn_split_rows`), so that a model can be
    trained on one part and tested or audited on the other.
    """

    format = "sklearn"

    def __init__(self, name: str, *, split: str = "all") -> None:
        if split not in SKLEARN_SPLITS:
            raise InvalidInputError(
                "unknown split of a bundled scikit-learn set",
                expected=" | ".join(SKLEARN_SPLITS),
                got=repr(split),
                fix="pass --split all, train or test",
            )
        self.split = split
        if name not in SKLEARN_DATASETS:
            raise NotFoundError(
                f"no bundled scikit-learn data set named '{name}'",
                expected="sklearn:" + " | sklearn:".join(SKLEARN_DATASETS),
                got=f"sklearn:{name}",
                fix="pick one of the names above",
            )
        self.name = name
        self._frame: pd.DataFrame | None = None

    @property
    def source(self) -> str:
        return f"sklearn:{self.name}"

    def _load(self) -> pd.DataFrame:
        if self._frame is None:
            from sklearn import datasets  # noqa: PLC0415 - heavy import, only when needed

            loader = getattr(datasets, f"load_{self.name}")
            # Diabetes: the raw (unscaled) values, so age and sex mean what they say.
            bunch = (
                loader(as_frame=True, scaled=False)
                if self.name == "diabetes"
                else loader(as_frame=True)
            )
            frame = bunch.frame.copy()
            target = SKLEARN_TARGETS[self.name]
            frame = frame.rename(columns={"target": target})
            if self.name == "digits":
                frame[target] = frame[target].astype(str)
            elif self.name != "diabetes":
                names = [str(n) for n in bunch.target_names]
                frame[target] = [names[int(i)] for i in frame[target]]
            rows = sklearn_split_rows(len(frame), self.split)
            self._frame = frame.iloc[rows].reset_index(drop=True)
        return self._frame

    def load_options(self) -> dict[str, Any]:
        return {} if self.split == "all" else {"split": self.split}

    def columns(self) -> list[str]:
        return [str(c) for c in self._load().columns]

    def declarations(self) -> dict[str, Declaration]:
        target = SKLEARN_TARGETS[self.name]
        declared: dict[str, Declaration] = {}
        if self.name == "digits":
            # By construction: 8x8 images of counts of set pixels in 4x4 blocks, so 0..16.
            declared = {
                c: Declaration("numeric", bounds=(0.0, 16.0)) for c in self.columns() if c != target
            }
            declared[target] = Declaration(
                "categorical", categories=tuple(str(d) for d in range(10))
            )
        elif self.name != "diabetes":
            from sklearn import datasets  # noqa: PLC0415 - heavy import, only when needed

            names = getattr(datasets, f"load_{self.name}")().target_names
            declared[target] = Declaration("categorical", categories=tuple(str(n) for n in names))
        return declared

    def chunks(self) -> Iterator[pd.DataFrame]:
        yield self._load()

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        frame = self._load()
        return frame[list(columns)].copy() if columns else frame.copy()

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        del progress
        payload = self._load().to_csv(index=False).encode()
        return hashlib.sha256(payload).hexdigest(), len(payload)

    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        return 16 * n_rows * (len(columns) if columns else n_columns)


# ------------------------------------------------------------------- MNIST
class MnistReader(Reader):
    """MNIST in its original IDX files: a directory, and a split (``train`` or ``test``)."""

    format = "mnist"
    kind = "images"
    _PREFIX: ClassVar[dict[str, str]] = {"train": "train", "test": "t10k"}

    def __init__(self, path: Path, *, split: str = "train") -> None:
        if split not in self._PREFIX:
            raise InvalidInputError(
                "unknown MNIST split",
                expected="train or test",
                got=repr(split),
                fix="pass --split train or --split test",
            )
        path = path.expanduser().resolve()
        directory = path if path.is_dir() else path.parent
        if not directory.exists():
            raise NotFoundError(
                "MNIST directory not found",
                expected=f"a directory at {directory}",
                got="nothing there",
                fix="pass the folder holding the four IDX files",
            )
        self.split = split
        self.directory = directory
        prefix = self._PREFIX[split]
        self.images_path = self._find(directory, f"{prefix}-images-idx3-ubyte")
        self.labels_path = self._find(directory, f"{prefix}-labels-idx1-ubyte")
        self._arrays: ImageArrays | None = None

    @staticmethod
    def _find(directory: Path, stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (directory / name).is_file():
                return directory / name
        raise NotFoundError(
            f"MNIST file {stem}[.gz] not found",
            expected=f"{stem}.gz or {stem} in {directory}",
            got="neither",
            fix="pass the folder holding MNIST's original IDX files",
        )

    @property
    def source(self) -> str:
        return str(self.directory)

    def load_options(self) -> dict[str, Any]:
        return {"split": self.split}

    def columns(self) -> list[str]:
        return ["image", "label"]

    def declarations(self) -> dict[str, Declaration]:
        return {
            "image": Declaration("array", bounds=(0.0, 255.0), shape=(28, 28)),
            "label": Declaration("categorical", categories=tuple(str(d) for d in range(10))),
        }

    def arrays(self) -> ImageArrays:
        """The images (n, 28, 28) and labels (n,) as uint8 arrays, checked for consistency."""
        if self._arrays is None:
            images = read_idx(self.images_path)
            labels = read_idx(self.labels_path)
            if (
                images.ndim != 3  # noqa: PLR2004 - (n, rows, cols)
                or labels.ndim != 1
                or images.dtype != np.uint8
                or labels.dtype != np.uint8
            ):
                raise InvalidInputError(
                    "these IDX files do not hold MNIST images and labels",
                    expected="uint8 images of shape (n, 28, 28) and uint8 labels of shape (n,)",
                    got=f"images {images.dtype}{images.shape}, labels {labels.dtype}{labels.shape}",
                    fix="pass the MNIST image (idx3) and label (idx1) files of one split",
                )
            if images.shape[0] != labels.shape[0]:
                raise InvalidInputError(
                    "MNIST images and labels disagree in number",
                    expected=f"{images.shape[0]} labels, one per image",
                    got=f"{labels.shape[0]} labels",
                    fix="pass the image and label files of the same split",
                )
            self._arrays = ImageArrays(images.astype(np.uint8), labels.astype(np.uint8))
        return self._arrays

    def chunks(self) -> Iterator[pd.DataFrame]:
        arrays = self.arrays()
        yield pd.DataFrame({"label": arrays.labels.astype(str)})

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        arrays = self.arrays()
        frame = pd.DataFrame({"image": list(arrays.images), "label": arrays.labels.astype(str)})
        return frame[list(columns)] if columns else frame

    def fingerprint(self, progress: ProgressCallback | None = None) -> tuple[str, int]:
        paths = [self.images_path, self.labels_path]
        return _sha256_files(paths, progress), sum(p.stat().st_size for p in paths)

    def estimate_memory(self, n_rows: int, n_columns: int, columns: Sequence[str] | None) -> int:
        del n_columns, columns
        return n_rows * (28 * 28 + 1)


# ------------------------------------------------------------------ choose
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
