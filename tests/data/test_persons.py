"""person_tokens is person_token for every value, byte for byte (its fast paths change nothing).

The reference is written out here from the definition (HMAC-SHA256 of
"<dataset id>\\x1f<canonical identifier>", 32 hex characters) with the
standard library's hmac, so a shortcut in the fast path that canonicalises or
hashes differently fails here.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest

from veil.data import canonical_person, person_token, person_tokens
from veil.errors import InvalidInputError

VALUES = [
    7,
    -7,
    0,
    2**70,
    7.0,
    -3.0,
    7.5,
    np.int64(7),
    np.int32(-4),
    np.float64(12.0),
    np.float32(2.5),
    True,
    False,
    np.True_,
    "7",
    " 7 ",
    "7.0",
    "+7",
    "-7.0",
    ".5",
    "0.0",
    "1_000",
    "1e3",
    "١٢",  # Arabic-Indic digits: float() reads them as 12
    "inf",
    "-inf",
    "nan",
    "+nan",
    "#row7",
    "alice",
    " bob\t",
    "-",
    "+",
    ".",
    "e5",
    "x1",
    "Ünïcode",
    "7" * 30,
]


def reference(key: bytes, dataset_id: int, value: object) -> str:
    message = f"{dataset_id}\x1f{canonical_person(value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


@pytest.mark.parametrize("key", [b"k", b"\x01" * 32, b"\x02" * 64, bytes(range(100))])
def test_tokens_match_the_definition_for_every_key_length(key: bytes) -> None:
    # Short, block-sized (64) and over-long keys: the precomputed key schedule must agree.
    got = person_tokens(key, 3, VALUES)
    assert got == [reference(key, 3, v) for v in VALUES]
    assert got == [person_token(key, 3, v) for v in VALUES]


def test_series_repeats_and_dataset_binding() -> None:
    key = b"\x05" * 32
    values = ["a", "b", "a", 1, True, 1, 1.0, "1"]
    series = pd.Series(values, dtype=object)
    got = person_tokens(key, 9, series)
    assert got == [reference(key, 9, v) for v in values]
    assert got[0] == got[2] and got[3] == got[5] == got[6] == got[7]
    assert got[4] != got[3]  # True is not the person 1
    assert person_tokens(key, 10, values) != got  # the dataset id is bound in
    numbers = pd.Series(np.arange(50, dtype=np.int64))
    assert person_tokens(key, 9, numbers) == [reference(key, 9, int(v)) for v in range(50)]


@pytest.mark.parametrize("bad", [None, float("nan"), "", "   "])
def test_missing_identifiers_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        person_tokens(b"k" * 32, 1, ["ok", bad])


def test_text_identifiers_are_not_read_as_numbers():
    """'007', '7' and '7.0' in a column of strings are three people (a real clinic's numbering)."""
    from veil.data import canonical_person

    assert [canonical_person(v) for v in ("007", "7", "7.0", " 7 ")] == ["007", "7", "7.0", "7"]
    assert canonical_person(7) == canonical_person(7.0) == canonical_person("7") == "7"
