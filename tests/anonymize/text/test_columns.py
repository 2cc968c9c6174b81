"""Issue 19: PII columns of a table Veil was not designed for, found by `veil scan` (default flags).

A generated table in the shape of a criminal-justice and a credit table:
timestamps and epoch seconds (not phone numbers), coded categories and charge
descriptions (not organisations), a ``last`` column of surnames (PII, even
where spaCy's small model misses most single surnames), and a column where
only a minority of the values hold an e-mail address (reported as such).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from veil.anonymize import find_pii_columns


def _table(seed: int, n: int = 150) -> pd.DataFrame:
    faker = pytest.importorskip("faker").Faker("en_US")
    faker.seed_instance(seed)
    rng = random.Random(seed)  # noqa: S311 - test data, not protection

    def stamp() -> str:
        return (
            f"2013-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        )

    charges = [
        "Battery", "Grand Theft in the 3rd Degree", "Possession of Cocaine",
        "Driving While License Revoked", "Felony Petit Theft", "Aggravated Assault W/Dead Weap",
    ]  # fmt: skip
    return pd.DataFrame(
        {
            "id": range(1, n + 1),
            "first": [faker.first_name() for _ in range(n)],
            "last": [faker.last_name() for _ in range(n)],
            "c_jail_in": [stamp() for _ in range(n)],
            "screened_at": [1_358_000_000 + rng.randrange(10_000_000) for _ in range(n)],
            "c_charge_degree": [rng.choice("FM") for _ in range(n)],
            "r_charge_degree": [rng.choice(["(F3)", "(M1)", "(M2)", "(F2)"]) for _ in range(n)],
            "c_charge_desc": [rng.choice(charges) for _ in range(n)],
            "score_text": [rng.choice(["Low", "Medium", "High"]) for _ in range(n)],
            "race": [
                rng.choice(["African-American", "Caucasian", "Hispanic", "Asian", "Other"])
                for _ in range(n)
            ],
            "age_cat": [
                rng.choice(["25 - 45", "Greater than 45", "Less than 25"]) for _ in range(n)
            ],
            "purpose": [rng.choice(["A40", "A41", "A42", "A43", "A49", "A410"]) for _ in range(n)],
            "phone": [faker.phone_number() for _ in range(n)],
            "remarks": [
                faker.email() if i % 3 == 0 else rng.choice(["paid", "late", "no remarks"])
                for i in range(n)
            ],
        }
    )


NOT_PII = {"id", "screened_at", "c_charge_degree", "r_charge_degree", "c_charge_desc",
           "score_text", "race", "age_cat", "purpose"}  # fmt: skip


@pytest.mark.slow  # scans real tables with Presidio
def test_veil_scan_finds_names_by_name_and_values_and_not_timestamps_or_codes(
    tmp_path: Path, seed: int
):
    _table(seed).to_csv(tmp_path / "people.csv", index=False)
    executable = Path(sys.executable).with_name("veil")
    run = [str(executable), "scan", "people.csv", "--qi", "race,age_cat"]
    env = os.environ | {"COLUMNS": "200"}
    done = subprocess.run(
        [*run, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    found = {c["column"]: c for c in json.loads(done.stdout)["pii_columns"]}
    assert not set(found) & NOT_PII, {k: found[k] for k in set(found) & NOT_PII}
    assert found["first"]["entity_type"] == "PERSON" and found["last"]["entity_type"] == "PERSON"
    assert found["last"]["basis"] == "name and values" and found["last"]["share"] >= 0.9
    assert found["phone"]["entity_type"] == "PHONE_NUMBER" and found["phone"]["share"] >= 0.95
    assert found["phone"]["minority"] is False
    # A timestamp is a date, never a phone number.
    assert found.get("c_jail_in", {}).get("entity_type", "DATE_TIME") == "DATE_TIME"
    # A minority of matches is reported with its share and marked as a minority.
    remarks = found["remarks"]
    assert remarks["entity_type"] == "EMAIL_ADDRESS" and remarks["minority"] is True
    assert 0.3 <= remarks["share"] < 0.5
    shown = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    line = next(t for t in shown.stdout.splitlines() if "PII column remarks" in t)
    shown_share = f"{round(remarks['share'] * remarks['sampled'])} of {remarks['sampled']} sampled"
    assert "a minority: only" in line and shown_share in line, line


@pytest.mark.slow  # Presidio over many sampled values
def test_the_column_name_alone_never_makes_a_column_pii():
    frame = pd.DataFrame(
        {
            "last": ["Active", "Closed"] * 20,  # a status, not surnames: two values
            "phone": [str(n) for n in range(1000, 1040)],  # too short to be phone numbers
            "name": [f"A{n}" for n in range(40)],  # codes
        }
    )
    assert find_pii_columns(frame) == []
