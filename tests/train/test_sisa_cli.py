"""`veil train --shards S --slices R`: a SISA ensemble through the CLI, its card, and refusals."""

from __future__ import annotations

import json

import pytest

from veil.cli._app import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def digits(capsys) -> str:
    assert run(capsys, "init")[0] == 0
    assert run(capsys, "datasets", "add", "sklearn:digits", "--name", "digits")[0] == 0
    return "digits"


TRAIN = ("train", "--dataset", "digits", "--model", "logreg", "--epochs", "2", "--non-private")


def test_shards_and_slices_train_an_ensemble_that_models_show_describes(capsys, digits):
    code, out, err = run(capsys, *TRAIN, "--shards", "3", "--slices", "2", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["name"] == "digits-logreg-nonprivate-sisa3x2"
    sisa = payload["card"]["sisa"]
    assert (sisa["shards"], sisa["slices"], sisa["epochs_per_slice"]) == (3, 2, 1)
    # No privacy unit, but fixed reference data: rows stand for persons, and the card says so.
    assert payload["card"]["membership"].startswith("tracked by row position")
    code, out, _ = run(capsys, "models", "show", "digits-logreg-nonprivate-sisa3x2")
    assert code == 0
    assert "SISA ensemble" in out and "3 shards x 2 slices" in out


@pytest.mark.parametrize("option", ["--shards", "--slices"])
def test_zero_shards_or_slices_are_refused_before_anything_runs(capsys, digits, option):
    code, _, err = run(capsys, *TRAIN, option, "0")
    assert code != 0
    assert f"{option} must be at least 1" in err
    assert run(capsys, "models", "list", "--json")[1].strip() == "[]"


def test_a_managed_table_without_a_privacy_unit_is_refused_with_a_fix_that_exists(
    capsys, monkeypatch
):
    monkeypatch.setenv("VEIL_VAULT_KEY", "ab" * 32)
    assert run(capsys, "init")[0] == 0
    add = ("datasets", "add", "sklearn:digits", "--name", "digits", "--managed")
    assert run(capsys, *add)[0] == 0
    code, _, err = run(capsys, *TRAIN, "--shards", "2", "--slices", "2")
    assert code == 3
    # The fix names an option `veil datasets update` has (it once said --privacy-unit).
    assert "veil datasets update digits --id COLUMN" in " ".join(err.split())
    assert run(capsys, "models", "list", "--json")[1].strip() == "[]"
