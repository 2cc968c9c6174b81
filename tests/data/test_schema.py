"""The privacy schema: validation, parsing of declarations, round trips, and the leak warning."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.data import ColumnSpec, PrivacySchema, parse_bounds, parse_categories, suggest_bounds
from veil.errors import InvalidInputError, PrivacyLeakWarning, SchemaError


def _schema(**overrides) -> PrivacySchema:
    values = {
        "columns": (
            ColumnSpec("pid", "identifier"),
            ColumnSpec("age", "numeric", bounds=(0, 120), declared_by="user"),
            ColumnSpec("sex", "categorical", categories=("F", "M"), declared_by="user"),
            ColumnSpec("diagnosis", "categorical"),
        ),
        "privacy_unit": "pid",
        "quasi_identifiers": ("age", "sex"),
        "sensitive": ("diagnosis",),
    }
    values.update(overrides)
    return PrivacySchema(**values)


def test_a_consistent_schema():
    schema = _schema()
    assert schema.bounds == {"age": (0, 120)}
    assert schema.unbounded_numeric() == ()
    assert schema.to_dict()["one_row_per_person"] is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quasi_identifiers": ("agee",)}, "did you mean 'age'"),
        ({"sensitive": ("age",)}, "both quasi-identifying and sensitive"),
        ({"quasi_identifiers": ("pid", "age")}, "privacy-unit column 'pid' is also listed"),
        ({"privacy_unit": "patient"}, "unknown privacy unit"),
        ({"privacy_unit": "age"}, "kind 'identifier'"),
        ({"quasi_identifiers": ("age", "age")}, "listed twice"),
    ],
)
def test_inconsistent_schemas_are_refused(overrides, message):
    with pytest.raises(SchemaError, match=message):
        _schema(**overrides)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "numeric", "bounds": (5, 1)}, "reversed"),
        ({"kind": "numeric", "bounds": (1, 1)}, "reversed or empty"),
        ({"kind": "numeric", "bounds": (0, math.inf)}, "not finite"),
        ({"kind": "numeric", "bounds": (math.nan, 1)}, "not finite"),
        ({"kind": "categorical", "bounds": (0, 1)}, "bounds were declared for categorical"),
        ({"kind": "numeric", "categories": ("a",)}, "categories were declared for numeric"),
        ({"kind": "categorical", "categories": ()}, "empty set"),
        ({"kind": "categorical", "categories": ("a", "a")}, "twice"),
        ({"kind": "array"}, "shape"),
        ({"kind": "text"}, "unknown kind"),
    ],
)
def test_inconsistent_columns_are_refused(kwargs, message):
    with pytest.raises(SchemaError, match=message):
        ColumnSpec("c", **kwargs)


def test_parse_bounds_and_categories():
    assert parse_bounds(["age=17:90", "delta=-5:-1e-3,income=0:1e6"]) == {
        "age": (17.0, 90.0),
        "delta": (-5.0, -0.001),
        "income": (0.0, 1e6),
    }
    assert parse_categories(["sex=Female|Male", "band= low | high "]) == {
        "sex": ("Female", "Male"),
        "band": ("low", "high"),
    }


@pytest.mark.parametrize("bad", ["age", "age=17", "age=a:b", "=1:2", "age:1:2"])
def test_malformed_bounds_are_refused(bad):
    with pytest.raises(InvalidInputError, match="column=lo:hi"):
        parse_bounds([bad])


def test_reversed_and_repeated_bounds_are_refused():
    with pytest.raises(SchemaError, match="--bounds age=17:90"):
        parse_bounds(["age=90:17"])
    with pytest.raises(InvalidInputError, match="twice"):
        parse_bounds(["age=0:1", "age=0:2"])
    with pytest.raises(InvalidInputError, match="column=a"):
        parse_categories(["sex"])


names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@st.composite
def schemas(draw) -> PrivacySchema:
    column_names = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    columns = []
    for name in column_names:
        kind = draw(st.sampled_from(["numeric", "categorical"]))
        if kind == "numeric" and draw(st.booleans()):
            lo, hi = sorted(draw(st.tuples(finite, finite).filter(lambda t: t[0] != t[1])))
            columns.append(ColumnSpec(name, "numeric", bounds=(lo, hi), declared_by="user"))
        elif kind == "categorical" and draw(st.booleans()):
            cats = draw(
                st.lists(
                    st.text(alphabet="abzé<=>|- 09.", min_size=1, max_size=5),
                    min_size=1,
                    max_size=5,
                    unique=True,
                )
            )
            columns.append(
                ColumnSpec(name, "categorical", categories=tuple(cats), declared_by="user")
            )
        else:
            columns.append(ColumnSpec(name, kind))
    shuffled = draw(st.permutations(column_names))
    split = draw(st.integers(0, len(shuffled)))
    return PrivacySchema(
        columns=tuple(columns),
        quasi_identifiers=tuple(shuffled[:split][:3]),
        sensitive=tuple(shuffled[split:][:2]),
    )


@given(schemas())
def test_schema_round_trips_through_its_json_form(schema: PrivacySchema):
    assert PrivacySchema.from_dict(schema.to_dict()) == schema


def test_a_schema_from_a_newer_veil_is_refused():
    data = _schema().to_dict() | {"version": 99}
    with pytest.raises(SchemaError, match="newer"):
        PrivacySchema.from_dict(data)


def test_suggest_bounds_reads_the_data_and_warns_loudly():
    frame = pd.DataFrame(
        {"age": [23, 71, 45], "city": ["a", "b", "c"], "flag": [True, False, True]}
    )
    with pytest.warns(PrivacyLeakWarning, match="void any differential-privacy guarantee"):
        suggested = suggest_bounds(frame)
    assert suggested == {"age": (23.0, 71.0)}
    with pytest.raises(SchemaError, match="unknown requested column 'agee'"):
        suggest_bounds(frame, ["agee"])
