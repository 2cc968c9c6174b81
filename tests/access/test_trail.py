"""The trail of a real workspace: concurrent appends from processes, and proofs an auditor checks.

On SQLite (a workspace's file, WAL) and PostgreSQL: four processes, each its
own store, interleave reads, charges and refused budget changes; the trail
that results is one valid chain holding every one of them. And an inclusion
proof from a real workspace (its ``trail`` key from the key store) is accepted
by the standalone verifier with the workspace's public key, and by no other.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.context
import runpy
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.access._scenario import DATASET, OWNER, SIZE, laplace, populate

from veil.access import Access, Outcome, Principal, Role
from veil.access.verifier import check_inclusion_proof, head_message, verify_inclusion_proof
from veil.data import Catalog
from veil.ledger import Budget, Ledger
from veil.store import Store
from veil.workspace import Workspace

WORKERS = 4
ACTIONS = 50  # per worker: a read, a charge and a refused budget change, in turn

# One worker: its own store and principal; waits for the others, then acts ACTIONS times.
WORKER = """
import json
from pathlib import Path
from veil.access import Access, Principal
from veil.data import Catalog, DataUse
from veil.errors import PermissionDeniedError
from veil.ledger import Budget, Ledger, Mechanism, PrivacyEvent
from veil.store import Store

store = Store.open(URL)
access = Access(store, Principal(NAME), signing_key=KEY)
catalog, ledger = Catalog(store, access=access), Ledger(store, access=access)
event = PrivacyEvent("count(*)", (Mechanism.laplace(scale=1.0, sensitivity=1.0),))
START.wait(timeout=120)
done = []
for number in range(ACTIONS):
    purpose = f"{NAME} action {number}"
    if number % 3 == 0:
        catalog.load_frame(DATASET, ["age"], use=DataUse.MECHANISM, purpose=purpose)
    elif number % 3 == 1:
        ledger.charge(DATASET, event, purpose=purpose)
    else:
        try:
            ledger.set_budget(DATASET, Budget(epsilon=1), reason=purpose)
        except PermissionDeniedError:
            pass
        else:
            raise AssertionError("an analyst set a budget")
    done.append(purpose)
store.dispose()
Path(RESULT).write_text(json.dumps(done))
"""


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["veil.store", "veil.access", "veil.data", "veil.ledger"])
    return context


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest) -> str:
    """A database several processes share: a workspace's SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("workspace").settings.database_url)
    return str(request.getfixturevalue("postgres_url"))


