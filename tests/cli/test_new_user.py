"""A new user's first hour: every `veil` subcommand, default flags, on a CSV no test was designed for.

Issue 19: a user tried Veil on public tables it had never seen and hit
"unexpected error" (exit 1) in commands whose tests only used the flags and
data sets they were written for. This test generates a fresh table with an
identifier, free text (names, notes with phone numbers), dates, a zip code
with leading zeros, missing values and a trailing space in a category, and
runs each subcommand with only the arguments it requires. Any exit code is
acceptable except 1: a documented refusal (docs/errors.md) is a fine answer
to a new user; a traceback is not.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from veil.cli._app import EXIT_BUG, main

FIRST = ["Maria", "John", "Aisha", "Wei", "Olga", "Pedro", "Fatima", "Liam", "Noor", "Kenji"]
LAST = ["Garcia", "Smith", "Khan", "Chen", "Ivanova", "Silva", "Haddad", "Murphy", "Ali", "Sato"]

# What cannot run on a CSV, and why (everything else below runs):
NOT_ON_A_CSV = {
    "demo": "runs the tour on bundled data (UCI Adult, MNIST); it takes no user file",
    "bench *": "benchmarks on fixed public data sets (Adult, MNIST); they take no user file",
    "federate serve / join": "long-running Flower processes that run until Ctrl-C",
    "he compile / infer / decrypt / demo": "need a trained model or a server's response, not a CSV",
}


def visits(seed: int, n: int = 600, prefix: str = "P") -> pd.DataFrame:
    """A table that looks like a user's export: ids, names, dates, free text, gaps."""
    rng = np.random.default_rng(seed)
    start = dt.date(2019, 1, 1)
    frame = pd.DataFrame(
        {
            "patient_id": [f"{prefix}{100000 + i}" for i in range(n)],
            "full_name": [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(n)],
            "visit_date": [
                (start + dt.timedelta(days=int(d))).isoformat() for d in rng.integers(0, 1500, n)
            ],
            "age": rng.integers(18, 90, n),
            "zip": [f"0{z}" for z in rng.integers(2100, 2199, n)],
            "sex": rng.choice(["F", "M"], n),
            "income": np.round(rng.normal(52000, 15000, n), 2),
            "notes": [
                f"Seen by Dr. {rng.choice(LAST)}; call {rng.integers(200, 999)}-555-"
                f"{rng.integers(1000, 9999)} if worse."
                for _ in range(n)
            ],
            "diagnosis": rng.choice(["flu", "asthma", "diabetes", "none "], n),
            "readmitted": rng.integers(0, 2, n),
        }
    )
    frame.loc[rng.choice(n, 10, replace=False), "income"] = np.nan
    return frame


