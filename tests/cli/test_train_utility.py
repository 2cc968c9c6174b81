"""A DP model that learned nothing is said to have no utility."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from veil.cli._app import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _table(rows: int, seed: int) -> pd.DataFrame:
    # The label is independent of every feature and 70/30: no model beats always guessing "no".
    # Whatever the DP noise, accuracy above the majority rate by the margin the check uses
    # (1.96 standard errors plus both noises' 95% half-widths) has probability < 1e-6 here.
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 91, rows),
            "hours": rng.integers(1, 100, rows),
            "sex": rng.choice(["F", "M"], rows),
            "defaulted": np.where(rng.random(rows) < 0.3, "yes", "no"),
        }
    )


@pytest.mark.slow
def test_a_model_that_learned_nothing_is_flagged(capsys, tmp_path, seed):
    train, test = tmp_path / "credit.csv", tmp_path / "credit-test.csv"
    _table(667, seed).to_csv(train, index=False)
    _table(2000, seed + 1).to_csv(test, index=False)
    assert run(capsys, "init")[0] == 0
    for path, name in ((train, "credit"), (test, "credit-test")):
        code, _, err = run(
            capsys, "datasets", "add", str(path), "--name", name,
            "--bounds", "age=18:90,hours=1:99", "--categories", "sex=F|M", "--categories", "defaulted=no|yes",
        )  # fmt: skip
        assert code == 0, err
        assert run(capsys, "budget", "set", name, "--epsilon", "3", "--delta", "1e-5")[0] == 0
    code, out, err = run(
        capsys, "train", "--dataset", "credit", "--label", "defaulted", "--model", "logreg",
        "--epsilon", "1", "--delta", "1e-5", "--test", "credit-test", "--name", "credit-dp",
    )  # fmt: skip
    assert code == 0, err
    assert "no utility" in err
    assert "majority-class rate" in out
    code, out, _ = run(capsys, "models", "show", "credit-dp", "--json")
    card = json.loads(out)
    assert card["test_no_utility"] is True
    assert 0.6 < card["test_majority_rate"] < 0.8
    # Both releases are one event on the test set's ledger, within --test-epsilon.
    code, out, _ = run(capsys, "budget", "show", "credit-test", "--json")
    assert json.loads(out)["spent"]["epsilon"] <= 0.1 + 1e-3


@pytest.mark.slow
def test_a_budget_without_delta_says_that_dp_sgd_needs_one(capsys):
    """A new user's `budget set D --epsilon 3` then `veil train` got 'epsilon=inf' and no hint."""
    assert run(capsys, "init")[0] == 0
    assert run(capsys, "datasets", "add", "sklearn:digits", "--name", "digits")[0] == 0
    assert run(capsys, "budget", "set", "digits", "--epsilon", "3")[0] == 0
    code, _, err = run(
        capsys, "train", "--dataset", "digits", "--model", "logreg", "--epsilon", "1"
    )
    assert code == 8
    flat = " ".join(err.split())
    assert "needs a delta > 0" in flat
    assert "veil budget set digits --epsilon 3 --delta 1e-05" in flat
