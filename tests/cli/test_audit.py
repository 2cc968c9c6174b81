"""`veil audit`: the report (HTML with plots, JSON), verdicts against the card, and refusals."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from veil.cli._app import main

pytestmark = [
    pytest.mark.slow,  # a DP model trained, then audited with references and canaries
    pytest.mark.xdist_group("cli-audit"),  # one worker builds the module's fixture, once
]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with digits registered and one DP model trained, built once for the module."""
    root = tmp_path_factory.mktemp("audit-workspace")
    with pytest.MonkeyPatch.context() as patch:  # the isolation of the autouse fixture, for once
        for key in [k for k in os.environ if k.startswith("VEIL_") and k != "VEIL_TEST_DATA"]:
            patch.delenv(key)
        patch.chdir(root)
        assert main(["init"]) == 0
        for name, split in (("digits", "train"), ("digits-test", "test")):
            assert (
                main(["datasets", "add", "sklearn:digits", "--name", name, "--split", split]) == 0
            )
        assert main(["budget", "set", "digits", "--epsilon", "3", "--delta", "1e-4"]) == 0
        train = "train --dataset digits --model logreg --epsilon 2 --delta 1e-4 --epochs 4"
        assert main([*train.split(), "--batch-size", "64", "--name", "dl"]) == 0
    return root / ".veil"


@pytest.fixture
def trained(trained_workspace: Path, tmp_path: Path) -> str:
    """A copy of the trained workspace in the test's own directory (each test may write to it)."""
    shutil.copytree(trained_workspace, tmp_path / ".veil")
    return "dl"


AUDIT = (
    "audit",
    "--model",
    "dl",
    "--test",
    "digits-test",
    "--references",
    "2",
    "--max-points",
    "200",
    "--canaries",
    "40",
)


def test_audit_writes_the_report_and_puts_the_measure_beside_the_claim(capsys, trained):
    code, out, err = run(capsys, *AUDIT, "-o", "report.html", "--json-out", "report.json", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["claimed"]["epsilon"] <= 2.0 and payload["claimed"]["private"] is True
    attacks = {v["attack"]: v for v in payload["verdicts"]}
    assert set(attacks) == {"membership", "dp", "inversion", "extraction", "utility"}
    assert payload["utility"]["rows"] > 0 and "majority_rate" in payload["utility"]
    assert attacks["dp"]["headline"].startswith("measured epsilon >=")
    assert {m["attack"] for m in payload["membership"]} >= {
        "lira-online",
        "rmia-offline",
        "label-only",
    }
    assert all(m["settings"]["reference_models"] in (0, 2) for m in payload["membership"])
    assert any("no categorical features" in n for n in payload["notes"])
    html = Path("report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3  # ROC, inversion images, extraction curve
    assert "Claimed guarantee" in html and "digits-test" in html
    full = json.loads(Path("report.json").read_text(encoding="utf-8"))
    scores = full["membership"][0]["per_example"]
    assert len(scores["score"]) == len(scores["member"]) == 400


def test_audit_prints_verdicts_for_people(capsys, trained):
    code, out, err = run(capsys, *AUDIT, "--attacks", "mia", "-o", "r.html")
    assert code == 0, err
    assert "privacy audit of dl" in out and "membership" in out and "lira-online" in out
    assert Path("r.html").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--train", "digits-test"), "is not the data model"),
        (("--attacks", "mia,magic"), "unknown attack"),
        (("--references", "3"), "even"),
        (("--test", "digits"), "the test set is the training set"),
    ],
)
def test_bad_requests_fail_cleanly_and_write_nothing(capsys, trained, extra, message):
    args = list(AUDIT)
    if extra[0] == "--test":
        args[args.index("digits-test")] = extra[1]
        extra = ()
    code, _, err = run(capsys, *args, *extra, "-o", "bad.html")
    assert code == 3, err  # invalid input
    assert message in err.replace("\n", " ")
    assert not Path("bad.html").exists()


def test_a_report_that_is_not_html_is_refused(capsys, trained):
    code, _, err = run(capsys, *AUDIT, "-o", "report.txt")
    assert code == 3 and "HTML" in err
    code, _, err = run(capsys, "audit", "--model", "nope", "--test", "digits-test")
    assert code == 6 and "no model named" in err
