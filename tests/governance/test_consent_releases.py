"""Row-level releases and scans of a dataset under consent management declare a consent term."""

from __future__ import annotations

import csv
from pathlib import Path


def _people_in(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def test_scan_and_anonymize_take_a_consent_purpose(managed, cli, tmp_path):
    assert cli("consent", "enable", managed, "--default", "granted")[0] == 0
    assert cli("consent", "set", managed, "--person", "P-0001", "--purpose", "research",
               "--withdrawn")[0] == 0  # fmt: skip
    # The operation's own name is no consent term: refused, nothing read, nothing written.
    code, _, err = cli("anonymize", managed, "--qi", "age", "--k", "2", "-o", "out.csv")
    assert code != 0 and "consent management" in err and not (tmp_path / "out.csv").exists()
    code, _, err = cli("scan", managed, "--qi", "age")
    assert code != 0 and "--purpose" in err
    assert cli("scan", managed, "--qi", "age", "--purpose", "research: risk review")[0] == 0
    code, _, err = cli(
        "anonymize", managed, "--qi", "outcome", "--k", "2", "-o", "out.csv",
        "--purpose", "research: cohort file",
    )  # fmt: skip
    assert code == 0, err
    # The person who withdrew consent for research is not in the release: 60 rows, 2 each.
    assert _people_in(tmp_path / "out.csv") == 58
