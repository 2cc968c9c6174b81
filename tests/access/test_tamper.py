"""Direct edits of the database after real actions: ``verify`` names what changed.

Each test runs the actions of :mod:`tests.access._scenario` on SQLite and on
PostgreSQL, keeps the head alice exported (``trail.checkpoint()``), then acts
as someone holding the database's credentials: edits, deletes, reorders,
inserts and truncates trail rows, replaces the whole trail with a
self-consistent forgery, and rewrites the ledger under it (the attacks the
issue lists: a deleted privacy event, a noise scale changed so the spent
epsilon falls, an actor and a reason rewritten, a budget raised in place, a
ledger sequence number reused after a deletion). ``verify`` must fail and say
where: the first bad entry, or the mismatch with the exported head.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from tests.access._scenario import CHARGE_SEQS, DATASET, SIZE, World, laplace, populate

from veil.access import Trail, TrailReport
from veil.access.verifier import leaf_hash
from veil.ledger import Budget, Ledger
from veil.store import Store
from veil.store.chain import GENESIS, link
from veil.store.tables import PrivacyEventRow, TrailEntryRow, TrailHeadRow, TrailStateRow


@pytest.fixture
def world(store, tmp_path: Path) -> World:
    return populate(store, tmp_path)


def kinds(report: TrailReport) -> list[tuple[str, int | None]]:
    return [(p.kind, p.seq) for p in report.problems]


def named(report: TrailReport, kind: str, seq: int | None, *words: str) -> None:
    """Fail unless a problem of ``kind`` at ``seq`` says all of ``words``."""
    for problem in report.problems:
        if (problem.kind, problem.seq) == (kind, seq) and all(w in problem.message for w in words):
            return
    pytest.fail(f"no {kind!r} problem at entry {seq} saying {words}: {report.problems}")


def test_the_untouched_trail_verifies_against_the_exported_head(world: World):
    report = world.verify()
    assert report.ok, kinds(report)
    assert report.size == SIZE
    assert report.heads_checked == 2  # the head kept in the database and the exported one
    assert report.ledger_events_checked == 3
    assert report.budgets_checked == 1
    assert [e.action for e in world.owner.trail.entries()] == [
        "trail.start", "access.claim", "dataset.register", "budget.set",
        "privacy.charge", "privacy.charge", "privacy.charge", "dataset.read", "dataset.read",
    ]  # fmt: skip


# ------------------------------------------------------------------ the trail's rows
def test_an_edited_body_is_named_and_no_longer_matches_the_exported_head(world: World):
    edited = world.execute(
        "UPDATE trail_entries SET body = replace(body, 'release 2', 'release 9') WHERE seq = 6"
    )
    assert edited == 1
    report = world.verify()
    assert not report.ok
    assert report.first_bad == 6
    named(report, "edited", 6, "body does not hash")
    named(report, "rewritten", SIZE, "exported head")


def test_an_edited_column_alone_is_named(world: World):
    # The indexed column is what `veil trail show --who` filters on: blaming mallory there,
    # leaving the hashed body as it was.
    assert world.execute("UPDATE trail_entries SET actor = 'mallory' WHERE seq = 6") == 1
    report = world.verify()
    assert kinds(report) == [("columns", 6)]
    assert report.first_bad == 6


def test_a_deleted_row_is_named_and_so_is_the_charge_it_recorded(world: World):
    assert world.execute("DELETE FROM trail_entries WHERE seq = 6") == 1
    report = world.verify()
    assert report.first_bad == 6
    assert report.problems[0].kind == "gap"
    assert "entry 6 is missing" in report.problems[0].message
    # The privacy event that entry recorded is now in the ledger with no entry for it.
    assert any(
        p.kind == "ledger" and "privacy event 2 " in p.message and "no trail entry" in p.message
        for p in report.problems
    ), kinds(report)


def test_two_swapped_rows_are_named(world: World):
    for sql in (
        "UPDATE trail_entries SET seq = -5 WHERE seq = 5",
        "UPDATE trail_entries SET seq = 5 WHERE seq = 6",
        "UPDATE trail_entries SET seq = 6 WHERE seq = -5",
    ):
        assert world.execute(sql) == 1
    report = world.verify()
    assert report.first_bad == 5
    named(report, "chain", 5, "does not link")
    named(report, "columns", 5, "columns disagree")
    named(report, "rewritten", SIZE, "exported head")


def _forged_row(world: World, seq: int, previous_chain: str) -> dict[str, object]:
    """A well-formed entry blaming bob for a raw read, hashed the way the trail hashes."""
    [(template,)] = world.rows("SELECT body FROM trail_entries WHERE seq = 9")
    body = json.loads(template)
    body.update(seq=seq, actor="bob", purpose="taken home")
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    leaf = leaf_hash(text.encode("ascii"))
    return {
        "seq": seq,
        "at": body["at"].replace("T", " ").rstrip("Z"),
        "actor": "bob",
        "action": body["action"],
        "dataset": body["dataset"],
        "outcome": body["outcome"],
        "body": text,
        "leaf": leaf.hex(),
        "chain": hashlib.sha256(bytes.fromhex(previous_chain) + leaf).hexdigest(),
    }


INSERT = (
    "INSERT INTO trail_entries (seq, at, actor, action, dataset, outcome, body, leaf, chain) "
    "VALUES (:seq, :at, :actor, :action, :dataset, :outcome, :body, :leaf, :chain)"
)


def test_a_row_forged_into_the_middle_breaks_the_chain_of_the_next(world: World):
    [(chain_5,)] = world.rows("SELECT chain FROM trail_entries WHERE seq = 5")
    # Make room at 6 (in two steps: the key is checked row by row), then insert the forgery.
    world.execute("UPDATE trail_entries SET seq = -(seq + 1) WHERE seq >= 6")
    world.execute("UPDATE trail_entries SET seq = -seq WHERE seq < 0")
    world.execute(INSERT, **_forged_row(world, 6, chain_5))
    report = world.verify()
    # The forgery itself hashes and links correctly: the entry after it is the first that
    # no longer links to what precedes it (and whose number disagrees with its body).
    assert report.first_bad == 7
    named(report, "chain", 7, "does not link")
    named(report, "columns", 7, "columns disagree")
    named(report, "rewritten", SIZE, "exported head")


def _append_forged_row(world: World) -> None:
    [(chain_9,)] = world.rows("SELECT chain FROM trail_entries WHERE seq = 9")
    world.execute(INSERT, **_forged_row(world, 10, chain_9))


def test_a_row_forged_past_the_end_disagrees_with_the_trails_state(world: World):
    _append_forged_row(world)
    report = world.verify(exported=False)
    assert kinds(report) == [("state", 10)]
    assert "state says 9 entries" in report.problems[0].message


def test_a_row_forged_past_the_end_is_reported_with_an_exported_head(world: World):
    _append_forged_row(world)
    report = world.verify()
    named(report, "state", 10, "state says 9 entries")


def test_a_backdated_entry_is_named(world: World):
    # `veil trail show --since` filters on the indexed time: moving an entry out of a window.
    with world.store.session() as session:
        row = session.get(TrailEntryRow, 6)
        assert row is not None
        row.at -= timedelta(days=30)
    report = world.verify()
    assert kinds(report) == [("columns", 6)]


@pytest.mark.parametrize("at", [0, 2.5, "yesterday", ""])
def test_a_time_column_holding_no_time_is_named_not_a_crash(tmp_path: Path, at: object):
    # SQLite only: PostgreSQL's timestamp column holds nothing but timestamps.
    store = Store.open(f"sqlite:///{tmp_path / 'veil.db'}", upgrade=True)
    try:
        world = populate(store, tmp_path)
        assert world.execute("UPDATE trail_entries SET at = :at WHERE seq = 6", at=at) == 1
        report = world.verify()
    finally:
        store.dispose()
    assert kinds(report) == [("columns", 6)]


def test_a_clean_truncation_is_caught_by_the_exported_head_only(world: World):
    # Remove the last two entries (the reads) and the head covering them, and put the trail's
    # state back as it stood after entry 7: what is left is a valid trail of 7 entries.
    assert world.execute("DELETE FROM trail_entries WHERE seq > 7") == 2
    world.execute("DELETE FROM trail_heads WHERE size > 7")
    size, chain, frontier = world.state_after_charges
    with world.store.session() as session:
        state = session.get(TrailStateRow, 1)
        assert state is not None
        state.size, state.chain, state.frontier = size, chain, list(frontier)
    assert world.verify(exported=False).ok  # nothing in the database shows it
    report = world.verify()
    assert kinds(report) == [("truncated", 8)]
    assert report.first_bad == 8
    assert "exported head covers 9 entries but the trail holds 7" in report.problems[0].message


def _forge_whole_trail(world: World, signing_key: bytes | None) -> Trail:
    """Rebuild every entry with mallory as the actor, with the trail's own code.

    The ledger's rows are rewritten to match (the trail's entries are checked
    against their actors), so that the database holds no inconsistency at all.
    """
    world.execute("UPDATE privacy_events SET actor = 'mallory'")
    world.execute("UPDATE budget_changes SET actor = 'mallory'")
    bodies = [json.loads(b) for (b,) in world.rows("SELECT body FROM trail_entries ORDER BY seq")]
    with world.store.session() as session:
        session.execute(delete(TrailHeadRow))
    world.execute("DELETE FROM trail_entries")
    with world.store.session() as session:
        state = session.get(TrailStateRow, 1)
        assert state is not None
        state.size, state.chain, state.frontier = 0, GENESIS, []
    forger = Trail(world.store, signing_key=signing_key)
    fields = ("action", "outcome", "purpose", "dataset", "links", "details")
    with world.store.session(lock=True) as session:
        forger.append_many(
            session, [{"actor": "mallory", **{k: b[k] for k in fields}} for b in bodies]
        )
    return forger


def test_a_self_consistent_forgery_without_heads_is_caught_by_the_exported_head(world: World):
    _forge_whole_trail(world, signing_key=None)
    entries = world.owner.trail.entries()
    assert len(entries) == SIZE
    assert {e.actor for e in entries} == {"mallory"}
    assert world.verify(exported=False).ok  # chain, tree, columns and ledger links all agree
    report = world.verify()
    assert kinds(report) == [("rewritten", SIZE)]
    assert "exported head" in report.problems[0].message


def test_a_forgery_re_signed_with_another_key_is_caught_by_the_key_and_the_head(world: World):
    other = secrets.token_bytes(32)
    forger = _forge_whole_trail(world, signing_key=other)
    forged_head = forger.checkpoint()
    assert forged_head.public_key != world.owner.trail.public_key
    # Whoever trusts whatever key a head names is fooled ...
    assert Trail(world.store).verify().ok
    assert Trail(world.store).verify(head=forged_head).ok
    # ... the trail's own key is not, even without the exported head ...
    without = world.verify(exported=False)
    assert [p.kind for p in without.problems] == ["signature"]
    assert f"signed head at size {SIZE} is not signed by the trail's key" in (
        without.problems[0].message
    )
    # ... and the exported head no longer matches.
    report = world.verify()
    assert sorted(kinds(report), key=str) == sorted(
        [("signature", None), ("rewritten", SIZE)], key=str
    )
    assert report.first_bad == SIZE
    # Presenting the forger's key instead does not help: the exported head is not theirs.
    assert not world.access().trail.verify(head=world.head, public_key=forger.public_key).ok


# ------------------------------------------------------------------ the ledger under the trail
def _fresh_ledger(world: World) -> Ledger:
    """Another process's ledger (nothing held in memory), acting as alice."""
    return Ledger(world.store, access=world.access())


