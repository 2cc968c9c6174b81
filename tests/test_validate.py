"""The one set of argument checks: values accepted, and the messages of those refused."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from veil._validate import finite_number, positive_number, probability, whole_number
from veil.errors import InvalidInputError, SchemaError


@pytest.mark.parametrize("value", [1, 7, 10**12])
def test_a_whole_number_is_returned_as_an_int(value: int) -> None:
    assert whole_number(value, "epochs") == value
    assert type(whole_number(value, "epochs")) is int


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, "3", None, math.nan, np.int64(2)])
def test_anything_else_is_refused_with_the_usual_message(value: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        whole_number(value, "epochs")
    assert str(caught.value) == f"epochs must be a whole number >= 1. Expected >= 1. Got {value!r}."


def test_numpy_integers_on_request() -> None:
    assert whole_number(np.int64(4), "clients", numpy=True) == 4
    with pytest.raises(InvalidInputError):
        whole_number(np.bool_(1), "clients", numpy=True)


def test_a_range_and_the_callers_words() -> None:
    assert whole_number(0, "seed", minimum=0) == 0
    with pytest.raises(InvalidInputError) as caught:
        whole_number(9, "k", minimum=2, maximum=8)
    assert str(caught.value) == "k must be a whole number in [2, 8]. Expected in [2, 8]. Got 9."
    with pytest.raises(SchemaError) as schema:
        whole_number(
            0,
            "max_rows",
            error=SchemaError,
            fix="pass --max-rows with the most a person contributes",
        )
    assert schema.value.fix == "pass --max-rows with the most a person contributes"
    with pytest.raises(InvalidInputError) as bare:
        whole_number(0, "bins", expected=None)
    assert str(bare.value) == "bins must be a whole number >= 1. Got 0."
    with pytest.raises(InvalidInputError, match=re.escape("too few trials. Expected >= 10.")):
        whole_number(3, "trials", minimum=10, message="too few trials")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1", "scale must be a number"),
        (True, "scale must be a number"),
        (math.inf, "scale must be finite"),
        (math.nan, "scale must be finite"),
        (0.0, "scale must be positive"),
        (-2, "scale must be positive"),
    ],
)
def test_positive_number(value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{re.escape(message)}") as caught:
        positive_number(value, "scale")
    assert caught.value.fix == "pass a positive finite scale"
    assert positive_number(2, "scale") == 2.0


def test_finite_number() -> None:
    assert finite_number(-3, "shift") == -3.0
    with pytest.raises(InvalidInputError) as caught:
        finite_number(math.inf, "shift", fix="pass a finite shift")
    assert str(caught.value) == (
        "shift must be finite. Expected a finite number. Got inf. Fix: pass a finite shift."
    )


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, math.nan, "0.5"])
def test_probability_strictly_inside(value: object) -> None:
    with pytest.raises(InvalidInputError):
        probability(value, "alpha")
    assert probability(0.05, "alpha") == 0.05


def test_probability_message() -> None:
    with pytest.raises(InvalidInputError) as caught:
        probability(1.0, "alpha")
    assert str(caught.value) == (
        "alpha out of range. Expected 0.0 < alpha < 1.0. Got 1.0. "
        "Fix: pass a alpha strictly between 0.0 and 1.0."
    )
