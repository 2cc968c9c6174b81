"""A model trained before an erasure carries the erased person: `veil models show` says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.governance._data import write_csv

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # trains a small model through the CLI

PEOPLE = 120


def _people(tmp_path: Path) -> Path:
    rows = [
        {
            "pid": f"Q-{i:04d}",
            "age": 20 + (i * 7) % 60,
            "hours": 10 + (i * 13) % 50,
            "outcome": "yes" if (i * 7) % 60 > 30 else "no",
        }
        for i in range(PEOPLE)
    ]
    return write_csv(tmp_path / "people.csv", rows)


@pytest.fixture
def trained(tmp_path, cli, vault_key) -> str:
    """`people` (managed, one row per person) and a non-private model `m` trained on it."""
    assert cli("init")[0] == 0
    code, _, err = cli(
        "datasets", "add", str(_people(tmp_path)), "--name", "people", "--managed", "--id", "pid",
        "--bounds", "age=0:120,hours=0:100", "--categories", "outcome=no|yes",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = cli(
        "train", "--dataset", "people", "--model", "logreg", "--non-private", "--epochs", "1",
        "--batch-size", "32", "--label", "outcome", "--name", "m",
    )  # fmt: skip
    assert code == 0, err
    return "m"


def test_models_show_counts_the_erased_people_a_model_still_carries(cli, trained):
    code, out, _ = cli("models", "show", "m", "--json")
    assert code == 0
    before = json.loads(out)
    assert before["erased_people"] == 0 and before["lineage"]["members_known"]
    code, out, err = cli("erase", "people", "--person", "Q-0007", "--reason", "request", "--json")
    assert code == 0, err
    report = json.loads(out)
    (model,) = [a for a in report["affected"] if a["kind"] == "model"]
    assert (model["name"], model["model_kind"], model["erased_people"]) == ("m", "non-private", 1)
    assert model["action"] == "non-private model: retrain or retire"
    assert cli("erase", "people", "--person", "Q-0008", "--reason", "request")[0] == 0
    code, out, _ = cli("models", "show", "m", "--json")
    shown = json.loads(out)
    assert shown["erased_people"] == 2
    assert shown["lineage"]["trained_on_version"] == 1
    assert shown["lineage"]["versions_behind"] == 2
    assert shown["lineage"]["advice"] == "non-private model: retrain or retire"
    code, out, _ = cli("models", "show", "m")
    assert "carries 2 erased people: non-private model: retrain or retire" in " ".join(out.split())
    code, out, _ = cli("models", "list", "--json")
    assert [(m["model"], m["erased_people"]) for m in json.loads(out)] == [("m", 2)]
    code, out, _ = cli("models", "list")
    assert "erased" in out


def test_erase_unlearns_a_sisa_model_that_carries_the_person(cli, tmp_path, vault_key):
    assert cli("init")[0] == 0
    code, _, err = cli(
        "datasets", "add", str(_people(tmp_path)), "--name", "people", "--managed", "--id", "pid",
        "--bounds", "age=0:120,hours=0:100", "--categories", "outcome=no|yes",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = cli(
        "train", "--dataset", "people", "--model", "logreg", "--non-private", "--epochs", "1",
        "--batch-size", "16", "--label", "outcome", "--name", "ens", "--shards", "3",
        "--slices", "2",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli("erase", "people", "--person", "Q-0007", "--reason", "request", "--json")
    assert code == 0, err
    report = json.loads(out)
    (result,) = report["unlearning"]
    assert result["model"] == "ens" and result["ok"], result
    (model,) = report["affected"]
    assert model["model_kind"] == "sisa" and model["action"].startswith("unlearned")
    # No held-out set was registered (--test), so the forgetting check could not run: the
    # report must not call the model verified.
    assert result["verification"]["run"] is False
    assert model["action"] == "unlearned (not verified)"
    code, out, _ = cli("models", "show", "ens", "--json")
    assert json.loads(out)["erased_people"] == 0
    code, out, err = cli(
        "erase", "people", "--person", "Q-0008", "--reason", "request", "--no-unlearn", "--json"
    )
    assert code == 0, err
    (model,) = json.loads(out)["affected"]
    assert (model["erased_people"], model["action"]) == (1, "SISA: run veil unlearn ens")
