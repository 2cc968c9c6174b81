"""`veil train` and `veil models`: the issue's commands, JSON, the card, refusals and exit codes."""

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
    assert run(capsys, "budget", "set", "digits", "--epsilon", "3", "--delta", "1e-4")[0] == 0
    return "digits"


TRAIN = (
    "train",
    "--dataset",
    "digits",
    "--model",
    "logreg",
    "--delta",
    "1e-4",
    "--epochs",
    "2",
    "--batch-size",
    "100",
)

pytestmark = pytest.mark.slow  # each test trains a model through the CLI


def test_train_prints_the_card_and_models_show_it_again(capsys, digits):
    code, out, err = run(capsys, *TRAIN, "--epsilon", "1", "--name", "d1")
    assert code == 0, err
    for label in (
        "privacy card",
        "epsilon",
        "noise multiplier",
        "clipping norm",
        "poisson",
        "ledger event",
    ):
        assert label in out
    code, out, _ = run(capsys, "models", "show", "d1", "--json")
    card = json.loads(out)
    assert code == 0
    assert card["model"] == "d1" and card["dataset"] == "digits"
    assert card["epsilon"] <= 1.0 and card["delta"] == 1e-4
    assert card["steps"] == 2 * 18 and card["ledger_event_id"] == 1
    code, out, _ = run(capsys, "models", "list", "--json")
    assert [c["model"] for c in json.loads(out)] == ["d1"]
    code, out, _ = run(capsys, "models", "list")
    assert "d1" in out


def test_train_json_has_the_history_and_the_budget(capsys, digits):
    code, out, _ = run(capsys, *TRAIN, "--epsilon", "1", "--json")
    payload = json.loads(out)
    assert code == 0
    assert payload["name"] == "digits-logreg-eps1"
    assert len(payload["training"]["history"]) == 2
    assert payload["budget"]["spent"]["epsilon"] == pytest.approx(
        payload["card"]["epsilon"], rel=1e-6
    )


def test_over_budget_exits_8_and_charges_nothing(capsys, digits):
    code, out, err = run(capsys, *TRAIN, "--epsilon", "5", "--json")
    assert code == 8
    assert json.loads(out)["error"]["code"] == "budget_exceeded"
    assert "nothing was computed or charged" in err
    code, out, _ = run(capsys, "budget", "history", "digits", "--json")
    assert [e for e in json.loads(out)["history"] if e["type"] != "budget"] == []
    assert json.loads(run(capsys, "models", "list", "--json")[1]) == []


def test_unreachable_target_exits_3_with_the_knob(capsys, digits):
    code, _, err = run(
        capsys, *TRAIN[:-4], "--epochs", "2000", "--batch-size", "1000", "--epsilon", "0.01"
    )
    assert code == 3
    assert "--epochs" in err


def test_models_list_says_when_there_is_none(capsys, digits):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert out.startswith("No models yet: train one with `veil train")
    code, out, _ = run(capsys, "models", "list", "--json")
    assert (code, out.strip()) == (0, "[]")


def test_models_list_tells_a_key_that_reads_no_model_why_it_sees_none(
    capsys, digits, monkeypatch: pytest.MonkeyPatch
):
    assert run(capsys, *TRAIN, "--epsilon", "1", "--name", "d1")[0] == 0
    code, out, _ = run(capsys, "keys", "create", "shop", "--role", "consumer", "--json")
    assert code == 0
    monkeypatch.setenv("VEIL_KEY", json.loads(out)["token"])
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert out.startswith("No model you may read (1 in this workspace)")


def test_unknown_model_and_missing_model(capsys, digits):
    code, _, err = run(capsys, *TRAIN, "--epsilon", "1", "--model", "forest")
    assert code == 3 and "logreg" in err
    code, _, err = run(capsys, "models", "show", "nope")
    assert code == 6 and "veil models list" in err
