"""The synthetic domain (veil.synth.Encoder) and workloads: declared schema only, refusals, TVD."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from tests.synth.conftest import TINY_SCHEMA, adult_schema

from veil.data import ColumnSpec, PrivacySchema
from veil.errors import InvalidInputError, SchemaError
from veil.synth import MAX_DOMAIN_CELLS, Encoder, workload_cliques, workload_tvd

# ---------------------------------------------------------------- bins from the schema


def test_edges_come_from_declared_bounds_not_from_the_rows():
    schema = PrivacySchema(columns=(ColumnSpec("y", "numeric", bounds=(0.0, 10.0)),))
    narrow = pd.DataFrame({"y": [4.9, 5.0, 5.1, 5.2]})  # the rows span 0.3
    wide = pd.DataFrame({"y": [0.0, 5.1, 9.7, 10.0]})
    first, second = Encoder.from_schema(schema, bins=5), Encoder.from_schema(schema, bins=5)
    assert first.to_dict() == second.to_dict()
    assert first.coding("y").edges == pytest.approx((0.0, 2.0, 4.0, 6.0, 8.0, 10.0))
    # The same value falls in the same cell whatever else the frame holds.
    assert first.encode(narrow)["y"].tolist() == [2, 2, 2, 2]
    assert first.encode(wide)["y"].tolist() == [
        0,
        2,
        4,
        4,
    ]  # 10.0, the upper bound, is in the last bin
    # bins + 1 missing cell, whatever the rows.
    assert first.sizes == {"y": 6}


def test_whole_number_bounds_within_bins_get_unit_bins():
    schema = PrivacySchema(
        columns=(
            ColumnSpec("x", "numeric", bounds=(0.0, 4.0)),
            ColumnSpec("age", "numeric", bounds=(17.0, 91.0)),
        )
    )
    enc = Encoder.from_schema(schema, bins=16, integer={"x": True, "age": True})
    # 5 unit cells + missing; age's 75 whole numbers in 15 bins of 5 (+ missing): an integer
    # column's bins hold whole numbers only, so a decoded value encodes back to its cell.
    assert enc.sizes == {"x": 6, "age": 16}
    assert enc.encode(pd.DataFrame({"x": range(5), "age": [17] * 5}))["x"].tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
    # A non-integer column over the same bounds is cut into `bins` equal widths.
    real = Encoder.from_schema(schema, bins=16, columns=["x"])
    assert real.sizes == {"x": 17}


def test_values_outside_the_bounds_are_clamped_into_the_end_bins():
    enc = Encoder.from_schema(TINY_SCHEMA, bins=5, integer={"x": True})
    frame = pd.DataFrame({"x": [-3, 99, 2], "c": ["a", "b", "c"], "y": [-1e9, 1e9, 5.0]})
    codes = enc.encode(frame)
    assert codes["x"].tolist() == [0, 4, 2]  # unit bins 0..4
    assert codes["y"].tolist() == [0, 4, 2]  # five bins of width 2


def test_missing_values_and_undeclared_categories_go_to_the_last_cell():
    enc = Encoder.from_schema(TINY_SCHEMA, bins=4, integer={"x": True})
    frame = pd.DataFrame(
        {
            "x": pd.array([None, 1], dtype="Int64"),
            "c": ["zzz", None],
            "y": [float("nan"), 1.0],
        }
    )
    codes = enc.encode(frame)
    # 0..4 in 4 bins of whole numbers: {0, 1}, {2, 3}, {4}
    assert codes["x"].tolist() == [enc.coding("x").missing, 0]
    assert codes["c"].tolist() == [3, 3]  # a, b, c, then missing
    assert codes["y"].tolist() == [4, 0]
    assert all(enc.coding(c).missing == enc.sizes[c] - 1 for c in enc.columns)


@pytest.mark.parametrize(
    ("bounds", "integer", "bins"),
    [((0.0, 10.0), False, 7), ((17.0, 91.0), True, 16), ((0.0, 4.0), True, 16)],
    ids=["real", "integer-wide-bins", "integer-unit-bins"],
)
def test_decoding_puts_every_value_back_inside_its_bin(bounds, integer, bins, seed):
    schema = PrivacySchema(columns=(ColumnSpec("v", "numeric", bounds=bounds),))
    enc = Encoder.from_schema(schema, bins=bins, integer={"v": integer})
    size = enc.sizes["v"]
    codes = pd.DataFrame({"v": np.repeat(np.arange(size), 50)})
    values = enc.decode(codes, seed=seed)
    again = enc.encode(values)["v"]
    assert (again.to_numpy() == codes["v"].to_numpy()).all()
    observed = values["v"].dropna().to_numpy(dtype=np.float64)
    assert observed.min() >= bounds[0] and observed.max() <= bounds[1]
    assert values["v"].isna().sum() == 50  # exactly the missing cell's rows
    if integer:
        assert (observed == np.round(observed)).all()


def test_decoding_an_integer_column_with_fractional_bounds_stays_in_its_bin(seed):
    schema = PrivacySchema(columns=(ColumnSpec("v", "numeric", bounds=(0.0, 10.5)),))
    enc = Encoder.from_schema(schema, bins=16, integer={"v": True})
    codes = pd.DataFrame({"v": np.arange(enc.sizes["v"])})
    again = enc.encode(enc.decode(codes, seed=seed))["v"]
    assert again.tolist() == codes["v"].tolist()


def test_categories_decode_to_their_declared_strings(seed):
    enc = Encoder.from_schema(TINY_SCHEMA, bins=5, integer={"x": True})
    codes = pd.DataFrame({"x": [0, 1, 5, 2], "c": [0, 1, 2, 3], "y": [0, 1, 2, 5]})
    values = enc.decode(codes, seed=seed)
    assert values["c"].dtype == "string"
    assert values["c"].tolist()[:3] == ["a", "b", "c"]
    assert values["c"].isna().tolist() == [False, False, False, True]
    assert enc.encode(values).equals(codes)


# ---------------------------------------------------------------- refusals


def test_a_numeric_column_without_bounds_is_refused_by_name_with_the_fix():
    schema = PrivacySchema(
        columns=(
            ColumnSpec("income_k", "numeric"),
            ColumnSpec("c", "categorical", categories=("a",)),
        )
    )
    with pytest.raises(SchemaError) as caught:
        Encoder.from_schema(schema)
    assert "income_k" in str(caught.value.got) and "bounds" in str(caught.value.got)
    assert "--bounds" in str(caught.value.fix)


def test_a_categorical_column_without_categories_is_refused_by_name_with_the_fix():
    schema = PrivacySchema(
        columns=(ColumnSpec("x", "numeric", bounds=(0.0, 1.0)), ColumnSpec("job", "categorical"))
    )
    with pytest.raises(SchemaError) as caught:
        Encoder.from_schema(schema)
    assert "job" in str(caught.value.got) and "categories" in str(caught.value.got)
    assert "--categories" in str(caught.value.fix)
    # Leaving the column out is the other fix the message names, and it works.
    assert Encoder.from_schema(schema, columns=["x"]).columns == ("x",)


def test_an_array_column_is_refused():
    schema = PrivacySchema(columns=(ColumnSpec("img", "array", shape=(2, 2), bounds=(0.0, 1.0)),))
    with pytest.raises(SchemaError, match="img") as caught:
        Encoder.from_schema(schema)
    assert caught.value.fix


@pytest.mark.parametrize("bins", [1, 0, 1001, True, 2.5])
def test_bins_out_of_range_are_refused(bins):
    with pytest.raises(InvalidInputError, match="bins"):
        Encoder.from_schema(TINY_SCHEMA, bins=bins)


def test_the_privacy_unit_is_not_synthesised():
    schema = PrivacySchema(
        columns=(ColumnSpec("pid", "identifier"), *TINY_SCHEMA.columns), privacy_unit="pid"
    )
    assert Encoder.from_schema(schema).columns == ("x", "c", "y")


# ---------------------------------------------------------------- workloads


def test_a_3_way_workload_keeps_the_marginals_within_max_cells():
    sizes = {"a": 2, "b": 3, "c": 10, "d": 50}
    assert workload_cliques(sizes, "3-way", max_cells=10**6) == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "c", "d"),
        ("b", "c", "d"),
    ]
    # 60, 300, 1,000, 1,500 cells: a limit of 1,000 keeps the first three.
    assert workload_cliques(sizes, "3-way", max_cells=1000) == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "c", "d"),
    ]
    with pytest.raises(InvalidInputError, match="max-cells"):
        workload_cliques(sizes, "3-way", max_cells=59)
    with pytest.raises(InvalidInputError):
        workload_cliques(sizes, "3-way", max_cells=0)


def test_the_adult_3_way_workload_has_only_small_marginals():
    enc = Encoder.from_schema(adult_schema(), bins=16)
    cliques = workload_cliques(enc.sizes, "3-way", max_cells=200)
    assert cliques and all(len(c) == 3 for c in cliques)
    assert all(enc.domain_size(c) <= 200 for c in cliques)
    dropped = [c for c in workload_cliques(enc.sizes, "3-way", max_cells=10**6) if c not in cliques]
    assert dropped and all(enc.domain_size(c) > 200 for c in dropped)


def test_workload_files_in_lines_and_json(tmp_path):
    sizes = {"age": 10, "sex": 3, "income": 3}
    lines = tmp_path / "w.txt"
    lines.write_text("# pairs\nage, sex\n\nsex,income\nage,sex\n", encoding="utf-8")
    assert workload_cliques(sizes, lines) == [("age", "sex"), ("sex", "income")]
    listed = tmp_path / "w.json"
    listed.write_text(json.dumps([["age"], ["age", "sex", "income"]]), encoding="utf-8")
    assert workload_cliques(sizes, str(listed)) == [("age",), ("age", "sex", "income")]


@pytest.mark.parametrize(
    "text", ["age,zip\n", "age,age\n", '[["sex", "nope"]]', "# nothing\n"], ids=str
)
def test_a_workload_file_naming_unknown_columns_or_nothing_is_refused(tmp_path, text):
    path = tmp_path / "w.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"w\.txt"):
        workload_cliques({"age": 10, "sex": 3}, path)


def test_a_missing_workload_file_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="neither a named workload nor a readable file"):
        workload_cliques({"a": 2}, tmp_path / "absent.txt")


def test_a_clique_over_the_domain_limit_is_refused(tmp_path):
    side = math.isqrt(MAX_DOMAIN_CELLS) + 1  # two columns whose product just passes the limit
    sizes = {"a": side, "b": side, "c": 2}
    path = tmp_path / "big.txt"
    path.write_text("a,c\na,b\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="too large") as caught:
        workload_cliques(sizes, path)
    assert f"{side * side:,}" in str(caught.value.got)
    # A named workload leaves such a marginal out rather than measuring it.
    assert workload_cliques(sizes, "2-way", max_cells=10**9) == [("a", "c"), ("b", "c")]


def test_workload_tvd_is_zero_on_identical_frames_and_exact_on_a_hand_built_case():
    sizes = {"u": 2, "v": 2}
    real = pd.DataFrame({"u": [0, 0, 1, 1], "v": [0, 1, 0, 1]})
    assert workload_tvd(real, real.copy(), [("u",), ("u", "v")], sizes) == 0.0
    # u: real (1/2, 1/2), synthetic (1/4, 3/4): TVD 1/4.
    synth = pd.DataFrame({"u": [0, 1, 1, 1], "v": [0, 0, 0, 0]})
    assert workload_tvd(real, synth, [("u",)], sizes) == pytest.approx(0.25)
    # (u, v): real 1/4 each; synthetic (1/4, 0, 3/4, 0): 0.5 * (0 + 1/4 + 1/2 + 1/4) = 1/2.
    assert workload_tvd(real, synth, [("u", "v")], sizes) == pytest.approx(0.5)
    assert workload_tvd(real, synth, [("u",), ("u", "v")], sizes) == pytest.approx(0.375)
    with pytest.raises(InvalidInputError):
        workload_tvd(real, synth, [], sizes)
    with pytest.raises(InvalidInputError):
        workload_tvd(real, synth.iloc[:0], [("u",)], sizes)