def test_a_deleted_privacy_event_is_named(world: World):
    assert world.execute("DELETE FROM privacy_events WHERE seq = 2") == 1
    report = world.access().trail.verify()
    assert report.first_bad == CHARGE_SEQS[1]
    named(report, "ledger", CHARGE_SEQS[1], "privacy event 2,", "deleted")


def test_a_lowered_noise_parameter_is_named_even_with_the_ledger_chain_recomputed(world: World):
    assert _fresh_ledger(world).status(DATASET).spent.epsilon == pytest.approx(3.0)
    # Scale 1 -> 1e9 on every event, and the ledger's own chain rebuilt over the new values,
    # so that the ledger alone looks consistent: the spent epsilon falls to ~3e-9.
    with world.store.session() as session:
        chain = GENESIS
        for row in session.scalars(select(PrivacyEventRow).order_by(PrivacyEventRow.seq)):
            mechanisms = json.loads(json.dumps(row.mechanisms))
            mechanisms[0]["parameters"]["scale"] = 1e9
            mechanisms[0]["dp_event"]["noise_multiplier"] = 1e9
            chain = link(chain, row.seq, mechanisms, row.leaves)
            row.mechanisms, row.chain = mechanisms, chain
    assert _fresh_ledger(world).status(DATASET).spent.epsilon < 1e-6  # the attack works ...
    report = world.access().trail.verify()  # ... and the trail names every event it touched
    assert report.first_bad == CHARGE_SEQS[0]
    for event, seq in enumerate(CHARGE_SEQS, start=1):
        named(report, "ledger", seq, f"privacy event {event} ", "changed after")


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE privacy_events SET actor = 'mallory' WHERE seq = 2", ("ledger", CHARGE_SEQS[1])),
        (
            "UPDATE privacy_events SET purpose = 'approved by the DPO' WHERE seq = 2",
            ("ledger", CHARGE_SEQS[1]),
        ),
        ("UPDATE budget_changes SET actor = 'mallory'", ("budget", 4)),
        ("UPDATE budget_changes SET reason = 'approved by the DPO'", ("budget", 4)),
    ],
    ids=["event-actor", "event-purpose", "budget-actor", "budget-reason"],
)
def test_a_rewritten_actor_or_reason_is_named(world: World, sql: str, problem: tuple[str, int]):
    assert world.execute(sql) == 1
    report = world.access().trail.verify()
    assert kinds(report) == [problem]
    rewritten = "mallory" if "mallory" in sql else "approved by the DPO"
    named(report, *problem, "changed after trail entry", rewritten)


