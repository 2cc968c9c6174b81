"""Tabular anonymisation: hierarchies, risk, k / l / t checked by pycanon, optimality, operators."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from pycanon import anonymity
from scipy import stats

from veil.anonymize import (
    ColumnOperation,
    HierarchySpec,
    add_noise,
    anonymize,
    build_domains,
    class_ids,
    l_diversity,
    linkage_attack,
    load_hierarchies,
    mask,
    microaggregate,
    population_uniqueness,
    pseudonymize,
    rank_swap,
    reidentification_risk,
    scan_table,
    shift_dates,
    t_closeness,
)
from veil.anonymize.tabular import BUNDLED_HIERARCHIES, Constraints, Recoding, full_domain
from veil.anonymize.tabular._anonymize import unchanged_columns
from veil.anonymize.tabular._flash import _Table
from veil.data import load_table
from veil.errors import InvalidInputError, NotFoundError, SchemaError
from veil.vault import KeyStore
from veil.workspace import Workspace

ADULT_QI = [
    "age",
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "race",
    "sex",
    "native_country",
]
HIERARCHIES = BUNDLED_HIERARCHIES / "adult.yaml"


@pytest.fixture(scope="module")
def adult(shared_data) -> pd.DataFrame:
    frame = load_table(shared_data / "adult" / "adult.data")
    return frame.dropna().reset_index(drop=True)


@pytest.fixture(scope="module")
def specs() -> dict[str, HierarchySpec]:
    return load_hierarchies(HIERARCHIES)


# ------------------------------------------------------------------ hierarchies


def test_tree_levels_and_ncp(adult, specs):
    (country,) = build_domains(adult, ["native_country"], specs)
    codes = country.codes[:1]
    assert adult["native_country"].iloc[0] == "United-States"
    assert country.labels(*country.level_bounds(1, codes)) == ["North-America"]
    assert country.labels(*country.level_bounds(2, codes)) == ["*"]
    lo, hi = country.level_bounds(1, codes)
    # Ghinita's NCP: leaves under the node / leaves of the domain (41 countries present)
    assert country.ncp(lo, hi)[0] == pytest.approx(4 / 41)
    assert country.ncp(codes, codes)[0] == 0.0


def test_interval_and_date_and_prefix_levels():
    frame = pd.DataFrame(
        {
            "age": [17, 23, 38, 90],
            "visit": pd.to_datetime(["2024-01-15", "2024-02-29", "2023-12-31", "2019-06-01"]),
            "zip": ["02139", "02141", "10001", "10002"],
        }
    )
    specs = {
        "age": HierarchySpec(kind="interval", widths=(5.0, 10.0), origin=0.0),
        "zip": HierarchySpec(kind="prefix"),
    }
    age, visit, zipcode = build_domains(frame, ["age", "visit", "zip"], specs)
    assert age.labels(*age.level_bounds(1, age.codes)) == [
        "[15, 19]",
        "[20, 24]",
        "[35, 39]",
        "[90, 94]",
    ]
    assert age.labels(*age.level_bounds(3, age.codes)) == ["*"] * 4
    month = visit.labels(*visit.level_bounds(1, visit.codes))
    assert month[1] == "[2024-02-01, 2024-02-29]"
    year = visit.labels(*visit.level_bounds(2, visit.codes))
    assert year[0] == "[2024-01-01, 2024-12-31]"
    # a node is named by its deepest name: 1000* and 100** cover the same ZIP codes here
    assert zipcode.labels(*zipcode.level_bounds(2, zipcode.codes)) == [
        "021**",
        "021**",
        "1000*",
        "1000*",
    ]
    assert zipcode.height == 5


def test_hierarchy_errors(tmp_path, adult):
    with pytest.raises(InvalidInputError, match="does not cover every value"):
        build_domains(adult, ["sex"], {"sex": HierarchySpec(kind="tree", tree={"Any": ["Male"]})})
    mixed = pd.DataFrame({"age": ["31", "42", "unknown", "55"]})
    with pytest.raises(InvalidInputError, match="mixes numbers and text"):
        build_domains(mixed, ["age"])
    with pytest.raises(InvalidInputError, match="missing values"):
        build_domains(pd.DataFrame({"x": [1.0, None]}), ["x"])
    bad = tmp_path / "h.yaml"
    bad.write_text("age: {type: interval, widths: [5, 7]}\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="multiple of the one before"):
        load_hierarchies(bad)
    with pytest.raises(NotFoundError):
        load_hierarchies(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ risk and privacy models


def test_risk_and_models_by_hand():
    frame = pd.DataFrame(
        {
            "zip": ["a", "a", "a", "b", "b", "c"],
            "disease": ["flu", "flu", "hiv", "flu", "cold", "flu"],
            "salary": [1, 2, 3, 1, 3, 2],
        }
    )
    ids = class_ids(frame, ["zip"])
    sizes = np.bincount(ids)[ids]
    risk = reidentification_risk(sizes, threshold=0.4)
    assert risk.prosecutor_max == 1.0
    assert risk.prosecutor_average == pytest.approx((3 * (1 / 3) + 2 * 0.5 + 1) / 6)
    assert risk.prosecutor_at_risk == pytest.approx(3 / 6)
    # with a population twice as large in every class the journalist risk halves
    journalist = reidentification_risk(sizes, population_sizes=2 * sizes)
    assert journalist.journalist_max == 0.5
    diversity = l_diversity(ids, frame["disease"], c=2.0)
    assert diversity.distinct == 1  # class "c" has one value
    assert diversity.entropy == pytest.approx(1.0)
    two = frame[frame.zip != "c"].reset_index(drop=True)
    ids2 = class_ids(two, ["zip"])
    assert l_diversity(ids2, two["disease"]).distinct == 2
    # entropy of {flu: 2/3, hiv: 1/3} is the smaller one
    expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert l_diversity(ids2, two["disease"]).entropy == pytest.approx(expected)
    # t-closeness, equal distance: class b is {flu, cold} vs overall {flu 3/5, hiv 1/5, cold 1/5}
    assert t_closeness(ids2, two["disease"]) == pytest.approx(
        max(0.5 * (abs(2 / 3 - 3 / 5) + abs(1 / 3 - 1 / 5) + 1 / 5), 0.5 * (0.1 + 0.2 + 0.3))
    )
    # ordered distance on salary 1..3: class a = {1,2,3}, class b = {1,3}, overall {1:2,2:1,3:2}/5
    p_b = np.array([0.5, 0.0, 0.5]) - np.array([0.4, 0.2, 0.4])
    assert t_closeness(ids2, two["salary"]) >= np.abs(np.cumsum(p_b)).sum() / 2 - 1e-12


def test_pitman_estimate_near_the_true_population_uniqueness(adult):
    qi = ADULT_QI[:-1]
    ids = class_ids(adult, qi)
    truth = float(np.mean(np.bincount(ids)[ids] == 1))
    sample = adult.sample(frac=0.1, random_state=0)
    estimate = population_uniqueness(class_ids(sample, qi), len(adult))
    assert estimate.pitman is not None and abs(estimate.pitman - truth) < 0.1 * truth
    with pytest.raises(InvalidInputError, match="smaller than the sample"):
        population_uniqueness(ids, 10)


@pytest.mark.slow
def test_scan_reports_adult_uniqueness_and_a_linkage_attack(adult):
    rng = np.random.default_rng(3)
    chosen = rng.choice(len(adult), 500, replace=False).astype(np.int64)
    external = adult.iloc[chosen][ADULT_QI].reset_index(drop=True)
    report = scan_table(
        adult, ADULT_QI, sensitive=["income"], external=external, external_truth=chosen
    )
    # the figure: 46.5% of Adult's complete records are unique on these 8 QIs
    assert report.classes.unique_share == pytest.approx(0.465, abs=0.001)
    assert report.risk.prosecutor_max == 1.0
    link = report.linkage
    assert (
        link is not None and link.correct == link.linked
    )  # a unique exact link is always the right person
    assert 0.35 < link.rate < 0.6  # about the unique share


# ------------------------------------------------------------------ algorithms, checked by pycanon


@pytest.mark.slow  # anonymises Adult three ways, pycanon checks each
@pytest.mark.parametrize("algorithm", ["mondrian", "mondrian-relaxed", "full-domain"])
def test_k_l_t_hold_and_pycanon_agrees(adult, specs, algorithm):
    frame = adult.iloc[:800].reset_index(drop=True)
    qi = ADULT_QI[:5]
    result = anonymize(
        frame,
        qi,
        k=4,
        sensitive=["hours_per_week"],
        l=3,
        t=0.35,
        algorithm=algorithm,
        hierarchies=specs,
        max_suppression=0.1,
    )
    assert all(result.satisfied.values()), result.satisfied
    kept = result.table[~result.recoding.suppressed].reset_index(drop=True)
    assert anonymity.k_anonymity(kept, qi) >= 4
    assert anonymity.k_anonymity(kept, qi) == result.after.classes.k
    assert anonymity.l_diversity(kept, qi, ["hours_per_week"]) >= 3
    assert anonymity.l_diversity(kept, qi, ["hours_per_week"]) == (
        result.after.l_diversity["hours_per_week"].distinct
    )
    t = anonymity.t_closeness(kept, qi, ["hours_per_week"])
    assert t == pytest.approx(result.after.t_closeness["hours_per_week"], abs=1e-9)
    if algorithm != "full-domain":  # full-domain measures t on the kept records after suppression
        assert t <= 0.35 + 1e-9
    assert result.recoding.suppressed.mean() <= 0.1


def test_categorical_sensitive_t_closeness_agrees_with_pycanon(adult, specs):
    frame = adult.iloc[:600].reset_index(drop=True)
    qi = ["age", "sex", "race", "marital_status"]
    result = anonymize(frame, qi, k=5, sensitive=["occupation"], t=0.4, hierarchies=specs)
    kept = result.table
    assert anonymity.t_closeness(kept, qi, ["occupation"]) == pytest.approx(
        result.after.t_closeness["occupation"], abs=1e-9
    )
    assert result.after.t_closeness["occupation"] <= 0.4 + 1e-9


@pytest.mark.slow  # full Adult
def test_mondrian_meets_the_information_loss_goal_on_full_adult(adult, specs):
    for k, goal in ((5, 0.093), (10, 0.166)):
        result = anonymize(adult, ADULT_QI, k=k, hierarchies=specs)
        assert result.after.classes.k >= k
        assert result.after.utility is not None and result.after.utility.gcp <= goal


def test_full_domain_is_optimal_by_brute_force(adult, specs):
    frame = adult.iloc[:2000].reset_index(drop=True)
    qi = ["age", "education", "marital_status", "sex"]
    domains = build_domains(frame, qi, specs)
    check = Constraints(8, len(frame))
    found = full_domain(domains, check, max_suppression=0.03)
    table = _Table(domains, check, 0.03)
    best = math.inf
    for node in itertools.product(*(range(d.height + 1) for d in domains)):
        evaluation = table.evaluate(node)
        if evaluation.ok:
            best = min(best, evaluation.loss)
    assert found.utility(8).gcp == pytest.approx(best)
    assert found.details["gcp"] == pytest.approx(best)
    assert found.details["nodes_evaluated"] < found.details["lattice_nodes"]


@pytest.mark.slow  # a lattice search on Adult
def test_full_domain_beats_the_reference_at_k5(adult, specs):
    result = anonymize(adult, ADULT_QI, k=5, algorithm="full-domain", hierarchies=specs)
    assert result.after.utility is not None and result.after.utility.gcp <= 0.30
    assert result.after.utility.suppression <= 0.05
    assert result.after.classes.k >= 5


@pytest.mark.slow  # full Adult, anonymised then attacked
def test_anonymisation_defeats_the_linkage_attack(adult, specs):
    rng = np.random.default_rng(5)
    chosen = rng.choice(len(adult), 400, replace=False).astype(np.int64)
    external = adult.iloc[chosen][ADULT_QI].reset_index(drop=True)
    result = anonymize(
        adult.iloc[:6000],
        ADULT_QI,
        k=5,
        hierarchies=specs,
        external=external,
        external_truth=np.where(chosen < 6000, chosen, -1),
        target="income",
    )
    before, after = result.before.linkage, result.after.linkage
    assert before is not None and after is not None and before.correct is not None
    assert before.correct > 50
    assert after.linked == 0  # no class of one record is left to link to
    assert after.expected_correct is not None and before.expected_correct is not None
    assert after.expected_correct < before.expected_correct / 3
    classifier = result.after.classifier
    assert classifier is not None and classifier["accuracy"] > classifier["majority_class"]


def test_bad_inputs_are_refused(adult):
    with pytest.raises(SchemaError, match="quasi-identifier"):
        anonymize(adult, ["agee"], k=5)
    with pytest.raises(InvalidInputError, match="larger than the table"):
        anonymize(adult.iloc[:10], ["age"], k=50)
    with pytest.raises(InvalidInputError, match="empty"):
        anonymize(adult.iloc[:0], ["age"], k=2)
    with pytest.raises(InvalidInputError, match="need a sensitive"):
        anonymize(adult, ["age"], k=2, l=2)
    with pytest.raises(InvalidInputError, match="cannot be met"):
        anonymize(adult.iloc[:100], ["age"], k=2, sensitive=["sex"], l=3)


# ------------------------------------------------------------------ operators


def test_mask_and_pseudonyms():
    values = pd.Series(["4111111111111111", "12"])
    assert mask(values).tolist() == ["************1111", "12"]
    key, other = bytes(range(32)), bytes(range(1, 33))
    names = pd.Series(["alice", "bob", "alice"])
    first = pseudonymize(names, key)
    assert first[0] == first[2] != first[1]
    assert len(first[0]) == 16
    assert pseudonymize(names, key).tolist() == first.tolist()
    assert pseudonymize(names, other)[0] != first[0]
    with pytest.raises(InvalidInputError, match="too short"):
        pseudonymize(names, b"short")


def test_rank_swap_keeps_the_values_and_the_window(seed):
    values = pd.Series(np.arange(1000, dtype=np.int64))
    swapped = rank_swap(values, p=0.02, seed=seed)
    assert sorted(swapped.tolist()) == values.tolist()
    assert np.max(np.abs(swapped.to_numpy() - values.to_numpy())) <= 20
    assert (swapped != values).mean() > 0.9


def test_noise_has_the_declared_spread():
    # 2000 draws of N(0, (0.1 * sd)^2); the sample variance's chi-square test at alpha = 1e-4
    values = pd.Series(np.tile([0.0, 10.0], 1000))
    noisy = add_noise(values, relative_sd=0.1)
    residual = noisy.to_numpy() - values.to_numpy()
    sigma = 0.1 * values.std(ddof=0)
    statistic = np.sum(residual**2) / sigma**2
    low, high = stats.chi2.ppf([0.5e-4, 1 - 0.5e-4], df=residual.size)
    assert low < statistic < high


def test_microaggregation_groups_of_k(adult):
    frame = adult.iloc[:300].reset_index(drop=True)
    out = microaggregate(frame, ["age", "hours_per_week"], k=4)
    groups = out.groupby(["age", "hours_per_week"]).size()
    assert groups.min() >= 4
    assert out["age"].mean() == pytest.approx(frame["age"].mean())


def test_date_shift_keeps_intervals_per_person():
    key = bytes(range(32))
    visits = pd.DataFrame(
        {
            "patient": ["p1", "p1", "p2", "p2"],
            "date": ["2024-01-01", "2024-01-11", "2024-01-01", "2024-03-01"],
        }
    )
    shifted = shift_dates(visits["date"], visits["patient"], key, max_days=30)
    original = pd.to_datetime(visits["date"])
    delta = (shifted - original).dt.days
    assert delta[0] == delta[1] and delta[2] == delta[3]
    assert all(1 <= abs(d) <= 30 for d in delta)
    assert (shifted[1] - shifted[0]).days == 10


def test_operations_through_anonymize(tmp_path, adult, specs):
    key = KeyStore.for_workspace(Workspace.create(tmp_path / ".veil")).get("pseudonyms")
    frame = adult.iloc[:500].reset_index(drop=True).assign(person=[f"id{i}" for i in range(500)])
    result = anonymize(
        frame,
        ["age", "sex", "race"],
        k=5,
        hierarchies=specs,
        operations=[
            ColumnOperation.parse("person:pseudonymize"),
            ColumnOperation.parse("fnlwgt:drop"),
            ColumnOperation.parse("capital_gain:swap:p=0.05"),
        ],
        key=key,
    )
    assert "fnlwgt" not in result.table.columns
    assert result.table["person"][0] == pseudonymize(pd.Series(["id0"]), key)[0]
    with pytest.raises(InvalidInputError, match="needs a key"):
        anonymize(frame, ["age"], k=5, operations=[ColumnOperation.parse("person:pseudonymize")])
    with pytest.raises(InvalidInputError, match="operators apply to other columns"):
        anonymize(frame, ["age"], k=5, operations=[ColumnOperation.parse("age:mask")])
    with pytest.raises(InvalidInputError, match="column operation"):
        ColumnOperation.parse("age:explode")


def test_columns_released_as_read_carry_the_k_an_attacker_who_knows_them_faces(adult, specs):
    frame = adult.iloc[:600].reset_index(drop=True)
    frame = frame.assign(
        person=[f"id{i}" for i in range(len(frame))],  # a direct identifier
        site=["A"] * len(frame),  # one value: adds nothing
        note=[None if i % 2 else "seen" for i in range(len(frame))],  # half of it missing
        codes=[[i % 3, 1] for i in range(len(frame))],  # lists, as a Parquet list column gives
    )
    operated = ["fnlwgt", "capital_gain"]
    result = anonymize(
        frame,
        ["age", "sex", "race"],
        k=5,
        sensitive=["income"],
        hierarchies=specs,
        operations=[ColumnOperation.parse(f"{c}:drop") for c in operated],
    )
    found = {c.column: c for c in result.unchanged}
    # Every released column but the quasi-identifiers, the sensitive one and the operated ones.
    assert set(found) == set(frame.columns) - {"age", "sex", "race", "income", *operated}
    assert list(found) == [c for c in result.table.columns if c in found]  # in table order
    released = result.table
    for column, unchanged in found.items():
        # Independently: classes of the released (generalised) quasi-identifier values plus
        # the column's own value, a missing value counting as one value.
        sizes = (
            released.fillna({column: "<missing>"})
            .astype({column: str})
            .groupby(["age", "sex", "race", column], dropna=False)[column]
            .transform("size")
        )
        assert unchanged.k_with_it == sizes.min(), column
        assert unchanged.unique_rows == int((sizes == 1).sum()), column
    assert found["person"].k_with_it == 1 and found["person"].unique_rows == len(frame)
    assert found["site"].k_with_it == result.after.classes.k >= 5
    assert result.to_dict()["unchanged"][0] == found[next(iter(found))].to_dict()


def test_suppressed_rows_are_left_out_of_the_k_a_column_released_as_read_leaves(adult, specs):
    """Full-domain suppresses a few records; the measured k leaves them out, and so does this."""
    frame = adult.iloc[:2000].reset_index(drop=True).assign(site="A")
    frame.insert(0, "site", frame.pop("site"))  # first, then a repeated name
    frame = pd.concat([frame, frame[["site"]]], axis=1)  # two columns called "site"
    result = anonymize(
        frame, ["age", "sex", "race"], k=5, algorithm="full-domain", hierarchies=specs
    )
    suppressed = result.after.utility.suppression
    assert suppressed > 0, "the case needs suppressed records"
    sites = [c for c in result.unchanged if c.column == "site"]
    assert len(sites) == 2  # by position: a repeated name is two columns
    assert all(c.k_with_it == result.after.classes.k and c.unique_rows == 0 for c in sites)
    # By hand: two suppressed rows (-1) beside classes of 5 and 6 leave k 5, not 2.
    classes = np.array([0] * 5 + [1] * 6 + [-1] * 2)
    table = pd.DataFrame({"site": ["A"] * 13, "ward": ["n"] * 5 + ["s"] * 6 + ["n", "s"]})
    assert [
        (c.column, c.k_with_it, c.unique_rows) for c in unchanged_columns(table, classes, skip=[])
    ] == [
        ("site", 5, 0),
        ("ward", 5, 0),
    ]
    assert unchanged_columns(table, np.full(13, -1), skip=[]) == []  # all suppressed
    # Arrays longer than NumPy's print threshold are compared by content, not by a cut repr.
    long = [np.arange(2000) for _ in range(len(frame))]
    long[0] = long[0].copy()
    long[0][1000] = -1  # differs only in the middle, where repr prints "..."
    with_arrays = frame.iloc[:, :-1].assign(reading=long)
    result = anonymize(
        with_arrays, ["age", "sex", "race"], k=5, algorithm="full-domain", hierarchies=specs
    )
    [reading] = [c for c in result.unchanged if c.column == "reading"]
    lone = result.recoding.class_ids()[0] >= 0
    assert reading.unique_rows == int(lone)  # row 0 alone in its class with it, when released


def test_linkage_on_an_exact_release_matches_a_join(adult):
    frame = adult.iloc[:3000].reset_index(drop=True)
    domains = build_domains(frame, ["age", "sex", "race"])
    identity = Recoding.identity(domains)
    chosen = np.arange(0, 3000, 7, dtype=np.int64)
    result = linkage_attack(identity, frame.iloc[chosen], truth=chosen)
    sizes = frame.groupby(["age", "sex", "race"]).transform("size")
    assert result.linked == int((sizes.iloc[chosen] == 1).sum())
    assert result.correct == result.linked
