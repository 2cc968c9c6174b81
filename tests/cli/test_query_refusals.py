"""`veil query`: every refusal comes before the charge, nothing after it depends on the data.

Each test runs the real CLI in-process on a real workspace and checks the
exit code documented in docs/errors.md *and* the ledger: a refused query
records no event.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.cli._app import main
from veil.data import Catalog
from veil.ledger import Ledger
from veil.workspace import Workspace

EXIT_BUG = 1
REFUSALS = {3, 4}  # invalid_input, schema_error


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def events(name: str) -> int:
    workspace = Workspace.locate()
    catalog = Catalog.open(workspace)
    try:
        return len(Ledger(catalog.store, workspace.settings).entries(name))
    finally:
        catalog.store.dispose()


def register(
    capsys: pytest.CaptureFixture[str], name: str, rows: list[str], bounds: str, budget: str = "50"
) -> str:
    path = Path(f"{name}.csv")
    path.write_text("x,age,sex\n" + "".join(f"{r}\n" for r in rows))
    code, _, err = run(
        capsys,
        "datasets",
        "add",
        str(path),
        "--name",
        name,
        "--bounds",
        f"x={bounds},age=17:90",
        "--categories",
        "sex=Male|Female",
    )
    assert code == 0, err
    assert run(capsys, "budget", "set", name, "--epsilon", budget)[0] == 0
    return name


@pytest.fixture
def people(capsys: pytest.CaptureFixture[str]) -> str:
    assert run(capsys, "init")[0] == 0
    rows = [f"{i / 3},{20 + i},{'Male' if i % 2 else 'Female'}" for i in range(40)]
    return register(capsys, "people", rows, "0:20")


def refused_without_charge(
    capsys: pytest.CaptureFixture[str], dataset: str, sql: str, *extra: str
) -> tuple[int, str]:
    before = events(dataset)
    code, _, err = run(capsys, "query", dataset, "--sql", sql, *(extra or ("--epsilon", "1")))
    assert events(dataset) == before, f"{sql!r} was charged, then exited {code}: {err}"
    assert "Traceback" not in err
    assert "unexpected error" not in err, err
    return code, " ".join(err.split())


# ---------------------------------------------------------------- charged, then crashed


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sql", "extra", "code", "message"),
    [
        ("SELECT COUNT(*) FROM t WHERE age = 'abc'", (), 3, "compares 'age'"),
        ("SELECT COUNT(*) FROM t WHERE sex > 5", (), 3, "compares 'sex'"),
        ("SELECT COUNT(*) FROM t WHERE age IN ('a', 'b')", (), 3, "compares 'age'"),
        ("SELECT sex, COUNT(*) FROM t GROUP BY sex, sex", (), 3, "grouping column"),
        ("SELECT COUNT(*) FROM t", ("--epsilon", "1e-300"), 3, "epsilon"),
        ("SELECT AVG(x) FROM t", ("--epsilon", "1e-300"), 3, "epsilon"),
        ("SELECT VARIANCE(x) FROM t", ("--epsilon", "1e-300"), 3, "epsilon"),
    ],
)
def test_knowable_mistakes_are_refused_before_the_charge(capsys, people, sql, extra, code, message):  # noqa: PLR0917 - one parameter per column of the table
    got, err = refused_without_charge(capsys, people, sql, *extra)
    assert got == code, err
    assert message in err


# ---------------------------------------------------------------- crashed before the charge


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT COUNT(*) FROM t JOIN u ON t.a = u.a", "JOIN"),
        ("SELECT COUNT(*) FROM t LEFT JOIN u ON t.a = u.a", "JOIN"),
        ("SELECT COUNT(*) FROM t CROSS JOIN u", "JOIN"),
        ("SELECT COUNT(*) FROM t, u", "JOIN"),
        ("SELECT COUNT(*) FROM t WHERE sex = 'abc", "does not parse"),
        ("SELECT COUNT(*) FROM t WHERE " + "(" * 400 + "age > 3" + ")" * 400, "nested"),
        ("SELECT COUNT(*) FROM t WHERE " + " OR ".join(["age = 3"] * 3000), "long"),
        ("SELECT COUNT(*) FROM t WHERE " + " OR ".join(["age=3"] * 900), "nested"),
        ("SELECT COUNT(*) FROM t WHERE sex IN ('Male', 3)", "mixes"),
    ],
)
def test_parser_failures_are_documented_refusals(capsys, people, sql, message):
    got, err = refused_without_charge(capsys, people, sql)
    assert got == 3, err
    assert message in err


# ---------------------------------------------------------------- wrong answers or labels


def test_between_compares_with_string_literals_not_columns(capsys, people):
    sql = "SELECT COUNT(*) AS n FROM t WHERE sex BETWEEN 'A' AND 'G'"  # only 'Female'
    code, out, err = run(capsys, "query", people, "--sql", sql, "--epsilon", "20", "--json")
    assert code == 0, err
    assert abs(json.loads(out)["rows"][0]["n"]["value"] - 20) <= 5  # 20 women; noise scale 1/20


def test_an_output_name_used_twice_is_refused(capsys, people):
    sql = "SELECT sex, COUNT(*) AS sex FROM t GROUP BY sex"
    got, err = refused_without_charge(capsys, people, sql)
    assert got == 3, err
    assert "same name" in err


def test_avg_reports_the_noise_scale_of_the_released_mean(capsys, people):
    code, out, err = run(
        capsys, "query", people, "--sql", "SELECT AVG(x) FROM t", "--epsilon", "1", "--json"
    )
    assert code == 0, err
    cell = json.loads(out)["rows"][0]["mean_x"]
    # The centred sum: half-width 10 per row, half of epsilon 1 -> Laplace scale 20.
    assert cell["noise_scale_centred_sum"] == pytest.approx(20.0)
    # The mean divides it by the noisy count (40 people, noise of scale 2).
    assert 20.0 / 60 < cell["noise_scale"] < 20.0 / 25


# ---------------------------------------------------------------- numeric edges


def outcome(capsys: pytest.CaptureFixture[str], dataset: str, sql: str) -> int:
    before = events(dataset)
    code, _, err = run(capsys, "query", dataset, "--sql", sql, "--epsilon", "1")
    assert "unexpected error" not in err, err
    if code != 0:
        assert events(dataset) == before, f"{sql} on {dataset}: charged, then exited {code}: {err}"
    return code


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bounds", "rows", "extra"),
    [
        # The pair: 13 rows answer AVG, 14 overflowed after the charge.
        ("0:1e308", ["1e308"] * 3 + ["5e307"] * 10, "1e308"),
        ("-1e307:1e307", ["1e307"] * 17, "1e307"),
        # Subnormal and NaN values inside ordinary bounds (registration refuses infinities;
        # tests/dp/test_query_edges.py passes them to PrivateFrame).
        ("0:1", ["5e-324"] * 5 + ["1e-310"] * 5, "nan"),
        ("0:1", ["0.5"] * 10, "5e-324"),
        # Bounds just inside what the arithmetic allows.
        ("-1e140:1e140", ["1e140"] * 10, "-1e140"),
        # Subnormal bounds.
        ("0:1e-320", ["1e-320"] * 10, "0"),
    ],
)
def test_neighbouring_datasets_at_numeric_edges_exit_alike(capsys, bounds, rows, extra):
    assert run(capsys, "init")[0] == 0
    d0 = register(capsys, "d0", [f"{v},30,Male" for v in rows], bounds, budget="100")
    d1 = register(capsys, "d1", [f"{v},30,Male" for v in [*rows, extra]], bounds, budget="100")
    for sql in (
        "SELECT COUNT(*) FROM t",
        "SELECT SUM(x) FROM t",
        "SELECT AVG(x) FROM t",
        "SELECT VARIANCE(x) FROM t",
        "SELECT MEDIAN(x) FROM t",
        "SELECT sex, COUNT(*), SUM(x), AVG(x), VARIANCE(x) FROM t GROUP BY sex",
    ):
        assert outcome(capsys, d0, sql) == outcome(capsys, d1, sql), (bounds, sql)


# ---------------------------------------------------------------- the property


WORDS = [
    "SELECT", "COUNT(*)", "SUM(x)", "AVG(age)", "VARIANCE(x)", "MEDIAN(age)", "QUANTILE(x, 0.3)",
    "FROM", "t", "u", "WHERE", "GROUP", "BY", "AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL",
    "JOIN", "ON", "AS", "sex", "age", "x", "nope", ",", "(", ")", "=", "<>", "<", ">=", "*", "-",
    "'Male'", "'abc", "'a'", "3", "1e308", "-1e999", "0.5", "99999999999999999999999", "TRUE",
    "HAVING", "ORDER", "LIMIT", "DISTINCT", ";", "UNION", "'", '"', "/*", "--", "\\", "sex,",
    "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY age)", "VAR_SAMP(x)", "CAST(age AS TEXT)",
]  # fmt: skip
COLUMN = st.sampled_from(["age", "sex", "x", "nope", "'age'", "1"])
LITERAL = st.sampled_from(
    ["3", "'Male'", "'a'", "1e308", "-2", "NULL", "TRUE", "99999999999999999999", "0.5", "age"]
)


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 5 if depth < 3 else 2))
    if kind == 0:
        return f"{draw(COLUMN)} {draw(st.sampled_from(['=', '<>', '<', '>=']))} {draw(LITERAL)}"
    if kind == 1:
        return f"{draw(COLUMN)} IN ({', '.join(draw(st.lists(LITERAL, max_size=3)))})"
    if kind == 2:
        return f"{draw(COLUMN)} BETWEEN {draw(LITERAL)} AND {draw(LITERAL)}"
    if kind == 3:
        return f"NOT ({draw(conditions(depth + 1))})"
    if kind == 4:
        return f"{draw(COLUMN)} IS {draw(st.sampled_from(['NULL', 'NOT NULL']))}"
    op = draw(st.sampled_from(["AND", "OR"]))
    return f"({draw(conditions(depth + 1))}) {op} {draw(conditions(depth + 1))}"


@st.composite
def queries(draw: st.DrawFn) -> str:
    style = draw(st.integers(0, 2))
    if style == 0:  # token soup
        return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14)))
    if style == 1:  # raw text with SQL punctuation
        return draw(st.text(alphabet="SELECT COUNT(*)FROM t WHERE age=' ,\"()sex", max_size=60))
    groups = draw(st.lists(st.sampled_from(["sex", "age", "x", "nope"]), max_size=2))
    aggs = draw(
        st.lists(
            st.sampled_from(["COUNT(*)", "SUM(x)", "AVG(x) AS m", "VARIANCE(age)", "MEDIAN(x)"]),
            min_size=1,
            max_size=3,
        )
    )
    select = ", ".join([*groups, *aggs])
    where = f" WHERE {draw(conditions())}" if draw(st.booleans()) else ""
    group = f" GROUP BY {', '.join(groups)}" if groups else ""
    return f"SELECT {select} FROM t{where}{group}"


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sql=queries())
def test_veil_query_never_exits_1(capsys, people, sql):
    before = events(people)
    code, _, err = run(capsys, "query", people, "--sql", sql, "--epsilon", "0.01")
    assert code != EXIT_BUG, f"{sql!r}: {err}"
    assert code in {0, *REFUSALS}, f"{sql!r} exited {code}: {err}"
    if code != 0:
        assert events(people) == before, f"{sql!r} was charged, then refused: {err}"