def test_a_budget_raised_in_the_database_is_named(world: World):
    assert world.execute("UPDATE privacy_budgets SET epsilon = 1000") == 1
    report = world.access().trail.verify()
    assert kinds(report) == [("budget", 4)]
    assert "changed outside Veil" in report.problems[0].message
    # Adding a matching budget change row does not launder it: the change has no entry.
    world.execute(
        "INSERT INTO budget_changes (dataset_id, changed_at, actor, reason, epsilon, delta) "
        "SELECT dataset_id, changed_at, 'alice', 'approved', 1000, delta FROM budget_changes"
    )
    report = world.access().trail.verify()
    assert ("budget", 4) in kinds(report)
    assert any("has no trail entry" in p.message for p in report.problems if p.kind == "budget")


def test_a_sequence_number_reused_after_a_deletion_is_named(world: World):
    assert world.execute("DELETE FROM privacy_events WHERE seq = 3") == 1
    receipt = _fresh_ledger(world).charge(DATASET, laplace(), purpose="after the deletion")
    assert receipt.seq == 3  # the number is reused: the ledger alone shows no gap
    report = world.access().trail.verify()
    named(report, "ledger", CHARGE_SEQS[2], "privacy event 3,", "deleted")
    if world.store.backend == "sqlite":  # SQLite also reused the row id: the entries say so
        assert receipt.event_id == 3
        named(report, "ledger", CHARGE_SEQS[2], "recorded again by entry 10", "id reused")
    assert report.first_bad == CHARGE_SEQS[2]


def test_a_deleted_budget_change_is_named_even_when_its_id_is_reused(world: World):
    # Hide who raised the budget and why: delete the change, then set the budget again.
    assert world.execute("DELETE FROM budget_changes") == 1
    _fresh_ledger(world).set_budget(DATASET, Budget(epsilon=10), reason="as before")
    report = world.access().trail.verify()
    named(report, "budget", 4, "budget change 1,")
    assert report.first_bad == 4
