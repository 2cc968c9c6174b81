"""Loaders on the real files in ../shared/data, and on small files made to be wrong."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from veil.data import load_mnist, load_table, read_idx
from veil.data._adult import ADULT_CATEGORIES, ADULT_COLUMNS
from veil.data.readers import SKLEARN_DATASETS, guess_format, open_reader
from veil.errors import DataTooLargeError, InvalidInputError, NotFoundError


# ------------------------------------------------------------------ MNIST IDX
def test_mnist_train_and_test_from_the_original_gzipped_files(shared_data: Path):
    train = load_mnist(shared_data / "mnist", "train")
    test = load_mnist(shared_data / "mnist", "test")
    assert train.images.shape == (60_000, 28, 28)
    assert test.images.shape == (10_000, 28, 28)
    assert train.images.dtype == np.uint8
    assert train.labels.tolist()[:5] == [5, 0, 4, 1, 9]  # the well-known first labels
    assert np.bincount(train.labels, minlength=10).sum() == 60_000
    assert set(np.unique(test.labels)) == set(range(10))


def test_uncompressed_idx_reads_the_same(shared_data: Path, tmp_path: Path):
    gz = shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    with gzip.open(gz, "rb") as source, raw.open("wb") as target:
        shutil.copyfileobj(source, target)
    np.testing.assert_array_equal(read_idx(raw), read_idx(gz))


def _idx(tmp_path: Path, payload: bytes, name: str = "x-idx1-ubyte") -> Path:
    path = tmp_path / name
    path.write_bytes(payload)
    return path


def test_idx_bad_magic_truncated_and_trailing(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="not an IDX file"):
        read_idx(_idx(tmp_path, b"PK\x03\x04rest"))
    header = b"\x00\x00\x08\x01" + (5).to_bytes(4, "big")
    with pytest.raises(InvalidInputError, match="truncated"):
        read_idx(_idx(tmp_path, header + b"\x01\x02"))
    with pytest.raises(InvalidInputError, match="bytes after"):
        read_idx(_idx(tmp_path, header + bytes(6)))
    np.testing.assert_array_equal(
        read_idx(_idx(tmp_path, header + bytes([1, 2, 3, 4, 5]))), [1, 2, 3, 4, 5]
    )
    with pytest.raises(NotFoundError):
        read_idx(tmp_path / "absent")


def test_mnist_split_mismatch_is_refused(shared_data: Path, tmp_path: Path):
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared_data / "mnist" / name, tmp_path / name)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        (tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()
    )
    with pytest.raises(InvalidInputError, match="disagree in number"):
        load_mnist(tmp_path, "train")


# ------------------------------------------------------------------ UCI Adult
def test_adult_train_file(shared_data: Path):
    frame = load_table(shared_data / "adult" / "adult.data", "adult")
    assert frame.shape == (32_561, 15)
    assert list(frame.columns) == list(ADULT_COLUMNS)
    # '?' is missing (published counts for the training file).
    assert frame["workclass"].isna().sum() == 1836
    assert frame["occupation"].isna().sum() == 1843
    assert frame["native_country"].isna().sum() == 583
    assert set(frame["income"]) == {"<=50K", ">50K"}
    assert frame["age"].dtype.kind == "i"


def test_adult_test_file_comment_line_and_trailing_dots(shared_data: Path):
    frame = load_table(shared_data / "adult" / "adult.test")  # format guessed from the name
    assert frame.shape == (16_281, 15)
    assert set(frame["income"]) == {"<=50K", ">50K"}
    assert (frame["income"] == ">50K").sum() == 3846


def test_adult_values_are_all_in_the_codebook(shared_data: Path):
    for name in ("adult.data", "adult.test"):
        frame = load_table(shared_data / "adult" / name, "adult")
        for column, categories in ADULT_CATEGORIES.items():
            observed = set(frame[column].dropna())
            assert observed <= set(categories), (name, column, observed - set(categories))


def test_adult_with_a_header_is_pointed_to_csv(tmp_path: Path):
    path = tmp_path / "adult.data"
    path.write_text("age,workclass\n39,State-gov\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="--format csv"):
        load_table(path, "adult")


# ------------------------------------------------------------ CSV and Parquet
def test_csv_tsv_and_parquet_round_trip(tmp_path: Path):
    frame = pd.DataFrame({"id": [1, 2, 3], "age": [30, 41, 55], "city": ["a", "b", "c"]})
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.to_csv(tmp_path / "p.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    for name in ("p.csv", "p.tsv", "p.parquet"):
        loaded = load_table(tmp_path / name)
        pd.testing.assert_frame_equal(loaded, frame, check_dtype=False)
    semi = tmp_path / "semi.txt"
    frame.to_csv(semi, index=False, sep=";")
    pd.testing.assert_frame_equal(load_table(semi, "csv", delimiter=";"), frame, check_dtype=False)


def test_wrong_delimiter_names_the_right_one(tmp_path: Path):
    path = tmp_path / "semi.csv"
    path.write_text("id;age;city\n1;30;a\n2;41;b\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="--delimiter ';'"):
        open_reader(str(path)).columns()


def test_ragged_rows_empty_files_and_bad_encoding(tmp_path: Path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="cannot be parsed"):
        load_table(ragged)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        load_table(empty)
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="no columns"):
        open_reader(str(blank)).columns()
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,city\nJosé,Málaga\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="--encoding"):
        load_table(latin)
    assert load_table(latin, encoding="latin-1")["city"].tolist() == ["Málaga"]


def test_rows_longer_than_the_header_are_refused_not_cut(tmp_path: Path):
    # scikit-learn's wine_data.csv opens with "178,13,class_0,class_1,class_2" over rows of
    # 14 fields: read as is, the first 9 fields of each row became an index and were lost.
    counts = tmp_path / "counts.csv"
    counts.write_text(
        "3,2,yes,no\n1.5,2.5,3.5,4.5,5.5,0\n2.5,3.5,4.5,5.5,6.5,1\n", encoding="utf-8"
    )
    for read in (lambda: load_table(counts), lambda: list(open_reader(str(counts)).chunks())):
        with pytest.raises(InvalidInputError, match="more fields in its rows") as refused:
            read()
        assert refused.value.got == "a header of 4 names and rows of 6 fields"
    fine = tmp_path / "fine.csv"
    fine.write_text("a,b,\n1,2,\n", encoding="utf-8")  # a trailing delimiter: an empty column
    assert load_table(fine).shape == (1, 3)


def test_not_parquet_and_missing_file(tmp_path: Path):
    fake = tmp_path / "fake.parquet"
    fake.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not a readable Parquet"):
        load_table(fake)
    with pytest.raises(NotFoundError):
        load_table(tmp_path / "absent.csv")


def test_memory_limit_refuses_before_reading(tmp_path: Path):
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "1,2\n" * 1000, encoding="utf-8")
    with pytest.raises(DataTooLargeError) as caught:
        load_table(path, max_load_bytes=1000)
    assert caught.value.details["limit_bytes"] == 1000
    assert caught.value.details["estimate_bytes"] > 1000


# -------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize(
    ("name", "shape", "target"),
    [
        ("breast_cancer", (569, 31), "diagnosis"),
        ("diabetes", (442, 11), "progression"),
        ("digits", (1797, 65), "digit"),
        ("iris", (150, 5), "species"),
        ("wine", (178, 14), "cultivar"),
    ],
)
def test_bundled_sklearn_sets(name: str, shape: tuple[int, int], target: str):
    assert name in SKLEARN_DATASETS
    frame = load_table(f"sklearn:{name}")
    assert frame.shape == shape
    assert frame.columns[-1] == target


def test_diabetes_is_unscaled_so_age_means_years():
    frame = load_table("sklearn:diabetes")
    assert frame["age"].min() >= 18 and frame["age"].max() <= 100
    assert set(frame["sex"].unique()) == {1.0, 2.0}


def test_unknown_sklearn_set_and_unguessable_format(tmp_path: Path):
    with pytest.raises(NotFoundError, match="sklearn:digits"):
        load_table("sklearn:nope")
    with pytest.raises(InvalidInputError, match="--format"):
        guess_format(str(tmp_path / "data.xlsx"))
    assert guess_format(str(tmp_path)) == "mnist"
