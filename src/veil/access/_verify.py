"""Verifying the trail: one streamed pass over every entry, the signed heads, and the ledger.

The pass recomputes each entry's leaf from its body, the hash chain, the
Merkle frontier (and the root at every size a signed or exported head names),
and checks that the indexed columns agree with the body. Then it matches the
ledger with the trail both ways: every privacy event after the trail's pin
has an entry recording it with the same ledger chain value, every recorded
event still exists, the events charged before the pin still hash to it, and
every budget in force is the last one the trail recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil._trailscan import HASH_SIZE, Chunk
from veil.access._entries import TreeHead
from veil.access._merkle import Frontier
from veil.access.verifier import verify_head
from veil.progress import ProgressCallback, emit
from veil.store.chain import GENESIS
from veil.store.chain import link as ledger_link
from veil.store.tables import BudgetChangeRow, DatasetRow, PrivacyBudgetRow, PrivacyEventRow

__all__ = ["TrailProblem", "TrailReport", "Walk", "check_head", "check_ledger"]

VERIFY_BATCH = 20_000


@dataclass(frozen=True)
class TrailProblem:
    """One thing ``verify`` found wrong; ``seq`` is the first entry it concerns, if any."""

    kind: str
    message: str
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


@dataclass(frozen=True)
class TrailReport:
    """What ``verify`` checked and found."""

    size: int
    root: str
    problems: tuple[TrailProblem, ...]
    heads_checked: int
    ledger_events_checked: int
    budgets_checked: int
    seconds: float
    exported_head: Mapping[str, Any] | None = None
    consistency_proof: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        """The first entry a problem names (``None`` if none does)."""
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root,
            "first_bad": self.first_bad,
            "problems": [p.to_dict() for p in self.problems],
            "heads_checked": self.heads_checked,
            "ledger_events_checked": self.ledger_events_checked,
            "budgets_checked": self.budgets_checked,
            "seconds": self.seconds,
            "entries_per_second": self.size / self.seconds if self.seconds > 0 else None,
            "exported_head": dict(self.exported_head) if self.exported_head else None,
            "consistency_proof": list(self.consistency_proof),
            "warnings": list(self.warnings),
        }


def _fold(nodes: Sequence[bytes]) -> bytes:
    """The root of a frontier's subtree roots (largest first); see Frontier.root."""
    if not nodes:
        return hashlib.sha256(b"").digest()
    root = nodes[-1]
    for node in reversed(nodes[:-1]):
        root = hashlib.sha256(b"\x01" + node + root).digest()
    return root


class Walk:
    """One pass over the rows: chain, leaves, columns against bodies, roots at given sizes."""

    def __init__(self, problems: list[TrailProblem], *, keep_leaves: bool = False) -> None:
        self.problems = problems
        self.keep_leaves = keep_leaves
        self.leaves: list[bytes] = []
        self.size = 0
        self.chain = GENESIS
        self.frontier = Frontier()
        # ledger event id / budget change id -> (trail seq, the entry's body)
        self.ledger_links: dict[int, tuple[int, Mapping[str, Any]]] = {}
        self.budget_sets: dict[int, tuple[int, Mapping[str, Any]]] = {}
        self.budget_change_links: dict[int, tuple[int, Mapping[str, Any]]] = {}
        self.pin: Mapping[str, Any] | None = None

    def run(
        self, chunks: Iterable[Chunk], sizes: list[int], progress: ProgressCallback | None
    ) -> dict[int, bytes]:
        """Join the checked ranges in order; return the Merkle root at each of ``sizes``.

        Each :class:`~veil._trailscan.Chunk` holds one range's leaf hashes and
        problems (checked in this process, or in a worker for a long trail);
        here the ranges are joined (a row missing between two is reported), the
        Merkle frontier is built over every leaf (the frontier's carries are
        inlined, for speed), and the bodies with ledger links are read.
        """
        roots: dict[int, bytes] = {}
        wanted = iter(sizes)
        next_size = next(wanted, None)
        expected = 1
        chain = bytes.fromhex(self.chain)
        nodes: list[bytes] = []
        leaves = 0
        sha256 = hashlib.sha256
        for chunk in chunks:
            self.problems.extend(TrailProblem(k, m, seq=q) for k, m, q in chunk.problems)
            if chunk.first_seq is None:
                continue
            if chunk.first_seq != expected:
                self.problems.append(
                    TrailProblem(
                        "gap",
                        f"entry {expected} is missing: the next row is {chunk.first_seq}",
                        seq=expected,
                    )
                )
            for seq, body in chunk.linked:
                self._note(seq, body)
            data = chunk.leaves
            if self.keep_leaves:
                self.leaves.append(data)
            for offset in range(0, len(data), HASH_SIZE):
                nodes.append(data[offset : offset + HASH_SIZE])  # Frontier.append, inlined
                carry = leaves
                while carry & 1:
                    right = nodes.pop()
                    nodes[-1] = sha256(b"\x01" + nodes[-1] + right).digest()
                    carry >>= 1
                leaves += 1
                while next_size is not None and next_size <= leaves:
                    if next_size == leaves:
                        roots[next_size] = _fold(nodes)
                    next_size = next(wanted, None)
            expected = chunk.last_seq + 1
            chain = chunk.chain
            emit(progress, "verify trail", leaves, unit="entries")
        self.frontier = Frontier.from_json(leaves, [n.hex() for n in nodes])
        self.size = leaves
        self.chain = chain.hex()
        return roots

    def leaf_hashes(self) -> list[bytes]:
        """Every leaf hash walked (with ``keep_leaves``), for a consistency proof."""
        data = b"".join(self.leaves)
        return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def _note(self, seq: int, body: str) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return  # the leaf or the columns check reports it
        action = data.get("action")
        links = data.get("links") or {}
        if action == "trail.start" and seq == 1:
            self.pin = data.get("details", {}).get("ledger", {})
        elif action in ("privacy.charge", "privacy.non_private") and "ledger_event" in links:
            self._link(self.ledger_links, "privacy event", int(links["ledger_event"]), seq, data)
        elif action == "budget.set" and data.get("outcome") == "allowed" and "dataset_id" in links:
            self.budget_sets[int(links["dataset_id"])] = (seq, data.get("details", {}))
            if "budget_change" in links:
                change = int(links["budget_change"])
                self._link(self.budget_change_links, "budget change", change, seq, data)

    def _link(
        self,
        links: dict[int, tuple[int, Mapping[str, Any]]],
        what: str,
        row_id: int,
        seq: int,
        data: Mapping[str, Any],
    ) -> None:
        """Note that entry ``seq`` recorded row ``row_id``; a row recorded twice is reported.

        Ids are never reused unless a row was deleted: SQLite hands the id of a
        deleted last row to the next one, and its entry would hide the first.
        """
        earlier = links.get(row_id)
        if earlier is not None:
            self.problems.append(
                TrailProblem(
                    "ledger" if what == "privacy event" else "budget",
                    f"{what} {row_id}, recorded by trail entry {earlier[0]}, was recorded again "
                    f"by entry {seq}: the first was deleted and its id reused",
                    seq=earlier[0],
                )
            )
        links[row_id] = (seq, data)


