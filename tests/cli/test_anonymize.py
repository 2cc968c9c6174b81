"""`veil scan` and `veil anonymize`: JSON reports, the released file, and refusals that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from veil.cli._app import main

ROOT = Path(__file__).resolve().parents[2]
HIERARCHIES = ROOT / "src/veil/anonymize/tabular/hierarchies/adult.yaml"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def adult_csv(shared_data, tmp_path) -> Path:
    from veil.data import load_table

    frame = load_table(shared_data / "adult" / "adult.data").dropna().iloc[:3000]
    path = tmp_path / "adult.csv"
    frame.assign(person=[f"p{i}" for i in range(len(frame))]).to_csv(path, index=False)
    return path


def test_scan_json(capsys):
    code, out, err = run(
        capsys,
        "scan",
        "sklearn:diabetes",
        "--qi",
        "age,sex,bmi,bp",
        "--sensitive",
        "progression",
        "--no-pii",
        "--population-size",
        "100000",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["k_anonymity"] == 1
    assert report["classes"]["unique_share"] == 1.0
    assert report["risk"]["prosecutor_max"] == 1.0
    assert report["population_uniqueness"]["sample_uniques"] == 442


@pytest.mark.slow
def test_anonymize_writes_the_release_and_the_report(capsys, adult_csv, tmp_path):
    assert run(capsys, "init")[0] == 0
    released, report_path = tmp_path / "out" / "released.csv", tmp_path / "report.json"
    code, out, err = run(
        capsys,
        "anonymize",
        str(adult_csv),
        "--qi",
        "age,workclass,education,marital_status,occupation,race,sex,native_country",
        "--sensitive",
        "income",
        "--k",
        "5",
        "--l",
        "2",
        "--hierarchies",
        str(HIERARCHIES),
        "--algorithm",
        "full-domain",
        "--op",
        "person:pseudonymize",
        "--op",
        "fnlwgt:drop",
        "--target",
        "income",
        "-o",
        str(released),
        "--report",
        str(report_path),
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads(report_path.read_text(encoding="utf-8"))
    assert report["satisfied"] == {"k": True, "l[income]": True}
    assert report["before"]["k_anonymity"] == 1
    assert report["after"]["k_anonymity"] >= 5
    assert report["after"]["utility"]["suppression"] <= 0.05
    table = pd.read_csv(released)
    assert "fnlwgt" not in table.columns
    assert table["person"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert (released.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / ".veil" / "keys" / "pseudonyms.key").is_file()


def test_anonymize_linkage_and_table_output(capsys, adult_csv, tmp_path):
    external = tmp_path / "voters.csv"
    pd.read_csv(adult_csv).iloc[::10][["person", "age", "sex", "race", "marital_status"]].to_csv(
        external, index=False
    )
    released = tmp_path / "released.parquet"
    code, out, err = run(
        capsys,
        "anonymize",
        str(adult_csv),
        "--qi",
        "age,sex,race,marital_status",
        "--k",
        "10",
        "--external",
        str(external),
        "--external-id",
        "person",
        "-o",
        str(released),
    )
    assert code == 0, err
    assert "linkage attack" in out and "Constraints measured on the output: k met" in out
    assert "person" not in pd.read_parquet(released).columns


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--qi", "agee", "--k", "5"], 4, "unknown quasi-identifier"),
        (["--qi", "age", "--k", "5000"], 3, "larger than the table"),
        (["--qi", "sex", "--k", "5", "--hierarchies", "BAD"], 3, "does not cover"),
        (["--qi", "age", "--k", "5", "--algorithm", "magic"], 3, "unknown anonymisation algorithm"),
    ],
)
def test_refusals_leave_no_output(capsys, adult_csv, tmp_path, args, exit_code, message):  # noqa: PLR0917
    bad = tmp_path / "bad.yaml"
    bad.write_text("sex:\n  type: tree\n  tree: {Any: [Male]}\n", encoding="utf-8")
    args = [str(bad) if a == "BAD" else a for a in args]
    released = tmp_path / "released.csv"
    code, _, err = run(capsys, "anonymize", str(adult_csv), *args, "-o", str(released))
    assert code == exit_code, err
    assert message in " ".join(err.split())
    assert not released.exists()
    assert not list(tmp_path.glob(".released.csv*"))


def test_empty_and_mixed_files(capsys, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("age,sex\n", encoding="utf-8")
    code, _, err = run(capsys, "scan", str(empty), "--qi", "age", "--no-pii")
    assert code == 3 and "empty" in err
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("age,sex\n31,F\n42,M\nunknown,F\n55,M\n", encoding="utf-8")
    out_file = tmp_path / "o.csv"
    code, _, err = run(
        capsys, "anonymize", str(mixed), "--qi", "age,sex", "--k", "2", "-o", str(out_file)
    )
    assert code == 3 and "mixes numbers and text" in " ".join(err.split())
    assert not out_file.exists()


def test_scan_with_pii_detection_on_by_default_prints_the_pii_columns(capsys, tmp_path):
    """The default (PII detection on) once crashed with KeyError 'entity' on any PII column."""
    path = tmp_path / "patients.csv"
    pd.DataFrame(
        {
            "age": [34, 51, 27, 45, 62, 38] * 5,
            "zip": ["02139", "02140", "02139", "02141", "02140", "02139"] * 5,
            "email": [f"patient{i}@example.org" for i in range(30)],
            "diagnosis": ["flu", "asthma", "flu", "diabetes", "asthma", "flu"] * 5,
        }
    ).to_csv(path, index=False)
    code, out, err = run(capsys, "scan", str(path), "--qi", "age,zip", "--sensitive", "diagnosis")
    assert code == 0, err
    assert "PII column" in out
    assert "email: EMAIL_ADDRESS" in out


def _patients(n: int = 300, seed: int = 42) -> pd.DataFrame:
    """A fresh table of the kind a user brings: ids, ages, zip codes, a category."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "patient_id": [f"P{100000 + i}" for i in range(n)],
            "age": rng.integers(18, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "diagnosis": rng.choice(["flu", "asthma", "diabetes"], n),
        }
    )


