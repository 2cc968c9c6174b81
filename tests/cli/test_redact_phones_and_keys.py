"""Run the way a new user runs it: `veil redact` on fresh files, default flags (the first
test through the real executable, the others through its ``main`` in the test's process).

Phone numbers with extensions and a parenthesised area code, Mastercard's
2-series cards, an output folder outside the current tree, and a labelled
corpus in the obvious ``{"text", "spans": [[start, end, TYPE], ...]}`` format.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tests._cli import run_cli

from veil.anonymize import evaluate_pii
from veil.anonymize.text._entities import luhn_valid
from veil.errors import InvalidInputError


def _veil(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``veil ARGS`` through the real executable, in ``cwd``."""
    executable = Path(sys.executable).with_name("veil")
    return subprocess.run(
        [str(executable), *args],
        cwd=cwd,
        env=os.environ | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
    )


# The first test runs the executable; the others run `veil` through `run_cli` in this process,
# where spaCy's model is loaded once (a process per command spent most of its 4 s loading it).


def _mastercard_2_series(rng: random.Random) -> str:
    """A Luhn-valid 16-digit number with a prefix in 2221-2720 (Mastercard's 2-series)."""
    payload = str(rng.randint(2221, 2720)) + "".join(str(rng.randrange(10)) for _ in range(11))
    check = next(d for d in "0123456789" if luhn_valid(payload + d))
    return payload + check


@pytest.mark.slow
def test_phones_with_extensions_and_2_series_cards_are_redacted(tmp_path: Path, seed: int):
    rng = random.Random(seed)  # noqa: S311 - test data, not protection
    cards = [_mastercard_2_series(rng) for _ in range(3)]
    spaced = " ".join(cards[2][i : i + 4] for i in range(0, 16, 4))
    phones = ["001-473-854-6848x745", "(293)967-5751", "+1-293-967-5751x1234", "293.967.5751"]
    lines = [
        f"Call the customer on {phones[0]} about the refund.",
        f"Her mobile is {phones[1]}, office {phones[2]}.",
        f"Fax {phones[3]} before noon.",
        f"Card {cards[0]} was charged twice; the new card is {cards[1]}.",
        f"Paid with {spaced} on the 3rd.",
    ]
    # Not PII: a 2-series number failing Luhn, an amount and an invoice number.
    bad = cards[0][:-1] + str((int(cards[0][-1]) + 1) % 10)
    lines.append(f"Reference {bad}, invoice INV-20931, amount 1,204.50.")
    (tmp_path / "notes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _veil(tmp_path, "redact", "notes.txt", "-o", "notes.red.txt")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "notes.red.txt").read_text(encoding="utf-8")
    for value in [*phones, *cards, spaced]:
        assert value not in text, (value, text)
    # The extension goes with its number, and no digit of a number is left behind.
    assert "x745" not in text and "x1234" not in text
    assert text.count("<PHONE_NUMBER>") == 4, text
    assert text.count("<CREDIT_CARD>") == 3, text
    assert bad in text and "INV-20931" in text


@pytest.mark.slow
def test_an_output_outside_the_current_tree_needs_an_existing_folder(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("Call John Smith on 020 7946 0958.\n", encoding="utf-8")
    done = run_cli("redact", "notes.txt", "-o", "../a/../b.txt", "--json", cwd=work)
    assert done.returncode == 6, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "folder" in error["message"] and "does not exist" in error["message"]
    assert error["fix"] and "mkdir" in error["fix"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # no ../a, no ../b.txt
    # An existing folder outside the tree is fine; a new one inside the tree is created.
    done = run_cli("redact", "notes.txt", "-o", "../b.txt", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "<PERSON>" in (tmp_path / "b.txt").read_text(encoding="utf-8")
    done = run_cli("redact", "notes.txt", "-o", "out/red/notes.txt", cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "out" / "red" / "notes.txt").is_file()


def _user_corpus(path: Path) -> list[dict[str, object]]:
    sentences = [
        ("Maria Lopez called from 020 7946 0958.", [(0, 11, "PERSON"), (24, 37, "PHONE_NUMBER")]),
        ("Mail ann.lee@nhs.net today.", [(5, 20, "EMAIL_ADDRESS")]),
        ("Seen in Leeds on 12 March 2024.", [(8, 13, "LOCATION"), (17, 30, "DATE_TIME")]),
    ]
    records = [{"text": t, "spans": [list(s) for s in spans]} for t, spans in sentences]
    for record in records:
        for start, end, _ in record["spans"]:  # type: ignore[attr-defined]
            assert record["text"][start:end].strip()  # type: ignore[index]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


@pytest.mark.slow
def test_evaluate_reads_a_corpus_of_text_and_span_lists(tmp_path: Path):
    _user_corpus(tmp_path / "mine.jsonl")
    done = run_cli("redact", "--evaluate", "--corpus", "mine.jsonl", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["documents"] == 3 and result["corpus"] == "mine.jsonl"
    assert result["overlap"]["overall"]["gold"] == 5
    assert result["overlap"]["overall"]["recall"] >= 0.8
    evaluation = evaluate_pii(path=tmp_path / "mine.jsonl")  # the Python call the user made
    assert evaluation.documents == 3
    done = run_cli("redact", "--evaluate", "--corpus", "mine.jsonl", cwd=tmp_path)
    assert done.returncode == 0 and "mine.jsonl" in done.stdout, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("line", "got"),
    [
        ('{"text": "Ann", "labels": [[0, 3, "PERSON"]]}', "no 'spans'"),
        ('{"text": "Ann", "spans": [[0, 9, "PERSON"]]}', "[0, 9, 'PERSON']"),
        ('{"text": "Ann", "spans": [[0, 3, "NAME"]]}', "'NAME'"),
        ('{"text": "Ann", "spans": [[0, 3]]}', "[0, 3]"),
        ("not json", "not JSON"),
    ],
)
def test_a_corpus_in_another_format_is_refused_with_the_line(tmp_path: Path, line, got):
    good = '{"text": "Ann Lee", "spans": [[0, 7, "PERSON"]]}'
    (tmp_path / "bad.jsonl").write_text(good + "\n" + line + "\n", encoding="utf-8")
    done = run_cli("redact", "--evaluate", "--corpus", "bad.jsonl", "--json", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "line 2" in error["got"] and got in error["got"], error
    assert "spans" in error["expected"] and "docs/redact.md" in error["fix"]
    with pytest.raises(InvalidInputError, match="labelled corpus"):
        evaluate_pii(path=tmp_path / "bad.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