def check_head(
    head: TreeHead, roots: Mapping[int, bytes], size: int, trusted: str | None, what: str
) -> list[TrailProblem]:
    problems = []
    key = trusted or head.public_key
    signed = head.to_dict()
    if head.signature is None or not verify_head(signed, bytes.fromhex(key) if key else None):
        problems.append(
            TrailProblem(
                "signature",
                f"the {what} at size {head.size} is not signed by the trail's key",
            )
        )
    if head.size > size:
        problems.append(
            TrailProblem(
                "truncated",
                f"the {what} covers {head.size} entries but the trail holds {size}: "
                "entries were removed from its end",
                seq=size + 1,
            )
        )
    elif head.size > 0 and roots.get(head.size, b"").hex() != head.root:
        problems.append(
            TrailProblem(
                "rewritten",
                f"the first {head.size} entries no longer hash to the {what}'s root: "
                "an entry at or before it was changed",
                seq=head.size,
            )
        )
    return problems


def check_ledger(session: Session, walk: Walk) -> tuple[int, int]:
    """Match the ledger's events and budgets with the trail ``walk`` read, both ways.

    Problems go to ``walk.problems``.

    Returns:
        How many privacy events and budgets were checked.
    """
    if walk.size == 0:
        return 0, 0
    pin = walk.pin if walk.pin is not None else {}
    names = dict(session.execute(select(DatasetRow.id, DatasetRow.name)).all())
    problems = walk.problems
    checked = _check_events(session, walk.ledger_links, pin.get("datasets", {}), names, problems)
    return checked, _check_budgets(session, walk, pin, names, problems)


