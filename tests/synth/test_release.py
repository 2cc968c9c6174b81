"""A synthetic release end to end: one charge of the plan's mechanisms, then data and a card.

Fits are shared through module fixtures (each costs seconds of JAX compilation);
the whole module is one ``xdist_group``, so that under ``--dist loadgroup`` its tests
run on one worker, one after another, and each module fixture is built once. The
Adult AIM run (tens of seconds of compilation on a loaded 2-core machine) is ``slow``.
Bad input, a short budget and an oversized workload are refused before
anything is charged; a killed run keeps its charge and releases nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.synth.conftest import ADULT_SUBSET, FAST, TINY_SCHEMA, adult_schema, tiny_frame

from veil.data import ColumnSpec, PrivacySchema
from veil.data._adult import ADULT_CATEGORIES
from veil.errors import InvalidInputError, PermissionDeniedError, SchemaError
from veil.ledger import Budget, LocalBudget
from veil.synth import (
    Encoder,
    SynthResult,
    fit_nonprivate,
    synthesize_dataset,
    synthesize_frame,
    write_release,
)

DELTA = 1e-6
BOUNDS = {"age": (17.0, 91.0), "education_num": (1.0, 17.0)}
pytestmark = [
    pytest.mark.xdist_group("synth-release"),
    pytest.mark.slow,
]  # slow tier (not in `make test-fast`): half a second to seconds a test


def stop_at(round_index: int) -> Callable[[], None]:
    """A ``stop`` callback that interrupts the run when round ``round_index`` (from 0) begins."""
    calls = {"n": 0}

    def stop() -> None:
        if calls["n"] == round_index:
            raise KeyboardInterrupt
        calls["n"] += 1

    return stop


@pytest.fixture(scope="module")
def adult_run(adult_rows: pd.DataFrame) -> tuple[SynthResult, LocalBudget]:
    """AIM at (1, 1e-6) on 2,000 Adult rows, 2-way workload, 500 rows out, charged to a local guard."""
    guard = LocalBudget(Budget(epsilon=1.0, delta=DELTA))
    result = synthesize_frame(
        adult_rows,
        adult_schema(),
        epsilon=1.0,
        delta=DELTA,
        workload="2-way",
        rows=500,
        guard=guard,
        seed=7,
        settings=FAST,
    )
    return result, guard


@pytest.fixture(scope="module")
def mst_twice() -> tuple[SynthResult, SynthResult]:
    """Two MST releases of the tiny table with the same seed."""
    frame = tiny_frame()
    return tuple(  # type: ignore[return-value]
        synthesize_frame(frame, TINY_SCHEMA, rho=2.0, method="mst", bins=5, seed=3, settings=FAST)
        for _ in range(2)
    )


# ---------------------------------------------------------------- one charge, the plan's


@pytest.mark.slow
def test_a_release_charges_one_event_holding_exactly_the_plans_mechanisms(adult_run):
    result, guard = adult_run
    [entry] = guard.history
    names = Counter(m["name"] for m in entry["mechanisms"])
    columns = len(ADULT_SUBSET)
    assert names == {"discrete_gaussian": columns + FAST.rounds, "exponential": FAST.rounds}
    plan = result.card.plan
    assert (plan["oneway"], plan["rounds"]) == (columns, FAST.rounds)
    sigmas = {m["parameters"]["sigma"] for m in entry["mechanisms"] if "sigma" in m["parameters"]}
    assert sigmas == {plan["oneway_sigma"], plan["measure_sigma"]}
    assert result.receipt is not None and result.receipt.epsilon is not None
    assert result.receipt.epsilon <= 1.0
    assert result.card.ledger_event == result.receipt.event_id == entry["seq"]
    # The run measured what the plan charged: the one-ways, then one clique per round.
    assert len(result.trace.measured) == columns + FAST.rounds
    assert result.trace.rounds == FAST.rounds


@pytest.mark.slow
def test_the_output_has_the_declared_columns_and_values(adult_run):
    result, _ = adult_run
    data = result.data
    assert tuple(data.columns) == ADULT_SUBSET
    assert len(data) == len(result.codes) == 500  # rows= honoured
    for column in ("age", "education_num"):
        values = data[column].dropna().to_numpy(dtype=np.float64)
        low, high = BOUNDS[column]
        assert values.min() >= low and values.max() <= high
        assert (values == np.round(values)).all()  # integer columns stay whole
    for column in ("sex", "race", "income"):
        assert set(data[column].dropna()) <= set(ADULT_CATEGORIES[column])
    sizes = result.encoder.sizes
    assert all(result.codes[c].between(0, sizes[c] - 1).all() for c in ADULT_SUBSET)
    # The codes are the data's cells (decoding is post-processing within each cell).
    assert result.encoder.encode(data).equals(result.codes)


@pytest.mark.slow
def test_the_card_says_what_the_release_is(adult_run):
    result, _ = adult_run
    card = result.card.to_dict()
    assert card["kind"] == "veil.synthetic-data"
    assert (card["method"], card["epsilon"], card["delta"]) == ("aim", 1.0, DELTA)
    assert card["workload"] == "2-way" and card["workload_cliques"] == 10
    assert card["ledger_event"] == result.receipt.event_id  # type: ignore[union-attr]
    assert card["rows"] == 500 and card["private"] is True
    assert card["columns"] == list(ADULT_SUBSET)
    assert card["domain"] == result.encoder.to_dict()
    json.dumps(card)  # a sidecar: plain JSON


# ---------------------------------------------------------------- noise, MST, the baseline


def test_the_noise_is_not_seeded_so_two_runs_with_one_seed_differ(mst_twice):
    first, second = mst_twice
    rng = np.random.default_rng(0)
    # The model's one-way marginals are a deterministic fit of the noisy measurements.
    ones = [
        np.concatenate([r.model.marginal((c,), rng, 1) for c in ("x", "c", "y")])  # type: ignore[union-attr]
        for r in (first, second)
    ]
    assert not np.allclose(ones[0], ones[1])


def test_mst_measures_the_one_ways_and_a_spanning_tree(mst_twice):
    result, _ = mst_twice
    measured = result.trace.measured
    assert measured[:3] == [("x",), ("c",), ("y",)]
    edges = measured[3:]
    assert len(edges) == 2 and all(len(e) == 2 for e in edges)
    assert set().union(*map(set, edges)) == {"x", "c", "y"}  # connected: a tree on 3 nodes
    assert result.card.method == "mst" and result.card.rho <= 2.0
    assert len(result.data) > 0 and tuple(result.data.columns) == ("x", "c", "y")


def test_the_non_private_baseline_charges_nothing_and_keeps_the_one_way_marginals():
    frame = tiny_frame()
    # Many final iterations (cheap after compilation): the fit of exact marginals converges.
    settings = dataclasses.replace(FAST, final_iters=1000)
    result = fit_nonprivate(frame, TINY_SCHEMA, method="mst", bins=5, seed=1, settings=settings)
    assert result.receipt is None and result.card.private is False
    assert result.card.epsilon is None and result.card.ledger_event is None
    real = Encoder.from_schema(TINY_SCHEMA, bins=5, integer={"x": True}).encode(frame)
    rng = np.random.default_rng(0)
    for column in ("x", "c", "y"):
        true = np.bincount(real[column], minlength=result.encoder.sizes[column])
        fitted = result.model.marginal((column,), rng, 1)  # type: ignore[union-attr]
        # Exact measurements: the model's marginal is the true one up to the fit's tolerance.
        assert np.abs(fitted - true).max() <= 1.0
    assert len(result.data) == len(frame)


# ---------------------------------------------------------------- refused before any charge


def test_a_column_without_bounds_is_refused_and_nothing_is_charged():
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric"), *TINY_SCHEMA.columns[1:]))
    guard = LocalBudget(Budget(epsilon=1.0, delta=DELTA))
    with pytest.raises(SchemaError, match="declared") as caught:
        synthesize_frame(tiny_frame(), schema, epsilon=1.0, delta=DELTA, guard=guard)
    assert "x (numeric" in str(caught.value.got) and caught.value.fix
    assert guard.history == []


def test_a_budget_too_small_for_the_rounds_is_refused_up_front():
    guard = LocalBudget(Budget(epsilon=1.0, delta=DELTA))
    with pytest.raises(InvalidInputError, match="too small") as caught:
        synthesize_frame(
            tiny_frame(50), TINY_SCHEMA, epsilon=0.05, delta=DELTA, guard=guard, settings=FAST
        )
    assert "nothing was charged" in str(caught.value.fix) or "rounds" in str(caught.value.fix)
    assert guard.history == []
    assert guard.status("local").spent.epsilon == 0


def test_a_workload_over_the_domain_limit_is_refused_and_nothing_is_charged(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("x,y\n", encoding="utf-8")  # 1,001 x 1,001 cells at 1,000 bins
    frame = tiny_frame().assign(x=lambda f: f["x"].astype(float))
    guard = LocalBudget(Budget(rho=1.0))
    with pytest.raises(InvalidInputError, match="too large"):
        synthesize_frame(frame, TINY_SCHEMA, rho=1.0, workload=path, bins=1000, guard=guard)
    assert guard.history == []


# ---------------------------------------------------------------- a killed run


def test_a_killed_run_keeps_its_charge_and_releases_nothing():
    guard = LocalBudget(Budget(rho=2.0))
    out: list[SynthResult] = []
    with pytest.raises(KeyboardInterrupt):
        out.append(
            synthesize_frame(
                tiny_frame(),
                TINY_SCHEMA,
                rho=2.0,
                method="mst",
                bins=5,
                guard=guard,
                settings=FAST,
                stop=stop_at(1),
            )
        )
    assert out == []
    [entry] = guard.history
    assert Counter(m["name"] for m in entry["mechanisms"]) == {
        "discrete_gaussian": 5,
        "exponential": 2,
    }
    assert guard.status("local").spent.rho == pytest.approx(2.0, rel=1e-6)


# ---------------------------------------------------------------- through the workspace ledger


@pytest.fixture
def registered(workspace, tmp_path):
    """The tiny table registered as 'tiny' (bounds and categories declared), with a budget."""
    from veil.data import Catalog
    from veil.ledger import Ledger

    path = tmp_path / "tiny.csv"
    tiny_frame().to_csv(path, index=False)
    catalog = Catalog.open()
    catalog.add(
        path,
        name="tiny",
        bounds={"x": (0.0, 4.0), "y": (0.0, 10.0)},
        categories={"c": ["a", "b", "c"]},
    )
    ledger = Ledger.open()
    ledger.set_budget("tiny", Budget(epsilon=4.0, delta=DELTA), reason="test")
    return catalog, ledger


def test_a_principal_without_budget_spend_is_refused_before_reading(registered):
    from veil.access import Access, Principal
    from veil.data import Catalog
    from veil.ledger import Ledger

    _, owner = registered
    Access.open(store=owner.store).grant("bob", "auditor", "tiny", reason="reads, no spending")
    access = Access(owner.store, Principal("bob"))
    bob_catalog, bob_ledger = (
        Catalog(owner.store, access=access),
        Ledger(owner.store, access=access),
    )
    with pytest.raises(PermissionDeniedError, match=r"budget\.spend"):
        synthesize_dataset(
            bob_catalog, bob_ledger, "tiny", epsilon=1.0, delta=DELTA, method="mst", bins=5
        )
    assert owner.entries("tiny") == []
    trail = owner.access.trail.entries(dataset="tiny")
    assert not [e for e in trail if e.action == "dataset.read" and e.actor == "bob"]
    assert [str(e.outcome) for e in trail if e.actor == "bob"] == ["refused"]


def test_a_workspace_release_is_read_with_its_purpose_charged_once_and_carded(registered):
    catalog, ledger = registered
    # A run killed after the charge: the charge stands, no release.
    with pytest.raises(KeyboardInterrupt):
        synthesize_dataset(
            catalog,
            ledger,
            "tiny",
            epsilon=1.0,
            delta=DELTA,
            method="mst",
            bins=5,
            settings=FAST,
            purpose="synth test (killed)",
            stop=stop_at(1),
        )
    assert len(ledger.entries("tiny")) == 1
    result = synthesize_dataset(
        catalog,
        ledger,
        "tiny",
        epsilon=1.0,
        delta=DELTA,
        method="mst",
        bins=5,
        settings=FAST,
        purpose="synth test",
        seed=0,
    )
    entries = ledger.entries("tiny")
    assert len(entries) == 2
    assert result.card.ledger_event == entries[-1].id == result.receipt.event_id  # type: ignore[union-attr]
    assert result.card.dataset_sha256 == catalog.get("tiny").content_sha256
    trail = [e for e in ledger.access.trail.entries(dataset="tiny") if e.seq > 0]
    reads = [e for e in trail if e.action == "dataset.read"]
    assert [e.purpose for e in reads][-2:] == ["synth test (killed)", "synth test"]
    assert reads[-1].details["use"] == "mechanism"
    actions = [e.action for e in trail if e.action in ("dataset.read", "privacy.charge")]
    assert actions[-4:] == ["dataset.read", "privacy.charge"] * 2


# ---------------------------------------------------------------- write_release


def test_csv_and_parquet_are_written_with_the_card_beside_them(mst_twice, tmp_path):
    import pyarrow.parquet as pq

    result = mst_twice[0]
    rows = len(result.data)
    card = result.card.to_dict()
    written = write_release(result, tmp_path / "synth.csv")
    assert written == {
        "data": str(tmp_path / "synth.csv"),
        "card": str(tmp_path / "synth.csv.card.json"),
    }
    back = pd.read_csv(tmp_path / "synth.csv")
    assert list(back.columns) == ["x", "c", "y"] and len(back) == rows
    assert back["c"].dropna().isin(["a", "b", "c"]).all()
    assert json.loads(Path(written["card"]).read_text(encoding="utf-8")) == card
    written = write_release(result, tmp_path / "synth.parquet")
    table = pq.read_table(written["data"])
    assert table.num_rows == rows
    assert table.to_pandas()["c"].equals(result.data["c"])
    assert json.loads(table.schema.metadata[b"veil.card"]) == card
    assert json.loads(Path(written["card"]).read_text(encoding="utf-8")) == card
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synth.csv",
        "synth.csv.card.json",
        "synth.parquet",
        "synth.parquet.card.json",
    ]


def test_an_unknown_output_suffix_is_refused_and_nothing_is_written(mst_twice, tmp_path):
    result = mst_twice[0]
    with pytest.raises(InvalidInputError, match="output format") as caught:
        write_release(result, tmp_path / "synth.xlsx")
    assert ".csv" in str(caught.value.fix)
    assert list(tmp_path.iterdir()) == []


def test_one_row_is_kept_per_privacy_unit():
    from veil.synth._release import _one_row_per_unit

    frame = pd.DataFrame({"pid": [1, 1, 1, 2, 3, 3], "x": [0, 1, 2, 3, 4, 5]})
    kept = _one_row_per_unit(frame, "pid", np.random.default_rng(0))
    assert sorted(kept["pid"]) == [1, 2, 3]
    # Which row is kept is random, not always the first one seen.
    firsts = {
        int(_one_row_per_unit(frame, "pid", np.random.default_rng(s)).set_index("pid").loc[1, "x"])
        for s in range(40)
    }
    assert firsts == {0, 1, 2}  # each of the three rows: missed with probability < 3 (2/3)^40
    assert _one_row_per_unit(frame, None, np.random.default_rng(0)).equals(frame)


def test_the_non_private_aim_never_measures_an_exact_marginal_twice():
    # Without noise a second measurement of a marginal repeats the first: the baseline moves on
    # to another candidate, and stops when every candidate (3 pairs and the triple of a
    # 3-column table, beyond the one-ways) has been measured.
    settings = dataclasses.replace(FAST, rounds=6)
    result = fit_nonprivate(
        tiny_frame(), TINY_SCHEMA, method="aim", bins=5, seed=1, settings=settings
    )
    measured = result.trace.measured
    assert len(measured) == len(set(measured))
    assert {frozenset(c) for c in measured[3:]} == {
        frozenset(c) for c in ({"x", "c"}, {"x", "y"}, {"c", "y"}, {"x", "c", "y"})
    }
    assert result.trace.rounds == 4
    assert result.trace.notes == ["every candidate measured exactly after 4 rounds"]
