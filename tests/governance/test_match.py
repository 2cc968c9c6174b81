"""The rows of one person: the vectorised candidate test never misses a row hashing would find."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.data import person_token, person_tokens
from veil.governance._match import rows_of_person

KEY = b"k" * 32
DATASET = 7


def _by_hashing(values: pd.Series, token: str) -> np.ndarray:
    """The reference: the token of every present value."""
    out = np.zeros(len(values), dtype=bool)
    present = values.notna().to_numpy()
    tokens = person_tokens(KEY, DATASET, values[present].tolist())
    out[np.flatnonzero(present)] = [t == token for t in tokens]
    return out


def _check(values: pd.Series, person: object) -> None:
    token = person_token(KEY, DATASET, person)
    fast = rows_of_person(values, person, key=KEY, dataset_id=DATASET, token=token)
    assert fast.tolist() == _by_hashing(values, token).tolist()


TEXT = st.one_of(
    st.sampled_from(["7", " 7", "7.0", "7 ", "1e3", "1000", "P-7", "p-7", "nan", "inf", "-0", "0"]),
    st.text(min_size=1, max_size=6).filter(lambda t: t.strip()),  # a blank id is refused at load
)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(TEXT, st.none()), min_size=1, max_size=30), pick=st.integers(0, 29)
)
def test_text_columns(values, pick):
    series = pd.Series(values, dtype=object)
    person = values[pick % len(values)]
    if person is None or not str(person).strip():
        person = "7"
    _check(series, person)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.integers(-(2**62), 2**62) | st.sampled_from([0, 7, 1000]), min_size=1, max_size=30
    ),
    person=st.sampled_from([7, "7", " 7.0 ", 7.0, "1e3", 1000, "x", "7.5", 0, "-0"]),
)
def test_integer_columns(values, person):
    _check(pd.Series(values, dtype="int64"), person)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([7.0, 7.5, 1e20]),
        min_size=1,
        max_size=30,
    ),
    person=st.sampled_from([7, "7", 7.5, "7.5", "1e20", 1e20, "inf", "nan-ish"]),
)
def test_float_columns(values, person):
    _check(pd.Series(values, dtype="float64"), person)


@pytest.mark.parametrize(
    ("values", "person", "expected"),
    [
        (pd.Series(["P-1", " P-1 ", "P-2", None]), "P-1", [True, True, False, False]),
        (pd.Series([7, 8, 7]), "7", [True, False, True]),
        # Text is not read as a number: "007"-style identifiers are distinct people.
        (pd.Series(["7.0", "7", "07"]), 7, [False, True, False]),
        (pd.Series(["007", "7", "7.0"]), "007", [True, False, False]),
        (pd.Series([7, "7", 7.0], dtype=object), 7, [True, True, True]),
        (
            pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"])),
            "2024-01-01 00:00:00",
            [True, False],
        ),
        (pd.Series(["a", "b"], dtype="category"), "b", [False, True]),
        (pd.Series([True, False]), True, [True, False]),
    ],
)
def test_examples(values, person, expected):
    token = person_token(KEY, DATASET, person)
    got = rows_of_person(values, person, key=KEY, dataset_id=DATASET, token=token)
    assert got.tolist() == expected
    _check(values, person)
