"""`veil datasets update / remove / suggest-categories` and `--categories-from`.

A user who forgot `--bounds` on a 0/1 column had to register the data again
under a new name. These tests fix registrations in place, remove them, and
check the ledger's rules on the way: a dataset with charges keeps its history,
and registering the same data again never gives it a fresh budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from veil.cli._app import main
from veil.data import Catalog
from veil.workspace import login_name

SAVINGS = ["little", "moderate", "0 <= ... < 200 DM ", "no checking account"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def credit(path: Path, n: int = 400, seed: int = 42) -> Path:
    """A fresh credit table: an id, a 0/1 label, an amount, a category with a trailing space."""
    rng = np.random.default_rng(seed)
    pd.DataFrame(
        {
            "customer": [f"C{i:05d}" for i in range(n)],
            "age": rng.integers(19, 75, n),
            "amount": rng.integers(250, 18000, n),
            "checking": rng.choice(SAVINGS, n),
            "default": rng.integers(0, 2, n),
        }
    ).to_csv(path, index=False)
    return path


def show(capsys: pytest.CaptureFixture[str], name: str) -> dict:
    code, out, err = run(capsys, "datasets", "show", name, "--json")
    assert code == 0, err
    return json.loads(out)


def spent(capsys: pytest.CaptureFixture[str], name: str) -> float:
    code, out, err = run(capsys, "budget", "show", name, "--json")
    assert code == 0, err
    return float(json.loads(out)["spent"]["epsilon"])


@pytest.fixture
def workspace(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "init")[0] == 0


@pytest.mark.slow
@pytest.mark.usefixtures("workspace")
def test_update_redeclares_bounds_categories_and_roles_in_place(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    before = show(capsys, "credit")
    code, out, err = run(
        capsys,
        "datasets",
        "update",
        "credit",
        "--bounds",
        "age=18:100",
        "--categories",
        "default=0|1",
        "--id",
        "customer",
        "--qi",
        "age",
        "--sensitive",
        "default",
    )
    assert code == 0, err
    assert "Updated 'credit'" in out
    after = show(capsys, "credit")
    columns = {c["name"]: c for c in after["schema"]["columns"]}
    assert columns["age"]["bounds"] == [18, 100]
    assert columns["default"]["kind"] == "categorical"
    assert columns["default"]["categories"] == ["0", "1"]
    assert after["schema"]["privacy_unit"] == "customer"
    assert after["schema"]["quasi_identifiers"] == ["age"]
    assert after["schema"]["sensitive"] == ["default"]
    assert after["content_sha256"] == before["content_sha256"]
    assert after["created_at"] == before["created_at"]
    history = after["registration_report"]["updates"]
    assert len(history) == 1 and history[0]["by"] == login_name()
    # declarations not named in an update are kept
    assert run(capsys, "datasets", "update", "credit", "--bounds", "amount=0:20000")[0] == 0
    kept = {c["name"]: c for c in show(capsys, "credit")["schema"]["columns"]}
    assert kept["age"]["bounds"] == [18, 100] and kept["amount"]["bounds"] == [0, 20000]


@pytest.mark.slow
@pytest.mark.usefixtures("workspace")
def test_an_update_the_data_contradicts_changes_nothing(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    before = show(capsys, "credit")
    code, _, err = run(capsys, "datasets", "update", "credit", "--bounds", "checking=0:1")
    assert code == 4, err
    assert "not a finite number" in " ".join(err.split())
    code, _, err = run(capsys, "datasets", "update", "credit", "--categories", "default=0")
    assert code == 4, err
    assert "outside its declared categories" in " ".join(err.split())
    assert show(capsys, "credit") == before
    # the file changed since registration: an update would bless other data
    credit(path, seed=7)
    code, _, err = run(capsys, "datasets", "update", "credit", "--bounds", "age=18:100")
    assert code == 3, err
    assert "changed since it was registered" in " ".join(err.split())
    assert show(capsys, "credit") == before
    code, _, err = run(capsys, "datasets", "update", "nope", "--bounds", "age=18:100")
    assert code == 6, err


@pytest.mark.slow
@pytest.mark.usefixtures("workspace")
def test_remove_without_charges_forgets_the_registration(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    code, out, err = run(capsys, "datasets", "remove", "credit")
    assert code == 0, err
    assert "Removed 'credit'" in out
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert json.loads(out) == []
    assert path.is_file(), "removing a registration never deletes the user's file"
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    code, _, err = run(capsys, "datasets", "remove", "nope")
    assert code == 6, err


@pytest.mark.slow
@pytest.mark.usefixtures("workspace")
def test_remove_with_charges_archives_and_the_same_data_rejoins_its_spent_budget(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    assert run(capsys, "budget", "set", "credit", "--epsilon", "1")[0] == 0
    sql = "SELECT COUNT(*) FROM t"
    code, _, err = run(capsys, "query", "credit", "--sql", sql, "--epsilon", "0.5")
    assert code == 0, err
    code, out, err = run(capsys, "datasets", "remove", "credit")
    assert code == 0, err
    text = " ".join(out.split())
    assert "archived" in text and "1 release" in text
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert json.loads(out) == []
    code, out, _ = run(capsys, "datasets", "list", "--archived", "--json")
    (archived,) = json.loads(out)
    assert archived["archived"]["name"] == "credit"
    # the same bytes registered again, under any name, come back with their charges
    code, out, err = run(capsys, "datasets", "add", str(path), "--name", "credit-again")
    assert code == 0, err
    assert "rejoins" in " ".join(out.split())
    assert spent(capsys, "credit-again") == pytest.approx(0.5)
    code, _, err = run(capsys, "query", "credit-again", "--sql", sql, "--epsilon", "0.6")
    assert code == 8, err  # 0.5 + 0.6 > 1: the budget was not reset


@pytest.mark.usefixtures("workspace")
def test_the_same_data_under_a_new_name_never_gets_a_fresh_budget(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    assert run(capsys, "budget", "set", "credit", "--epsilon", "1")[0] == 0
    copy = tmp_path / "copy-of-credit.csv"
    copy.write_bytes(path.read_bytes())
    code, _, err = run(capsys, "datasets", "add", str(copy), "--name", "credit-2")
    message = " ".join(err.split())
    assert code == 7, err
    assert "'credit'" in message and "veil datasets update credit" in message
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert [d["name"] for d in json.loads(out)] == ["credit"]


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_categories_from_a_codebook_keep_exact_strings(capsys, tmp_path, suffix):
    path = credit(tmp_path / "credit.csv")
    codebook = tmp_path / f"codebook{suffix}"
    book = {"checking": SAVINGS, "default": [0, 1]}
    if suffix == ".json":
        codebook.write_text(json.dumps(book), encoding="utf-8")
    else:
        codebook.write_text(yaml.safe_dump(book), encoding="utf-8")
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "credit", "--categories-from", str(codebook)
    )
    assert code == 0, err
    columns = {c["name"]: c for c in show(capsys, "credit")["schema"]["columns"]}
    assert columns["checking"]["categories"] == SAVINGS  # the trailing space kept
    assert columns["default"]["categories"] == ["0", "1"]


@pytest.mark.usefixtures("workspace")
def test_a_bad_codebook_is_refused_and_nothing_is_registered(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    short = tmp_path / "short.yaml"
    short.write_text("checking: [little, moderate]\n", encoding="utf-8")
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "credit", "--categories-from", str(short)
    )
    assert code == 4, err
    assert "0 <= ... < 200 DM " in err
    flat = tmp_path / "flat.yaml"
    flat.write_text("- little\n- moderate\n", encoding="utf-8")
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "credit", "--categories-from", str(flat)
    )
    assert code == 3, err
    assert "column" in err and "list of categories" in " ".join(err.split())
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "c", "--categories-from", "missing.yaml"
    )
    assert code == 6, err
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert json.loads(out) == []


def test_suggest_categories_warns_that_it_leaks_and_writes_a_usable_codebook(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    codebook = tmp_path / "codebook.yaml"
    code, out, err = run(capsys, "datasets", "suggest-categories", str(path), "-o", str(codebook))
    assert code == 0, err
    assert "PRIVACY LEAK WARNING" in err
    book = yaml.safe_load(codebook.read_text(encoding="utf-8"))
    assert sorted(book["checking"]) == sorted(SAVINGS)
    assert book["default"] == ["0", "1"]
    assert "customer" not in book  # one value per row: an identifier, not a category
    assert "customer" in " ".join(out.split())  # and the user is told why it was left out
    assert run(capsys, "init")[0] == 0
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "credit", "--categories-from", str(codebook)
    )
    assert code == 0, err
    assert Catalog.open().get("credit").schema.column("checking").categories == tuple(
        sorted(SAVINGS)
    )


@pytest.mark.usefixtures("workspace")
def test_update_switches_a_declaration_and_drops_the_privacy_unit(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    code, _, err = run(
        capsys,
        "datasets",
        "add",
        str(path),
        "--name",
        "credit",
        "--id",
        "customer",
        "--bounds",
        "default=0:1",
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "datasets", "update", "credit", "--id", "", "--categories", "default=0|1"
    )
    assert code == 0, err
    schema = show(capsys, "credit")["schema"]
    assert schema["privacy_unit"] is None
    (default,) = [c for c in schema["columns"] if c["name"] == "default"]
    assert default["kind"] == "categorical" and default["categories"] == ["0", "1"]
    assert default["bounds"] is None


@pytest.mark.slow
@pytest.mark.usefixtures("workspace")
def test_the_same_bytes_twice_before_any_budget_are_refused(capsys, tmp_path):
    """Issue 20: a copy registered before any budget was a second, fresh budget; now refused."""
    path = credit(tmp_path / "credit.csv")
    copy = tmp_path / "copy-of-credit.csv"
    copy.write_bytes(path.read_bytes())
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    code, out, err = run(capsys, "datasets", "add", str(copy), "--name", "credit-copy")
    message = " ".join(err.split())
    assert code == 7, out + err  # conflict
    assert "already registered as 'credit'" in message
    assert "use the name 'credit'" in message and "veil datasets update credit" in message
    assert "Traceback" not in err + out
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert [d["name"] for d in json.loads(out)] == ["credit"]
    # the one registration of these bytes is the one budget: exhausted, nothing else releases
    assert run(capsys, "budget", "set", "credit", "--epsilon", "0.5")[0] == 0
    sql = "SELECT COUNT(*) FROM t"
    assert run(capsys, "query", "credit", "--sql", sql, "--epsilon", "0.5")[0] == 0
    assert run(capsys, "query", "credit", "--sql", sql, "--epsilon", "0.5")[0] == 8
    assert run(capsys, "datasets", "add", str(copy), "--name", "credit-copy")[0] == 7
    assert run(capsys, "query", "credit-copy", "--sql", sql, "--epsilon", "0.5")[0] != 0
    # a fix of the declarations goes through `update`, on the same name and budget
    code, _, err = run(capsys, "datasets", "update", "credit", "--bounds", "age=18:100")
    assert code == 0, err
    assert spent(capsys, "credit") == pytest.approx(0.5)


@pytest.mark.usefixtures("workspace")
def test_the_same_bytes_refused_as_json_name_the_registration(capsys, tmp_path):
    path = credit(tmp_path / "credit.csv")
    assert run(capsys, "datasets", "add", str(path), "--name", "credit")[0] == 0
    code, out, err = run(capsys, "datasets", "add", str(path), "--name", "credit-2", "--json")
    assert code == 7, out + err
    error = json.loads(out)["error"]
    assert error["code"] == "conflict"
    assert error["details"] == {"dataset": "credit", "same_data": ["credit"]}
    assert error["got"].startswith("SHA-256 ") and "'credit'" in error["got"]


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("checking: [little, little]\n", "twice"),
        ("checking: [[1, 2]]\n", "not a string or a number"),
        ("checking: little\n", "not a list of categories"),
    ],
)
def test_codebook_entries_that_cannot_be_categories_are_refused(capsys, tmp_path, text, message):
    path = credit(tmp_path / "credit.csv")
    codebook = tmp_path / "codebook.yaml"
    codebook.write_text(text, encoding="utf-8")
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "credit", "--categories-from", str(codebook)
    )
    assert code == 3, err
    assert message in " ".join(err.split())
    code, out, _ = run(capsys, "datasets", "list", "--json")
    assert json.loads(out) == []