@pytest.mark.slow
def test_concurrent_processes_leave_one_valid_chain_with_every_action(
    shared_url: str, tmp_path: Path, processes: multiprocessing.context.BaseContext
):
    store = Store.open(shared_url, upgrade=True)
    world = populate(store, tmp_path)
    world.ledger.set_budget(DATASET, Budget(epsilon=1000), reason="room for every charge")
    names = [f"worker{number}" for number in range(WORKERS)]
    for name in names:
        world.owner.grant(name, Role.ANALYST, DATASET, reason="contention")
    before = world.owner.trail.head().size
    assert before == SIZE + 1 + WORKERS
    store.dispose()

    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    start = processes.Barrier(WORKERS + 1)
    workers = [
        processes.Process(
            target=runpy.run_path,
            args=(str(script),),
            kwargs={
                "init_globals": {
                    "URL": shared_url,
                    "NAME": name,
                    "KEY": world.key,
                    "DATASET": DATASET,
                    "ACTIONS": ACTIONS,
                    "START": start,
                    "RESULT": str(tmp_path / f"{name}.json"),
                },
                "run_name": "__worker__",
            },
        )
        for name in names
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait(timeout=120)  # every worker has its store open: all act at once
        for worker in workers:
            worker.join(timeout=300)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
    assert [worker.exitcode for worker in workers] == [0] * WORKERS

    store = Store.open(shared_url)
    try:
        owner = Access(store, Principal(OWNER), signing_key=world.key)
        report = owner.trail.verify(head=world.head)
        assert report.ok, report.problems
        assert report.size == before + WORKERS * ACTIONS
        entries = owner.trail.entries()
        assert [e.seq for e in entries] == list(range(1, report.size + 1))
        refused = sum(1 for number in range(ACTIONS) if number % 3 == 2)
        for name in names:
            done = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
            mine = [e for e in entries if e.actor == name and e.action != "access.grant"]
            assert sorted(e.purpose for e in mine) == sorted(done)
            assert len(mine) == ACTIONS
            outcomes = Counter(e.outcome for e in mine)
            assert outcomes == {Outcome.REFUSED: refused, Outcome.ALLOWED: ACTIONS - refused}
        charges = 3 + WORKERS * sum(1 for number in range(ACTIONS) if number % 3 == 1)
        assert report.ledger_events_checked == charges
        assert Ledger(store, access=owner).status(DATASET).events == charges
    finally:
        store.dispose()


# ------------------------------------------------------------------ the standalone verifier
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def real_workspace(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Workspace:
    """A workspace made as `veil init` makes it, its database on SQLite or PostgreSQL."""
    if request.param == "postgresql":
        monkeypatch.setenv("VEIL_DATABASE_URL", request.getfixturevalue("postgres_url"))
    workspace: Workspace = request.getfixturevalue("workspace")
    return workspace


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.mark.slow
def test_a_proof_from_a_real_workspace_is_checked_by_the_standalone_verifier(
    real_workspace: Workspace, tmp_path: Path
):
    path = tmp_path / "visits.csv"
    path.write_text("age\n" + "".join(f"{20 + i}\n" for i in range(30)), encoding="utf-8")
    catalog = Catalog.open(real_workspace)
    ledger = Ledger.open(real_workspace)
    access = Access.open(real_workspace)
    try:
        catalog.add(path, name=DATASET, bounds={"age": (0, 100)})
        ledger.set_budget(DATASET, Budget(epsilon=5), reason="initial")
        receipt = ledger.charge(DATASET, laplace(), purpose="the release to prove")
        [entry] = access.trail.entries(action="privacy.charge")
        assert entry.links["ledger_event"] == receipt.event_id
        early = access.trail.checkpoint()
        access.grant("erin", Role.AUDITOR, reason="an audit")  # the trail grows past the head
        late = access.trail.checkpoint()
        proof = access.trail.prove(entry.seq)  # against the smallest signed head covering it
        proof_at_late = access.trail.prove(entry.seq, head=late)
    finally:
        for opened in (catalog.store, ledger.store, access.store):
            opened.dispose()

    assert access.trail.public_key is not None
    public_key = bytes.fromhex(access.trail.public_key)
    assert proof["head"]["public_key"] == access.trail.public_key
    document = json.loads(json.dumps(proof))  # as written to a file and read back
    assert verify_inclusion_proof(document, public_key)
    assert proof["head"] == early.to_dict()
    assert proof_at_late["head"]["size"] == late.size > early.size
    assert verify_inclusion_proof(json.loads(json.dumps(proof_at_late)), public_key)
    assert json.loads(document["entry"]["body"])["purpose"] == "the release to prove"

    other_key = Ed25519PrivateKey.generate()
    other = _public(other_key)
    assert not verify_inclusion_proof(document, other)
    assert "another public key" in (check_inclusion_proof(document, other) or "")
    # The same proof with its head re-signed by someone else's key passes only under that key.
    head = document["head"]
    resigned = json.loads(json.dumps(proof))
    resigned["head"]["public_key"] = other.hex()
    resigned["head"]["signature"] = other_key.sign(
        head_message(head["size"], bytes.fromhex(head["root"]), head["timestamp"])
    ).hex()
    assert verify_inclusion_proof(resigned, other)
    assert not verify_inclusion_proof(resigned, public_key)
    # Re-signing is not the only way to fail: an edited body or a proof for another head fail too.
    edited = json.loads(json.dumps(proof))
    edited["entry"]["body"] = edited["entry"]["body"].replace("the release", "a release")
    assert not verify_inclusion_proof(edited, public_key)
    mixed = json.loads(json.dumps(proof_at_late))
    mixed["head"] = proof["head"]
    assert not verify_inclusion_proof(mixed, public_key)