@pytest.mark.parametrize("command", ["scan", "anonymize"])
def test_a_semicolon_file_is_named_as_such_and_read_with_delimiter(capsys, tmp_path, command):
    """Issue 19: on a ';' file both commands blamed the column names ("unknown quasi-identifier 'age'")."""
    path = tmp_path / "patients.csv"
    _patients().to_csv(path, index=False, sep=";")
    released = tmp_path / "released.csv"
    extra = ["--k", "5", "-o", str(released)] if command == "anonymize" else ["--no-pii"]
    code, _, err = run(capsys, command, str(path), "--qi", "age,sex", *extra)
    message = " ".join(err.split())
    assert code == 3, err
    assert "unknown quasi-identifier" not in message
    assert "looks ';'-delimited" in message and "--delimiter ';'" in message
    assert not released.exists()
    code, _, err = run(capsys, command, str(path), "--qi", "age,sex", "--delimiter", ";", *extra)
    assert code == 0, err
    if command == "anonymize":
        assert list(pd.read_csv(released).columns) == ["patient_id", "age", "sex", "diagnosis"]


@pytest.mark.slow
def test_anonymize_bins_a_registered_dataset_within_its_declared_bounds(capsys, tmp_path):
    """Issue 19: bins like [15, 34] for a column declared 18..100 ignored the registration."""
    path = tmp_path / "patients.csv"
    _patients().to_csv(path, index=False)
    assert run(capsys, "init")[0] == 0
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "patients", "--bounds", "age=18:100"
    )
    assert code == 0, err
    released = tmp_path / "released.csv"
    code, out, err = run(
        capsys,
        "anonymize",
        "patients",
        "--qi",
        "age,sex",
        "--k",
        "10",
        "--algorithm",
        "full-domain",
        "-o",
        str(released),
    )
    assert code == 0, err
    assert "bounds declared at registration" in " ".join(out.split())
    ages = pd.read_csv(released)["age"].astype(str)
    intervals = ages[ages.str.startswith("[")].str.strip("[]").str.split(",", expand=True)
    assert not intervals.empty
    lows, highs = intervals[0].astype(float), intervals[1].astype(float)
    assert lows.min() == 18 and highs.max() <= 100, sorted(set(ages))  # not [15, 24]
    # the same file given by its path is the registered data: the same bounds apply
    code, out, err = run(
        capsys, "anonymize", str(path), "--qi", "age,sex", "--k", "10", "-o", str(released)
    )
    assert code == 0, err
    assert "bounds declared at registration: age used 18..100" in " ".join(out.split())
    # a file changed since registration is refused, never read around the catalogue
    before = released.read_bytes()
    _patients(seed=7).to_csv(path, index=False)
    code, out, err = run(
        capsys, "anonymize", str(path), "--qi", "age,sex", "--k", "10", "-o", str(released)
    )
    assert code == 3, err
    text = " ".join(err.split())
    assert "is registered as 'patients'" in text
    assert "changed since it was registered" in text
    assert released.read_bytes() == before