@pytest.mark.slow
def test_every_subcommand_with_default_flags_on_a_fresh_csv(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setenv("VEIL_VAULT_KEY", "11" * 32)
    train_csv, test_csv = tmp_path / "visits.csv", tmp_path / "visits_test.csv"
    visits(seed).to_csv(train_csv, index=False)
    visits(seed + 1, prefix="Q").to_csv(test_csv, index=False)
    semicolons = tmp_path / "visits_semicolon.csv"
    visits(seed).to_csv(semicolons, index=False, sep=";")
    codebook = tmp_path / "codebook.yaml"
    codebook.write_text('readmitted: ["0", "1"]\n', encoding="utf-8")
    train, test, semi = str(train_csv), str(test_csv), str(semicolons)
    bounds = "age=0:120,income=0:500000"
    # (arguments, whether a new user must succeed with them: None = any documented answer)
    session: list[tuple[tuple[str, ...], bool]] = [
        (("init",), True),
        (("db", "status"), True),
        (("db", "upgrade"), True),
        (("datasets", "add", train, "--name", "visits"), True),
        (("datasets", "add", test, "--name", "visits-test"), True),
        (("datasets", "list"), True),
        (("datasets", "show", "visits"), True),
        (("datasets", "suggest-bounds", train), True),
        (("datasets", "suggest-categories", train), True),
        (("budget", "set", "visits", "--epsilon", "3"), True),
        (("budget", "set", "visits-test", "--epsilon", "3"), True),
        (("budget", "show", "visits"), True),
        (("budget", "history", "visits"), True),
        (("query", "visits", "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "0.5"), True),
        (("query", "visits", "--sql", "SELECT AVG(income) FROM t", "--epsilon", "0.5"), False),
        (("train", "--dataset", "visits", "--epsilon", "1"), False),
        # the user reads the refusals and fixes the registrations in place
        (("train", "--dataset", "visits", "--epsilon", "1", "--label", "readmitted"), False),
        *(
            (
                (
                    "datasets",
                    "update",
                    name,
                    "--categories-from",
                    str(codebook),
                    "--bounds",
                    bounds,
                ),
                True,
            )
            for name in ("visits", "visits-test")
        ),
        (("train", "--dataset", "visits", "--epsilon", "1", "--label", "readmitted"), False),
        # refused: DP-SGD needs a delta, and the budget has none
        # refused: changing a budget needs a reason, kept for the auditor
        (("budget", "set", "visits", "--epsilon", "3", "--delta", "1e-5"), False),
        (
            ("budget", "set", "visits", "--epsilon", "3", "--delta", "1e-5", "--reason", "DP-SGD"),
            True,
        ),
        (
            (
                "budget",
                "set",
                "visits-test",
                "--epsilon",
                "3",
                "--delta",
                "1e-5",
                "--reason",
                "DP-SGD",
            ),
            True,
        ),
        (("train", "--dataset", "visits", "--epsilon", "1", "--label", "readmitted"), True),
        (("models", "list"), True),
        (("models", "show", "visits-mlp-eps1"), True),
        (("audit", "--model", "visits-mlp-eps1", "--test", "visits-test"), True),
        (("scan", train, "--qi", "age,zip,sex"), True),
        (("scan", semi, "--qi", "age,zip,sex"), False),  # refused: names the ';'
        (("scan", semi, "--qi", "age,zip,sex", "--delimiter", ";"), True),
        (("scan", train, "--qi", "age,zip,sex", "--sensitive", "diagnosis"), True),
        (("anonymize", train, "--qi", "age,zip,sex", "--k", "5", "-o", "released.csv"), True),
        (("anonymize", "visits", "--qi", "age,sex", "--k", "5", "-o", "released2.csv"), True),
        (("redact", train, "-o", "redacted.csv"), True),
        (("vault", "encrypt", train), True),
        (("vault", "status"), True),
        (("vault", "decrypt", f"{train}.veil", "-o", "decrypted.csv"), True),
        (("mpc", "sum", train, test, "--column", "age"), True),
        (("mpc", "mean", train, test, "--column", "income"), False),  # missing values: refused
        (("he", "keygen", "-o", "keys"), False),  # needs the server's --plan
        (("he", "encrypt", train, "--keys", "keys", "-o", "request.bin"), False),
        (("federate", "--dataset", train), False),  # mnist or digits only
        (("datasets", "remove", "visits-test"), True),
        (("datasets", "remove", "visits"), True),
    ]
    bugs, failed = [], []
    for args, must_succeed in session:
        code = main(list(args))
        captured = capsys.readouterr()
        if code == EXIT_BUG:
            bugs.append(f"veil {' '.join(args)} -> exit 1\n{captured.err[-1500:]}")
        elif must_succeed and code != 0:
            failed.append(f"veil {' '.join(args)} -> exit {code}\n{captured.err[-800:]}")
    assert not bugs, "\n\n".join(bugs)
    assert not failed, "\n\n".join(failed)


@pytest.mark.slow
def test_a_refusal_that_asks_a_question_does_not_end_in_question_mark_full_stop(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, seed: int
) -> None:
    """Issue 19: `veil train` on a fresh CSV said "which column of 'visits' is the label?."."""
    path = tmp_path / "visits.csv"
    visits(seed, n=300).to_csv(path, index=False)
    assert main(["init"]) == 0
    assert main(["datasets", "add", str(path), "--name", "visits"]) == 0
    capsys.readouterr()
    code = main(["train", "--dataset", "visits", "--epsilon", "1"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 3, err
    assert "is the label? Expected --label COLUMN." in err
    assert "?." not in err
