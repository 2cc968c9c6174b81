"""PII in free text: the real Presidio + spaCy engine, checksums, operators, files, the corpus."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pandas as pd
import pytest

from veil.anonymize.text import (
    PII_ENTITIES,
    PiiSpan,
    analyze_texts,
    decrypt_file,
    decrypt_text,
    evaluate_pii,
    find_pii_columns,
    load_corpus,
    redact_file,
    redact_lines,
    redact_text,
    score_spans,
)
from veil.anonymize.text._analyze import BATCH_LINES, MAX_PIECE_CHARS
from veil.anonymize.text._corpus import PARTS
from veil.anonymize.text._engine import get_engine
from veil.anonymize.text._entities import bsn_valid, luhn_valid, nhs_valid
from veil.anonymize.text._keyed import Surrogates
from veil.anonymize.text._recognizers import suffix_extractor
from veil.bench._text import load_corpus_generator
from veil.errors import InvalidInputError, NotFoundError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOTE = (
    "Dr John Smith (john.smith@gmail.com, +44 20 7946 0958) saw Mary Jones at St Mary's "
    "Hospital in Leeds on 12 March 2024. Card 4111 1111 1111 1111, NHS number 943 476 5919, "
    "IBAN GB29 NWBK 6016 1331 9268 19. Smith will call back."
)


@pytest.fixture(scope="module", autouse=True)
def engine():
    """The engine is built once per process (functools.cache); build it before any timing."""
    return get_engine(with_ner=True)


def _found(text: str, **kwargs) -> list[tuple[str, str]]:
    return [(e.entity_type, text[e.start : e.end]) for e in analyze_texts([text], **kwargs)[0]]


# ---------------------------------------------------------------- corpus and evaluation


@pytest.mark.slow
def test_the_split_is_by_template_and_no_template_is_in_both_parts():
    records = load_corpus()
    by_part = {part: {r.template for r in records if r.part == part} for part in PARTS}
    assert by_part["tune"].isdisjoint(by_part["test"])
    assert by_part["tune"] | by_part["test"] == {r.template for r in records}
    for part in PARTS:  # both parts exercise every entity type
        kinds = {s.entity_type for r in records if r.part == part for s in r.spans}
        assert kinds == set(PII_ENTITIES), part
    assert len(load_corpus("test")) + len(load_corpus("tune")) == len(records) == 1176


@pytest.mark.slow  # regenerates the whole corpus
def test_the_kept_corpus_has_exact_spans_and_matches_its_generator():
    kept = load_corpus()
    for record in kept:
        for span in record.spans:
            assert 0 <= span.start < span.end <= len(record.text)
            assert record.text[span.start : span.end].strip() == record.text[span.start : span.end]
    generate_corpus = load_corpus_generator().generate_corpus
    again = generate_corpus()
    assert [(r.id, r.template, r.part, [s.entity_type for s in r.spans]) for r in again] == [
        (r.id, r.template, r.part, [s.entity_type for s in r.spans]) for r in kept
    ], "templates changed: regenerate with python benchmarks/pii/corpus.py"
    assert [r.text for r in generate_corpus()[:40]] == [r.text for r in again[:40]]


def test_span_scores_follow_the_matching_rules():
    gold = [[PiiSpan(0, 10, "PERSON"), PiiSpan(20, 25, "DATE_TIME")]]
    predicted = [[PiiSpan(3, 10, "PERSON"), PiiSpan(20, 25, "LOCATION"), PiiSpan(30, 33, "URL")]]
    overlap = score_spans(gold, predicted, strict=False)
    assert overlap["PERSON"].precision == 1.0 and overlap["PERSON"].recall == 1.0
    assert overlap["DATE_TIME"].recall == 0.0  # the type must match
    assert overlap["overall"].precision == pytest.approx(1 / 3)
    assert overlap["overall"].recall == pytest.approx(1 / 2)
    p, r = 1 / 3, 1 / 2
    assert overlap["overall"].f2 == pytest.approx(5 * p * r / (4 * p + r))
    assert score_spans(gold, predicted, strict=True)["PERSON"].found_gold == 0


@pytest.mark.slow  # Presidio over the held-out corpus
def test_held_out_precision_and_recall_reach_the_goal():
    result = evaluate_pii("test")
    overall = result.overlap["overall"]
    assert result.documents == 312
    assert overall.precision >= 0.85, result.to_dict()["overlap"]
    assert overall.recall >= 0.85, result.to_dict()["overlap"]
    assert set(result.overlap) == {*PII_ENTITIES, "overall"}
    # docs/redact.md: an area code's parenthesis is part of the number (strict phone scores).
    phone = result.strict["PHONE_NUMBER"]
    assert (round(phone.precision, 3), round(phone.recall, 3)) == (1.0, 0.986)
    # Deterministic: the same corpus and engine give the same counts every run.
    assert (
        evaluate_pii("test", limit=40).to_dict()["overlap"]
        == (evaluate_pii("test", limit=40).to_dict()["overlap"])
    )


@pytest.mark.slow
def test_unknown_corpus_part_is_refused():
    with pytest.raises(InvalidInputError, match="unknown corpus part"):
        evaluate_pii("train")


# ---------------------------------------------------------------- checksums and context


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (luhn_valid, "4111111111111111", "4111111111111112"),
        (luhn_valid, "046454286", "046454287"),  # a Canadian SIN
        (nhs_valid, "9434765919", "9434765918"),
        (nhs_valid, "4010232137", "4010232138"),
        (bsn_valid, "111222333", "111222334"),
        (bsn_valid, "123456782", "123456783"),
    ],
)
def test_checksums_accept_valid_and_reject_altered_numbers(check, good, bad):
    assert check(good)
    assert not check(bad)
    assert not check("")


def test_a_bad_checksum_is_not_reported_even_with_context():
    valid = "NHS number 943 476 5919, BSN 111222333, SIN 130 692 544, card 4111 1111 1111 1111."
    altered = "NHS number 943 476 5918, BSN 111222334, SIN 130 692 545, card 4111 1111 1111 1112."
    assert {k for k, _ in _found(valid)} >= {"UK_NHS", "NL_BSN", "CA_SIN", "CREDIT_CARD"}
    assert not {k for k, _ in _found(altered)} & {"UK_NHS", "NL_BSN", "CA_SIN", "CREDIT_CARD"}
    assert ("IBAN_CODE", "GB29 NWBK 6016 1331 9268 19") in _found(
        "IBAN GB29 NWBK 6016 1331 9268 19"
    )
    assert not any(k == "IBAN_CODE" for k, _ in _found("IBAN GB28 NWBK 6016 1331 9268 19"))


def test_context_words_raise_confidence():
    only = {"entities": ["UK_NHS"], "threshold": 0.0}
    with_context = analyze_texts(["Her NHS number is 943 476 5919."], **only)[0]
    without = analyze_texts(["The value 943 476 5919 was logged."], **only)[0]
    nhs = [e.score for e in with_context if e.entity_type == "UK_NHS"]
    bare = [e.score for e in without if e.entity_type == "UK_NHS"]
    assert nhs and bare and nhs[0] > bare[0]
    assert not any(k == "UK_NHS" for k, _ in _found("The value 943 476 5919 was logged."))


def test_the_engine_finds_each_kind_in_a_clinical_note():
    found = _found(NOTE)
    assert ("PERSON", "John Smith") in found  # the title is not part of the name
    assert ("EMAIL_ADDRESS", "john.smith@gmail.com") in found
    assert ("PHONE_NUMBER", "+44 20 7946 0958") in found
    assert ("DATE_TIME", "12 March 2024") in found
    assert ("LOCATION", "Leeds") in found
    assert ("UK_NHS", "943 476 5919") in found
    assert not any(k == "URL" for k, _ in found)  # e-mail domains are not URLs


def test_durations_amounts_and_codes_are_not_pii():
    text = "Metformin 500 mg twice daily for 3 days; HbA1c 7.2 %, BP 130/85, invoice INV-2024-0042."
    assert _found(text) == []


def test_no_network_and_no_warning_when_checking_e_mail_domains(monkeypatch):
    attempts: list[object] = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        extractor = suffix_extractor()  # a fresh one: nothing cached in this process
        assert extractor("mail.example.co.uk").fqdn == "mail.example.co.uk"
        assert _found("write to ann.lee@nhs.net") == [("EMAIL_ADDRESS", "ann.lee@nhs.net")]
    finally:
        logging.getLogger().removeHandler(handler)
    assert attempts == []
    assert not [r for r in records if "tldextract" in r.name or "Connection" in r.getMessage()]


def test_long_texts_are_analysed_in_pieces_with_the_right_offsets():
    filler = "word " * (MAX_PIECE_CHARS // 5 + 100)
    text = filler + "contact ann.lee@nhs.net today"
    entities = analyze_texts([text], entities=["EMAIL_ADDRESS"])[0]
    assert [text[e.start : e.end] for e in entities] == ["ann.lee@nhs.net"]


# ---------------------------------------------------------------- operators


def test_tag_redact_and_mask():
    tagged = redact_text(NOTE).text
    assert "<PERSON>" in tagged and "John" not in tagged and "943 476 5919" not in tagged
    assert redact_text("Mail ann.lee@nhs.net now.", operator="redact").text == "Mail  now."
    masked = redact_text("Card 4111 1111 1111 1111 expires.", operator="mask").text
    assert masked == "Card ***************1111 expires."
    assert redact_text("Card 4111 1111 1111 1111.", operator="mask", mask_keep=0).text == (
        "Card *******************."
    )


def test_keyed_hash_is_stable_ignores_spacing_and_depends_on_the_key():
    a = redact_text("Call 020 7946 0958.", operator="hash", key=KEY).text
    b = redact_text("Call 02079460958.", operator="hash", key=KEY).text
    c = redact_text("Call 020 7946 0958.", operator="hash", key=OTHER_KEY).text
    assert a == b != c
    assert a.startswith("Call <PHONE_NUMBER:") and len(a.split(":")[1].rstrip(">.")) == 16


def test_encryption_round_trip_and_wrong_key():
    sealed = redact_text(NOTE, operator="encrypt", key=KEY)
    assert "John Smith" not in sealed.text and "<ENC:PERSON:" in sealed.text
    assert decrypt_text(sealed.text, KEY) == NOTE
    again = redact_text(NOTE, operator="encrypt", key=KEY).text
    assert again != sealed.text  # a fresh nonce every time: equal values do not link
    with pytest.raises(InvalidInputError, match="does not open with this key"):
        decrypt_text(sealed.text, OTHER_KEY)
    relabelled = sealed.text.replace("<ENC:PERSON:", "<ENC:LOCATION:", 1)
    with pytest.raises(InvalidInputError, match="does not open"):
        decrypt_text(relabelled, KEY)  # the entity type is authenticated


def test_surrogates_are_consistent_within_a_document_and_across_runs():
    text = "John Smith met Anna Berg. Later John Smith called Anna Berg again."
    first = redact_text(text, operator="surrogate", key=KEY)
    assert first.counts == {"PERSON": 4}
    assert "John" not in first.text and "Smith" not in first.text and "Berg" not in first.text
    fake = Surrogates(KEY)("PERSON", "John Smith")
    assert first.text.count(fake) == 2  # the same name, the same fake, in one document
    assert first.text.count(Surrogates(KEY)("PERSON", "Anna Berg")) == 2
    assert redact_text(text, operator="surrogate", key=KEY).text == first.text  # across runs
    assert redact_text(text, operator="surrogate", key=OTHER_KEY).text != first.text
    # Word by word: a surname alone becomes the surname of the full name's fake.
    assert Surrogates(KEY)("PERSON", "Smith") == fake.split()[-1]
    assert Surrogates(KEY)("PERSON", "Dr John Smith") == "Dr " + fake


def test_surrogate_identifiers_keep_their_layout_and_checksum():
    out = redact_text("Card 4111 1111 1111 1111.", operator="surrogate", key=KEY).text
    number = out.removeprefix("Card ").rstrip(".")
    assert number != "4111 1111 1111 1111" and len(number) == 19 and number[0] == "4"
    assert luhn_valid(number.replace(" ", ""))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"operator": "hash"}, "needs a secret key"),
        ({"operator": "encrypt", "key": b"short"}, "needs a secret key"),
        ({"operator": "blur"}, "unknown redaction operator"),
        ({"entities": ["PERSON", "SHOE_SIZE"]}, "unknown entity type"),
        ({"threshold": 1.5}, "threshold"),
        ({"mask_keep": -1}, "mask_keep"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        redact_text("text", **kwargs)


def test_redact_lines_streams_in_order():
    lines = [f"Line {i}: write to user{i}@example.org" for i in range(BATCH_LINES + 5)]
    out = list(redact_lines(lines, entities=["EMAIL_ADDRESS"]))
    assert len(out) == len(lines)
    assert out[-1].text == f"Line {len(lines) - 1}: write to <EMAIL_ADDRESS>"
    assert all(r.counts == {"EMAIL_ADDRESS": 1} for r in out)


# ---------------------------------------------------------------- files


def test_redact_file_keeps_line_endings_and_reports_progress(tmp_path: Path):
    src = tmp_path / "notes.txt"
    src.write_bytes(b"Mail ann@nhs.net\r\n\r\nCall 020 7946 0958\nlast line without newline")
    events = []
    report = redact_file(src, tmp_path / "out.txt", progress=events.append)
    assert (tmp_path / "out.txt").read_bytes() == (
        b"Mail <EMAIL_ADDRESS>\r\n\r\nCall <PHONE_NUMBER>\nlast line without newline"
    )
    assert report.lines == 4 and report.bytes == src.stat().st_size
    assert report.counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert events[-1].completed == events[-1].total == src.stat().st_size


def test_encrypted_file_decrypts_to_the_original(tmp_path: Path):
    src = tmp_path / "notes.txt"
    src.write_text(NOTE + "\n" + NOTE + "\n", encoding="utf-8")
    redact_file(src, tmp_path / "sealed.txt", operator="encrypt", key=KEY)
    report = decrypt_file(tmp_path / "sealed.txt", tmp_path / "opened.txt", KEY)
    assert (tmp_path / "opened.txt").read_text(encoding="utf-8") == src.read_text(encoding="utf-8")
    assert report.counts["PERSON"] >= 4


def test_non_utf8_input_leaves_no_output_and_keeps_an_old_one(tmp_path: Path):
    src = tmp_path / "latin1.txt"
    good = "".join(f"Patient {i} mailed ann@nhs.net\n" for i in range(BATCH_LINES * 2))
    src.write_bytes(good.encode() + "Ren\u00e9e M\u00fcller\n".encode("latin-1"))
    dst = tmp_path / "out.txt"
    dst.write_text("previous result\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not UTF-8") as caught:
        redact_file(src, dst, entities=["EMAIL_ADDRESS"])
    assert f"line {BATCH_LINES * 2 + 1}" in str(caught.value)
    assert dst.read_text(encoding="utf-8") == "previous result\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.txt", "out.txt"]


def test_empty_missing_and_self_overwriting_inputs_are_refused(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        redact_file(empty, tmp_path / "out.txt")
    with pytest.raises(NotFoundError):
        redact_file(tmp_path / "missing.txt", tmp_path / "out.txt")
    with pytest.raises(InvalidInputError, match="overwrite the input"):
        redact_file(empty, empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


@pytest.mark.slow
def test_worker_processes_write_the_same_file(tmp_path: Path):
    src = tmp_path / "notes.txt"
    records = load_corpus("test")[:120]
    src.write_text("".join(r.text + "\n" for r in records), encoding="utf-8")
    one = redact_file(src, tmp_path / "one.txt", operator="hash", key=KEY)
    two = redact_file(src, tmp_path / "two.txt", operator="hash", key=KEY, workers=2)
    assert (tmp_path / "one.txt").read_bytes() == (tmp_path / "two.txt").read_bytes()
    assert one.counts == two.counts and two.workers == 2


# ---------------------------------------------------------------- tables


def test_pii_columns_of_a_table():
    n = 40
    frame = pd.DataFrame(
        {
            "patient": [
                f"{f} {s}"
                for f, s in zip(
                    ["John", "Mary", "Ahmed", "Li"] * 10,
                    ["Smith", "Jones", "Khan", "Wei", "Brown"] * 8,
                    strict=True,
                )
            ],
            "email": [f"user{i}@example.org" for i in range(n)],
            "phone": [f"(212) 555-{1000 + i:04d}" for i in range(n)],
            "ssn": [f"{100 + i:03d}-{10 + i:02d}-{2000 + i:04d}" for i in range(n)],
            "glucose": [5.0 + i / 10 for i in range(n)],
            "diagnosis": ["diabetes", "asthma"] * 20,
        }
    )
    found = {c.column: c for c in find_pii_columns(frame)}
    assert set(found) == {"patient", "email", "phone", "ssn"}
    assert found["email"].entity_type == "EMAIL_ADDRESS" and found["email"].share == 1.0
    assert found["ssn"].entity_type == "US_SSN"
    assert found["phone"].entity_type == "PHONE_NUMBER"
    assert found["patient"].entity_type == "PERSON" and found["patient"].share >= 0.5
    assert all(0 < c.confidence <= 1 and c.sampled == n for c in found.values())
    with pytest.raises(InvalidInputError, match="sample_size"):
        find_pii_columns(frame, sample_size=0)


# ---------------------------------------------------------------- benchmark