def test_scan_says_what_journalist_risk_means_without_a_population(capsys, tmp_path):
    """Issue 19: "journalist risk: max 1.000 (none)" said nothing to a reader."""
    path = tmp_path / "patients.csv"
    _patients().to_csv(path, index=False)
    code, out, err = run(capsys, "scan", str(path), "--qi", "age,sex", "--no-pii")
    assert code == 0, err
    text = " ".join(out.split())
    assert "(none)" not in text
    assert "no population given" in text


def test_a_strict_minority_of_text_is_never_rounded_to_100_percent_numbers(capsys, tmp_path):
    """Issue 19: "Got 100% numbers" for 7,213 numbers out of 7,214 values."""
    frame = _patients(n=2000)
    frame["age"] = frame["age"].astype(str)
    frame.loc[7, "age"] = "unknown"
    path = tmp_path / "patients.csv"
    frame.to_csv(path, index=False)
    released = tmp_path / "released.csv"
    code, _, err = run(
        capsys, "anonymize", str(path), "--qi", "age,sex", "--k", "5", "-o", str(released)
    )
    message = " ".join(err.split())
    assert code == 3, err
    assert "100% numbers" not in message
    assert "1,999 of 2,000" in message
    assert not released.exists()


def test_zip_codes_with_leading_zeros_stay_text(capsys, tmp_path):
    """A fresh CSV's ZIP codes (02139) were read as numbers (2139) and released as [2139, 2141]."""
    frame = _patients()
    frame["zip"] = [f"0{2100 + i % 40}" for i in range(len(frame))]
    path = tmp_path / "patients.csv"
    frame.to_csv(path, index=False)
    released = tmp_path / "released.csv"
    code, _, err = run(
        capsys, "anonymize", str(path), "--qi", "zip,sex", "--k", "5", "-o", str(released)
    )
    assert code == 0, err
    zips = pd.read_csv(released, dtype=str)["zip"]
    assert zips.str.match(r"^(0\d{4}|\*)$").all(), sorted(set(zips))[:5]
    assert (zips != "*").any()
    from veil.data import load_table

    loaded = load_table(path)
    assert loaded["zip"].iloc[0] == "02100"
    assert pd.api.types.is_integer_dtype(loaded["age"])  # other numbers stay numbers


def test_columns_released_as_read_are_named_and_the_ones_that_undo_k_warned(capsys, tmp_path):
    """A new user's `--qi Ward --k 2` released a name column as it was, and said only "k met"."""
    path = tmp_path / "patients.csv"
    frame = _patients().assign(
        ward=lambda f: np.where(f["age"] < 50, "north", "south"), site="clinic-1"
    )
    frame.to_csv(path, index=False)
    released, report = tmp_path / "released.csv", tmp_path / "report.json"
    code, out, err = run(
        capsys, "anonymize", str(path), "--qi", "ward", "--k", "2", "-o", str(released)
    )
    assert code == 0, err
    assert "k met" in out
    message = " ".join(err.split())
    assert "WARNING: k holds for the quasi-identifiers only" in message
    assert "patient_id (k 1, 300 rows unique)" in message  # a direct identifier
    assert "age (k 1," in message  # an undeclared quasi-identifier
    assert "Fix: add the ones an attacker may know to --qi" in message
    assert list(pd.read_csv(released).columns) == list(frame.columns)  # released all the same

    assert "site (k" not in message  # one value for all: it undoes nothing

    # Declared or transformed, nothing undoes k: a note names what went out as read.
    code, out, err = run(
        capsys,
        "anonymize",
        str(path),
        "--qi",
        "ward,age,sex",
        "--sensitive",
        "diagnosis",
        "--op",
        "patient_id:drop",
        "--k",
        "2",
        "-o",
        str(released),
        "--report",
        str(report),
    )
    assert code == 0, err
    assert "WARNING" not in err
    assert "Released as read (no generalisation, no operator): site." in " ".join(err.split())
    [site] = json.loads(report.read_text(encoding="utf-8"))["unchanged"]
    assert site["column"] == "site" and site["unique_rows"] == 0 and site["k_with_it"] >= 2

    code, out, err = run(
        capsys,
        "anonymize",
        str(path),
        "--qi",
        "ward,age",
        "--k",
        "2",
        "-o",
        str(released),
        "--json",
    )
    unchanged = {c["column"]: c for c in json.loads(out)["unchanged"]}
    assert set(unchanged) == {"patient_id", "sex", "diagnosis", "site"}
    assert unchanged["patient_id"] == {"column": "patient_id", "k_with_it": 1, "unique_rows": 300}
    assert code == 0, err
    assert "WARNING: k holds for the quasi-identifiers only" in " ".join(err.split())  # also
