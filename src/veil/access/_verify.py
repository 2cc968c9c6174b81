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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil.access._entries import TreeHead
from veil.access._merkle import Frontier
from veil.access.verifier import leaf_hash, verify_head
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
        }


class Walk:
    """One pass over the rows: chain, leaves, columns against bodies, roots at given sizes."""

    def __init__(self, problems: list[TrailProblem]) -> None:
        self.problems = problems
        self.size = 0
        self.chain = GENESIS
        self.frontier = Frontier()
        self.ledger_links: dict[int, tuple[int, Mapping[str, Any]]] = {}
        self.budget_sets: dict[int, tuple[int, Mapping[str, Any]]] = {}
        self.budget_change_links: dict[int, int] = {}
        self.pin: Mapping[str, Any] | None = None
        self._chain_bytes = bytes.fromhex(GENESIS)

    def run(
        self, rows: Iterator[Sequence[Any]], sizes: list[int], progress: ProgressCallback | None
    ) -> dict[int, bytes]:
        """Walk ``rows`` in order; return the Merkle root at each of ``sizes`` reached."""
        roots: dict[int, bytes] = {}
        wanted = iter(sizes)
        next_size = next(wanted, None)
        expected_seq = 1
        self._chain_bytes = bytes.fromhex(self.chain)
        frontier = self.frontier
        for row in rows:
            seq = row[0]
            if seq != expected_seq:
                self.problems.append(
                    TrailProblem(
                        "gap" if seq > expected_seq else "order",
                        f"entry {expected_seq} is missing: the next row is {seq}",
                        seq=expected_seq,
                    )
                )
            frontier.append(self._entry(row))
            self.size = seq
            expected_seq = seq + 1
            while next_size is not None and next_size <= seq:
                if next_size == seq:
                    roots[next_size] = frontier.root()
                next_size = next(wanted, None)
            if progress is not None and seq % VERIFY_BATCH == 0:
                emit(progress, "verify trail", seq, unit="entries")
        self.chain = self._chain_bytes.hex()
        return roots

    def _entry(self, row: Sequence[Any]) -> bytes:
        """Check one row (leaf, chain, columns against the body); return its leaf hash."""
        seq, body, leaf_hex, chain_hex, actor, action, dataset, outcome = row
        leaf = leaf_hash(body.encode("utf-8"))
        if leaf.hex() != leaf_hex:
            self.problems.append(
                TrailProblem("edited", f"entry {seq}'s body does not hash to its leaf", seq=seq)
            )
        self._chain_bytes = hashlib.sha256(self._chain_bytes + leaf).digest()
        if self._chain_bytes.hex() != chain_hex:
            self.problems.append(
                TrailProblem(
                    "chain", f"entry {seq} does not link to the entries before it", seq=seq
                )
            )
            self._chain_bytes = bytes.fromhex(chain_hex)  # report each break once, not every row
        try:
            data = json.loads(body)
            agrees = (data["seq"], data["actor"], data["action"], data["dataset"]) == (
                seq,
                actor,
                action,
                dataset,
            ) and data["outcome"] == outcome
        except (ValueError, KeyError, TypeError):
            data, agrees = {}, False
        if not agrees:
            self.problems.append(
                TrailProblem("columns", f"entry {seq}'s columns disagree with its body", seq=seq)
            )
        if data:
            self._note(seq, data)
        return leaf

    def _note(self, seq: int, data: Mapping[str, Any]) -> None:
        action = data.get("action")
        links = data.get("links") or {}
        if action == "trail.start" and seq == 1:
            self.pin = data.get("details", {}).get("ledger", {})
        elif action in ("privacy.charge", "privacy.non_private") and "ledger_event" in links:
            self.ledger_links[int(links["ledger_event"])] = (seq, links)
        elif action == "budget.set" and data.get("outcome") == "allowed" and "dataset_id" in links:
            self.budget_sets[int(links["dataset_id"])] = (seq, data.get("details", {}))
            if "budget_change" in links:
                self.budget_change_links[int(links["budget_change"])] = seq


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


def check_ledger(
    session: Session,
    links: Mapping[int, tuple[int, Mapping[str, Any]]],
    walk: Walk,
    problems: list[TrailProblem],
) -> tuple[int, int]:
    """Match the ledger's events and budgets with the trail, both ways.

    Returns:
        How many privacy events and budgets were checked.
    """
    if walk.size == 0:
        return 0, 0
    pin = walk.pin if walk.pin is not None else {}
    names = dict(session.execute(select(DatasetRow.id, DatasetRow.name)).all())
    checked = _check_events(session, links, pin.get("datasets", {}), names, problems)
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
        ).order_by(PrivacyEventRow.dataset_id, PrivacyEventRow.seq)
    ).all()
    for event_id, dataset_id, seq, mechanisms, leaves, chain in rows:
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
        trail_seq, link = entry
        seen.add(event_id)
        if (
            link.get("ledger_chain") != chain
            or chains[dataset_id] != chain
            or int(link.get("ledger_seq", -1)) != seq
        ):
            problems.append(
                TrailProblem(
                    "ledger",
                    f"privacy event {event_id} of '{name}' (ledger seq {seq}) was changed after "
                    f"trail entry {trail_seq} recorded it",
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
    for (change_id,) in session.execute(
        select(BudgetChangeRow.id).where(BudgetChangeRow.id > last_pinned_change)
    ).all():
        if change_id not in walk.budget_change_links:
            problems.append(
                TrailProblem(
                    "budget",
                    f"budget change {change_id} has no trail entry: it was written outside Veil",
                )
            )
    return budgets
