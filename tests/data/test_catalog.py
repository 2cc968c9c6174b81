"""Registering and loading datasets, on SQLite and PostgreSQL; refusals change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from veil.data import Catalog
from veil.data import readers as readers_module
from veil.data.readers import _csv as csv_reader
from veil.errors import (
    ConflictError,
    DataTooLargeError,
    InvalidInputError,
    NotFoundError,
    SchemaError,
)
from veil.progress import ProgressEvent
from veil.workspace import Settings


def _names(catalog: Catalog) -> list[str]:
    return [info.name for info in catalog.list()]


@pytest.fixture
def patients(tmp_path: Path) -> Path:
    """A small table where one person (p1) has three rows."""
    path = tmp_path / "visits.csv"
    pd.DataFrame(
        {
            "pid": ["p1", "p1", "p1", "p2", "p3"],
            "age": [34, 34, 35, 130, 61],
            "sex": ["F", "F", "F", "M", "F"],
            "cost": [10.5, 99.0, 3.0, 7.25, 8.0],
            "diagnosis": ["flu", "flu", "cold", "asthma", "flu"],
        }
    ).to_csv(path, index=False)
    return path


def test_register_adult_with_declared_bounds(catalog: Catalog, shared_data: Path):
    info = catalog.add(
        shared_data / "adult" / "adult.data",
        format="adult",
        name="adult",
        quasi_identifiers=["age", "sex", "race"],
        sensitive=["occupation"],
    )
    assert info.n_rows == 32_561
    assert info.schema.privacy_unit is None
    assert info.schema.quasi_identifiers == ("age", "sex", "race")
    assert info.schema.column("sex").categories == ("Female", "Male")
    assert info.schema.column("sex").declared_by == "format"
    assert info.schema.column("age").bounds is None, "bounds must never be inferred from the data"
    assert info.report["columns"]["occupation"]["missing"] == 1843
    assert "age" in info.report["unbounded_numeric"]
    assert len(info.content_sha256) == 64
    again = catalog.get("adult")
    assert again.schema == info.schema
    assert again.to_dict()["schema"] == info.schema.to_dict()
    assert again.created_by == catalog.access.principal.name  # who acts, never "library"


def test_privacy_unit_bounds_and_report(catalog: Catalog, patients: Path):
    events: list[ProgressEvent] = []
    info = catalog.add(
        patients,
        name="visits",
        privacy_unit="pid",
        quasi_identifiers=["age", "sex"],
        sensitive=["diagnosis"],
        bounds={"age": (0, 120), "cost": (0, 50)},
        categories={"sex": ["F", "M"]},
        progress=events.append,
    )
    assert info.schema.column("pid").kind == "identifier"
    assert info.report["privacy_units"] == 3
    assert info.report["max_rows_per_unit"] == 3
    assert info.report["columns"]["age"] == {"missing": 0, "below_lower": 0, "above_upper": 1}
    assert info.report["columns"]["cost"]["above_upper"] == 1
    assert info.report["undeclared_categorical"] == ["diagnosis"]
    assert events, "registration reports progress"
    assert events[-1].unit == "bytes"
    assert any(e.unit == "rows" and e.completed == 5 for e in events)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"quasi_identifiers": ["agee"]}, SchemaError, "did you mean 'age'"),
        ({"privacy_unit": "patient_id"}, SchemaError, "unknown privacy unit"),
        ({"bounds": {"sex": (0, 1)}}, SchemaError, "not a finite number"),
        (
            {"bounds": {"age": (0, 1)}, "categories": {"age": ["1"]}},
            SchemaError,
            "both bounds and categories",
        ),
        ({"categories": {"sex": ["F"]}}, SchemaError, "outside its declared categories"),
        (
            {"quasi_identifiers": ["age"], "sensitive": ["age"]},
            SchemaError,
            "both quasi-identifying",
        ),
        ({"format": "parquet"}, InvalidInputError, "not a readable Parquet"),
        ({"name": "bad name!"}, InvalidInputError, "invalid dataset name"),
    ],
)
def test_refused_registrations_write_nothing(
    catalog: Catalog, patients: Path, kwargs, error, message
):
    catalog.add(patients, name="first")
    arguments = {"name": "visits"} | kwargs
    with pytest.raises(error, match=message):
        catalog.add(patients, **arguments)
    assert _names(catalog) == ["first"]


def test_text_in_a_bounded_column_names_the_row_across_chunks(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(
        csv_reader, "CHUNK_ROWS", 7
    )  # force many chunks (CSV reads CHUNK_ROWS rows a time)
    path = tmp_path / "ages.csv"
    ages = [str(20 + i) for i in range(30)]
    ages[22] = "unknown"
    path.write_text("age\n" + "\n".join(ages) + "\n", encoding="utf-8")
    with pytest.raises(SchemaError, match="data row 23") as caught:
        catalog.add(path, name="ages", bounds={"age": (0, 120)})
    assert caught.value.details == {"column": "age", "row": 23}
    assert _names(catalog) == []


def test_missing_identifiers_are_refused(catalog: Catalog, tmp_path: Path):
    path = tmp_path / "gaps.csv"
    path.write_text("pid,x\np1,1\n,2\n", encoding="utf-8")
    with pytest.raises(SchemaError, match="missing values"):
        catalog.add(path, name="gaps", privacy_unit="pid")


def test_header_only_and_duplicate_names(catalog: Catalog, tmp_path: Path, patients: Path):
    header = tmp_path / "header.csv"
    header.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="no data rows"):
        catalog.add(header, name="h")
    catalog.add(patients, name="visits")
    with pytest.raises(ConflictError, match="already registered"):
        catalog.add(patients, name="visits")
    assert _names(catalog) == ["visits"]


def test_get_unknown_suggests_the_closest(catalog: Catalog, patients: Path):
    catalog.add(patients, name="visits")
    with pytest.raises(NotFoundError, match="did you mean 'visits'"):
        catalog.get("visit")


def test_load_checks_the_fingerprint(catalog: Catalog, patients: Path):
    catalog.add(patients, name="visits", bounds={"age": (0, 120)})
    frame = catalog.load_frame("visits")
    assert frame.shape == (5, 5)
    assert catalog.load_frame("visits", ["age"]).columns.tolist() == ["age"]
    patients.write_text(
        patients.read_text(encoding="utf-8").replace("flu", "flux"), encoding="utf-8"
    )
    with pytest.raises(InvalidInputError, match="changed since it was registered"):
        catalog.load_frame("visits")


def test_load_refuses_data_over_the_memory_limit_before_reading(
    store, patients: Path, monkeypatch: pytest.MonkeyPatch
):
    catalog = Catalog(store, Settings(store.display_url, max_load_bytes=100, actor="pytest"))
    catalog.add(patients, name="visits")
    read_calls: list[object] = []
    monkeypatch.setattr(readers_module.CsvReader, "read", lambda *a, **k: read_calls.append(a))
    with pytest.raises(DataTooLargeError, match="would not fit in memory"):
        catalog.load_frame("visits")
    assert read_calls == [], "nothing may be read once the estimate exceeds the limit"


def test_mnist_registration_and_images(catalog: Catalog, shared_data: Path):
    info = catalog.add(shared_data / "mnist", name="mnist-test", split="test")
    assert info.format == "mnist"
    assert info.n_rows == 10_000
    image = info.schema.column("image")
    assert (image.kind, image.bounds, image.shape) == ("array", (0.0, 255.0), (28, 28))
    arrays = catalog.load_images("mnist-test")
    assert arrays.images.shape == (10_000, 28, 28)
    assert np.array_equal(np.bincount(arrays.labels, minlength=10).cumsum()[-1:], [10_000])
    catalog.add("sklearn:iris", name="iris")
    with pytest.raises(InvalidInputError, match="not an image dataset"):
        catalog.load_images("iris")


def test_sklearn_digits_declares_its_pixel_range(catalog: Catalog):
    info = catalog.add("sklearn:digits", name="digits")
    assert info.schema.column("pixel_0_0").bounds == (0.0, 16.0)
    assert info.schema.column("pixel_0_0").declared_by == "format"
    assert info.schema.column("digit").categories == tuple(str(d) for d in range(10))
    assert info.report["columns"]["pixel_3_3"]["above_upper"] == 0


def test_update_remove_and_rejoin_through_the_python_api(catalog: Catalog, patients: Path):
    """Issue 19 on both backends: fix a registration, archive it with its ledger, rejoin it."""
    from veil.ledger import Budget, Ledger

    catalog.add(patients, name="visits", privacy_unit="pid")
    updated = catalog.update("visits", bounds={"age": (0, 150)}, quasi_identifiers=["age", "sex"])
    assert updated.schema.column("age").bounds == (0.0, 150.0)
    assert updated.schema.quasi_identifiers == ("age", "sex")
    assert updated.schema.privacy_unit == "pid"  # kept: not named in the update
    with pytest.raises(SchemaError):
        catalog.update("visits", categories={"diagnosis": ["flu"]})
    assert catalog.get("visits").schema == updated.schema
    ledger = Ledger(catalog.store, catalog.settings)
    ledger.set_budget("visits", Budget(epsilon=1.0))
    with pytest.raises(ConflictError, match="already registered as 'visits'"):
        catalog.add(patients, name="visits-2")
    removed = catalog.remove("visits")
    assert removed["archived"] is True
    assert _names(catalog) == []
    assert [i.archived["name"] for i in catalog.list(archived=True)] == ["visits"]
    with pytest.raises(NotFoundError):
        catalog.get("visits")
    again = catalog.add(patients, name="visits-2")
    assert again.report["rejoined"]["name"] == "visits"
    assert ledger.status("visits-2").budget.epsilon == 1.0
    assert catalog.remove("visits-2")["archived"] is True


def test_the_same_bytes_under_a_second_name_never_get_a_second_budget(
    catalog: Catalog, patients: Path, tmp_path: Path
):
    """Issue 20: a copy registered before any budget was set was a second, fresh budget.

    Today's path: register the file and a byte-identical copy, give both a budget,
    exhaust one, and the copy still releases. The second registration is refused
    instead, so the only budget of these bytes stays exhausted.
    """
    from veil.errors import BudgetExceededError
    from veil.ledger import Budget, Ledger, Mechanism, PrivacyEvent

    copy = tmp_path / "copy-of-visits.csv"
    copy.write_bytes(patients.read_bytes())
    catalog.add(patients, name="visits", privacy_unit="pid")
    with pytest.raises(ConflictError, match="already registered as 'visits'") as refused:
        catalog.add(copy, name="visits-copy", privacy_unit="pid")
    assert refused.value.fix is not None and "visits" in refused.value.fix
    assert "veil datasets update visits" in refused.value.fix
    assert _names(catalog) == ["visits"]  # nothing written

    ledger = Ledger(catalog.store, catalog.settings)
    ledger.set_budget("visits", Budget(epsilon=1.0))
    event = PrivacyEvent("count", (Mechanism.laplace(scale=1.0, sensitivity=1.0),))
    ledger.charge("visits", event, purpose="spend it all")
    with pytest.raises(BudgetExceededError):
        ledger.charge("visits", event, purpose="one more")
    with pytest.raises(ConflictError, match="already registered as 'visits'"):
        catalog.add(copy, name="visits-copy", privacy_unit="pid")
    with pytest.raises(NotFoundError):  # no second ledger to charge
        ledger.charge("visits-copy", event, purpose="from the copy")


def _register_behind_the_catalog(catalog: Catalog, like: str, name: str) -> None:
    """A second row of the same bytes, as a workspace registered before the one-name rule may hold."""
    from veil.store.tables import DatasetRow

    info = catalog.get(like)
    with catalog.store.session() as session:
        session.add(
            DatasetRow(
                name=name,
                format=info.format,
                source=info.source,
                content_sha256=info.content_sha256,
                size_bytes=info.size_bytes,
                n_rows=info.n_rows,
                n_columns=len(info.schema.columns),
                privacy_schema=info.schema.to_dict(),
                load_options=info.load_options,
                registration_report=info.report,
                created_by="before the one-name rule",
                veil_version="0",
            )
        )


def test_same_data_names_finds_the_registrations_an_older_workspace_shares(
    catalog: Catalog, patients: Path
):
    """The query the ledger runs before giving a budget."""
    from veil.ledger import Budget, Ledger
    from veil.store.tables import same_data_names

    def names(digest: str, exclude: str | None = None) -> list[str]:
        with catalog.store.session() as session:
            return same_data_names(session, digest, exclude=exclude)

    digest = catalog.add(patients, name="visits").content_sha256
    assert names(digest) == ["visits"]
    assert names(digest, exclude="visits") == []
    assert names("0" * 64) == []
    _register_behind_the_catalog(catalog, "visits", "visits-old-copy")
    assert names(digest) == ["visits", "visits-old-copy"]
    with catalog.store.session() as session:  # inside the caller's transaction too
        assert same_data_names(session, digest, exclude="visits") == ["visits-old-copy"]

    # The ledger gives neither name a budget while both are active (a budget follows the data).
    ledger = Ledger(catalog.store, catalog.settings)
    for name, other in (("visits", "visits-old-copy"), ("visits-old-copy", "visits")):
        with pytest.raises(ConflictError, match=f"also registered as {other}"):
            ledger.set_budget(name, Budget(epsilon=1.0))
    assert catalog.remove("visits-old-copy")["archived"] is False  # no history: forgotten
    ledger.set_budget("visits", Budget(epsilon=1.0))

    # archived registrations are not counted, and the same bytes stay refused while one is active
    _register_behind_the_catalog(catalog, "visits", "visits-old-copy")
    assert catalog.remove("visits")["archived"] is True
    assert names(digest) == ["visits-old-copy"]
    with pytest.raises(ConflictError, match="already registered as 'visits-old-copy'"):
        catalog.add(patients, name="visits")  # not a rejoin beside an active copy
    assert catalog.remove("visits-old-copy")["archived"] is False  # no history: forgotten
    assert names(digest) == []
    assert catalog.add(patients, name="visits").report["rejoined"]["name"] == "visits"
    assert names(digest) == ["visits"]


def test_concurrent_registrations_of_the_same_bytes_leave_one(
    catalog: Catalog, store_url: str, patients: Path, tmp_path: Path
):
    """Four writers register the same bytes at once under four names: one wins, three are refused."""
    import threading

    from veil.store import Store

    workers = 4
    start = threading.Barrier(workers)
    outcomes: dict[str, str] = {}
    copies = []
    for i in range(workers):
        copies.append(tmp_path / f"copy-{i}.csv")
        copies[-1].write_bytes(patients.read_bytes())

    def register(i: int) -> None:
        store = Store.open(store_url)
        try:
            mine = Catalog(store, catalog.settings)
            start.wait()
            mine.add(copies[i], name=f"visits-{i}", privacy_unit="pid")
            outcomes[f"visits-{i}"] = "registered"
        except ConflictError:
            outcomes[f"visits-{i}"] = "refused"
        finally:
            store.dispose()

    threads = [threading.Thread(target=register, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["refused"] * (workers - 1) + ["registered"]
    assert _names(catalog) == [n for n, o in outcomes.items() if o == "registered"]


def test_a_parquet_registration_counts_people_as_the_csv_one_does(catalog: Catalog, tmp_path: Path):
    """Parquet counts people in Polars' streaming engine (no dict of every person): same report."""
    rng = np.random.default_rng(11)
    n = 5000
    frame = pd.DataFrame(
        {
            "pid": rng.integers(0, 700, n).astype(str),
            "cost": rng.uniform(0, 60, n),
        }
    )
    frame.loc[:9, "pid"] = "heavy"  # one person with at least 10 rows
    expected_people = frame["pid"].nunique()
    expected_most = int(frame["pid"].value_counts().max())
    frame.to_parquet(tmp_path / "visits.parquet")
    frame.to_csv(tmp_path / "visits.csv", index=False)
    reports = [
        catalog.add(tmp_path / f"visits.{ext}", name=f"v_{ext}", privacy_unit="pid").report
        for ext in ("parquet", "csv")
    ]
    for report in reports:
        assert report["privacy_units"] == expected_people
        assert report["max_rows_per_unit"] == expected_most