def _check_events(
    session: Session,
    links: Mapping[int, tuple[int, Mapping[str, Any]]],
    pinned: Mapping[str, Any],
    names: Mapping[int, str],
    problems: list[TrailProblem],
) -> int:
    seen: set[int] = set()
    chains: dict[int, str] = {}
    checked = 0
    rows = session.execute(
        select(
            PrivacyEventRow.id,
            PrivacyEventRow.dataset_id,
            PrivacyEventRow.seq,
            PrivacyEventRow.mechanisms,
            PrivacyEventRow.leaves,
            PrivacyEventRow.chain,
            PrivacyEventRow.actor,
            PrivacyEventRow.purpose,
            PrivacyEventRow.what,
        ).order_by(PrivacyEventRow.dataset_id, PrivacyEventRow.seq)
    ).all()
    for event_id, dataset_id, seq, mechanisms, leaves, chain, actor, purpose, what in rows:
        checked += 1
        name = names.get(dataset_id, f"#{dataset_id}")
        previous = chains.get(dataset_id, GENESIS)
        chains[dataset_id] = ledger_link(previous, seq, mechanisms, leaves)
        mark = pinned.get(str(dataset_id), {"seq": 0, "chain": GENESIS})
        if seq <= mark["seq"]:
            if seq == mark["seq"] and chains[dataset_id] != mark["chain"]:
                problems.append(
                    TrailProblem(
                        "ledger",
                        f"the privacy events of '{name}' charged before the trail began no "
                        "longer match the trail's pin of them (edited or deleted)",
                        seq=1,
                    )
                )
            continue
        entry = links.get(event_id)
        if entry is None:
            problems.append(
                TrailProblem(
                    "ledger",
                    f"privacy event {event_id} of '{name}' (ledger seq {seq}) has no trail entry: "
                    "it was inserted in the database, not charged",
                )
            )
            continue
        trail_seq, body = entry
        link = body.get("links") or {}
        seen.add(event_id)
        recorded = (body.get("actor"), body.get("purpose"), (body.get("details") or {}).get("what"))
        if (
            link.get("ledger_chain") != chain
            or chains[dataset_id] != chain
            or int(link.get("ledger_seq", -1)) != seq
            or recorded != (actor, purpose, what)
        ):
            problems.append(
                TrailProblem(
                    "ledger",
                    f"privacy event {event_id} of '{name}' (ledger seq {seq}) was changed after "
                    f"trail entry {trail_seq} recorded it"
                    + (
                        f" (its who/why/what: {recorded} recorded, {(actor, purpose, what)} now)"
                        if recorded != (actor, purpose, what)
                        else " (its mechanisms or order)"
                    ),
                    seq=trail_seq,
                )
            )
    for dataset_id, mark in pinned.items():
        if int(mark.get("seq", 0)) > 0 and chains.get(int(dataset_id)) is None:
            problems.append(
                TrailProblem(
                    "ledger",
                    f"the privacy events of '{names.get(int(dataset_id), dataset_id)}' charged "
                    "before the trail began were deleted",
                    seq=1,
                )
            )
    present = {r[0] for r in rows}
    for event_id, (trail_seq, _link) in links.items():
        if event_id not in seen and event_id not in present:
            problems.append(
                TrailProblem(
                    "ledger",
                    f"privacy event {event_id}, recorded by trail entry {trail_seq}, is gone "
                    "from the ledger (deleted)",
                    seq=trail_seq,
                )
            )
    return checked


def _check_budgets(
    session: Session,
    walk: Walk,
    pin: Mapping[str, Any],
    names: Mapping[int, str],
    problems: list[TrailProblem],
) -> int:
    pinned = pin.get("datasets", {})
    budgets = 0
    for row in session.scalars(select(PrivacyBudgetRow)).all():
        budgets += 1
        current = {"epsilon": row.epsilon, "delta": row.delta, "rho": row.rho}
        recorded = walk.budget_sets.get(row.dataset_id)
        expected = (
            recorded[1].get("budget")
            if recorded
            else pinned.get(str(row.dataset_id), {}).get("budget")
        )
        if expected != current:
            problems.append(
                TrailProblem(
                    "budget",
                    f"the budget of '{names.get(row.dataset_id, row.dataset_id)}' is "
                    f"{current} in the database but the trail last recorded {expected}: "
                    "it was changed outside Veil",
                    seq=recorded[0] if recorded else None,
                )
            )
    last_pinned_change = int(pin.get("last_budget_change", 0))
    changes = session.execute(
        select(
            BudgetChangeRow.id,
            BudgetChangeRow.actor,
            BudgetChangeRow.reason,
            BudgetChangeRow.epsilon,
            BudgetChangeRow.delta,
            BudgetChangeRow.rho,
        ).where(BudgetChangeRow.id > last_pinned_change)
    ).all()
    present = set()
    for change_id, actor, reason, epsilon, delta, rho in changes:
        present.add(change_id)
        entry = walk.budget_change_links.get(change_id)
        if entry is None:
            problems.append(
                TrailProblem(
                    "budget",
                    f"budget change {change_id} has no trail entry: it was written outside Veil",
                )
            )
            continue
        trail_seq, body = entry
        budget = (body.get("details") or {}).get("budget")
        now = {"epsilon": epsilon, "delta": delta, "rho": rho}
        if (body.get("actor"), body.get("purpose"), budget) != (actor, reason, now):
            problems.append(
                TrailProblem(
                    "budget",
                    f"budget change {change_id} was changed after trail entry {trail_seq} "
                    f"recorded it: {body.get('actor')!r} / {body.get('purpose')!r} / {budget} "
                    f"recorded, {actor!r} / {reason!r} / {now} now",
                    seq=trail_seq,
                )
            )
    for change_id, (trail_seq, _body) in walk.budget_change_links.items():
        if change_id not in present:
            problems.append(
                TrailProblem(
                    "budget",
                    f"budget change {change_id}, recorded by trail entry {trail_seq}, is gone "
                    "(deleted)",
                    seq=trail_seq,
                )
            )
    return budgets
