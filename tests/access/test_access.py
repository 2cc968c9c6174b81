"""Roles and keys under attack: an analyst reaching past the role, keys that must not work or leak.

On SQLite and PostgreSQL: bob, an analyst of the dataset, tries to raise its
budget, to grant himself owner and to read raw rows, through the library
itself (the same checks the CLI goes through); service keys that were revoked,
expired, malformed, unknown or presented with a wrong secret are refused; and
no key's secret reaches the trail, a log record, an error or a ``repr``. Each
refusal is on the trail, recorded as refused.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.access._scenario import DATASET, OWNER, World, laplace, populate

from veil.access import Access, Grant, Outcome, Principal, Role, TrailEntry
from veil.data import Catalog, DataUse
from veil.errors import PermissionDeniedError
from veil.ledger import Budget, Ledger
from veil.store.tables import ServiceKeyRow
from veil.workspace import Settings, login_name

ANALYST = "bob"


@pytest.fixture
def world(store, tmp_path: Path) -> World:
    """The scenario's workspace, with bob granted analyst on its dataset."""
    built = populate(store, tmp_path)
    built.owner.grant(ANALYST, Role.ANALYST, DATASET, reason="a study")
    return built


def last_entry(world: World, actor: str) -> TrailEntry:
    return world.owner.trail.entries(actor=actor)[-1]


def assert_refusal_recorded(world: World, actor: str, action: str, missing: str) -> None:
    entry = last_entry(world, actor)
    assert (entry.action, entry.outcome) == (action, Outcome.REFUSED)
    assert entry.details["missing"] == missing
    assert world.verify().ok  # the refusal joined the chain like any entry


def assert_names_missing_grant(error: PermissionDeniedError, permission: str, role: str) -> None:
    assert error.code == "permission_denied" and error.exit_code == 9
    assert error.details["missing"] == permission
    assert f"may not {permission}" in error.message
    assert role in (error.expected or "")
    assert f"veil access grant {error.details['principal']} " in (error.fix or "")


def budget_of(world: World) -> Budget | None:
    return Ledger(world.store, access=world.access()).status(DATASET).budget


# ------------------------------------------------------------------ an analyst reaching past the role
def test_an_analyst_cannot_raise_a_budget(world: World):
    ledger = Ledger(world.store, access=world.access(ANALYST))
    ledger.charge(DATASET, laplace(), purpose="within the role")  # what an analyst may do
    with pytest.raises(PermissionDeniedError) as refused:
        ledger.set_budget(DATASET, Budget(epsilon=1000), reason="need more")
    assert_names_missing_grant(refused.value, "budget.set", "owner")
    assert refused.value.details["dataset"] == DATASET
    assert budget_of(world) == Budget(epsilon=10)
    assert_refusal_recorded(world, ANALYST, "budget.set", "budget.set")
    assert last_entry(world, ANALYST).purpose == "need more"
    assert last_entry(world, ANALYST).details["held"] == [f"analyst on '{DATASET}'"]


@pytest.mark.parametrize("dataset", [None, DATASET], ids=["workspace", "dataset"])
def test_an_analyst_cannot_grant_themselves_owner(world: World, dataset: str | None):
    bob = world.access(ANALYST)
    with pytest.raises(PermissionDeniedError) as refused:
        bob.grant(ANALYST, Role.OWNER, dataset, reason="promote myself")
    assert_names_missing_grant(refused.value, "access.manage", "owner")
    with pytest.raises(PermissionDeniedError):
        bob.create_key("mine", Role.OWNER, dataset, reason="a key of my own")
    assert world.owner.grants(principal=ANALYST) == [Grant(ANALYST, Role.ANALYST, DATASET)]
    assert world.owner.keys() == []
    assert_refusal_recorded(world, ANALYST, "keys.create", "access.manage")
    actions = [(e.action, e.outcome) for e in world.owner.trail.entries(actor=ANALYST)]
    assert actions == [("access.grant", Outcome.REFUSED), ("keys.create", Outcome.REFUSED)]


def test_an_analyst_cannot_read_raw_rows(world: World):
    catalog = Catalog(world.store, access=world.access(ANALYST))
    with pytest.raises(PermissionDeniedError) as refused:
        catalog.load_frame(DATASET, purpose="a look at the rows")
    assert_names_missing_grant(refused.value, "dataset.read_rows", "owner")
    assert_refusal_recorded(world, ANALYST, "dataset.read", "dataset.read_rows")
    assert [e.outcome for e in world.owner.trail.entries(actor=ANALYST)] == [Outcome.REFUSED]


def test_the_python_api_applies_the_same_checks_as_the_cli(world: World, tmp_path: Path):
    """Ledgers and catalogues check the principal they were built for, however they were built.

    What the Python API prevents: code holding a Ledger or Catalog for an
    analyst (with ``access=``, or with only ``settings`` naming the analyst)
    cannot set budgets, register data or read raw rows, and each attempt is
    on the trail under that name. What it cannot prevent: code that builds
    ``Settings`` (or a ``Principal``) naming someone else acts as that name
    (the CLI takes the name from the operating system, not from its caller),
    and code holding the database credentials can write rows directly; the
    trail records the name it was given, and ``verify`` (above all against an
    exported head) is what catches direct writes.
    """
    url = world.store.display_url
    by_settings = Ledger(world.store, Settings(url, None, ANALYST))
    assert by_settings.access.principal == Principal(ANALYST)
    with pytest.raises(PermissionDeniedError, match=r"bob may not budget\.set"):
        by_settings.set_budget(DATASET, Budget(epsilon=1000), reason="need more")
    assert_refusal_recorded(world, ANALYST, "budget.set", "budget.set")

    nobody = Ledger(world.store, Settings(url, None, "mallory"))
    with pytest.raises(PermissionDeniedError, match=r"mallory may not budget\.spend"):
        nobody.charge(DATASET, laplace(), purpose="free budget")
    assert_refusal_recorded(world, "mallory", "privacy.charge", "budget.spend")

    catalog = Catalog(world.store, Settings(url, None, ANALYST))
    with pytest.raises(PermissionDeniedError, match=r"bob may not dataset\.read_rows"):
        catalog.load_frame(DATASET, use=DataUse.RAW, purpose="a look")
    path = tmp_path / "mine.csv"
    path.write_text("x\n1\n2\n", encoding="utf-8")
    with pytest.raises(PermissionDeniedError, match=r"bob may not dataset\.register"):
        catalog.add(path, name="mine", bounds={"x": (0, 5)})
    assert_refusal_recorded(world, ANALYST, "dataset.register", "dataset.register")
    assert budget_of(world) == Budget(epsilon=10)
    assert [i.name for i in Catalog(world.store, access=world.access()).list()] == [DATASET]


@pytest.mark.slow
def test_veil_actor_cannot_choose_who_sets_a_budget(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from veil.cli._app import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert run("init")[0] == 0
    path = tmp_path / "visits.csv"
    path.write_text("age\n" + "".join(f"{20 + i}\n" for i in range(30)), encoding="utf-8")
    catalog = Catalog.open()
    try:
        catalog.add(path, name=DATASET, bounds={"age": (0, 100)})
    finally:
        catalog.store.dispose()
    assert run("budget", "set", DATASET, "--epsilon", "1")[0] == 0
    trail_before = json.loads(run("trail", "show", "--json", "--limit", "1000")[1])["entries"]
    budget_before = json.loads(run("budget", "show", DATASET, "--json")[1])

    monkeypatch.setenv("VEIL_ACTOR", "mallory")
    code, out, err = run("budget", "set", DATASET, "--epsilon", "100", "--reason", "x", "--json")
    assert code == 3
    assert json.loads(out)["error"]["code"] == "invalid_input"
    assert "VEIL_ACTOR" in err and "mallory" in err
    monkeypatch.delenv("VEIL_ACTOR")

    assert json.loads(run("budget", "show", DATASET, "--json")[1]) == budget_before
    trail_after = json.loads(run("trail", "show", "--json", "--limit", "1000")[1])["entries"]
    assert trail_after == trail_before
    assert "mallory" not in json.dumps(trail_after)
    assert run("trail", "verify")[0] == 0


# ------------------------------------------------------------------ service keys
def key_settings(world: World, token: str) -> Settings:
    return Settings(world.store.display_url, None, login_name(), service_key=token)


def act_with(world: World, token: str) -> Access:
    """A new process's access, acting with ``token`` (VEIL_KEY)."""
    return Access(world.store, settings=key_settings(world, token), signing_key=world.key)


def test_a_revoked_key_is_refused_and_the_refusal_is_recorded(world: World):
    info, token = world.owner.create_key("etl", Role.ANALYST, DATASET, reason="nightly job")
    assert act_with(world, token).principal.name == "svc:etl"
    world.owner.revoke_key(info.key_id, reason="leaked")
    with pytest.raises(PermissionDeniedError) as refused:
        _ = act_with(world, token).principal
    assert f"key {info.key_id}: the key was revoked" in (refused.value.got or "")
    entry = last_entry(world, f"key:{info.key_id}")
    assert (entry.action, entry.outcome) == ("key.use", Outcome.REFUSED)
    assert entry.details["key_id"] == info.key_id
    assert world.verify().ok


def test_a_revoked_key_stops_working_in_a_process_that_already_used_it(world: World):
    info, token = world.owner.create_key("etl", Role.ANALYST, DATASET, reason="nightly job")
    service = act_with(world, token)
    service.max_age = 0.0  # check for changes at every call
    Ledger(world.store, access=service).charge(DATASET, laplace(), purpose="before")
    world.owner.revoke_key(info.key_id, reason="leaked")
    with pytest.raises(PermissionDeniedError):
        Ledger(world.store, access=service).charge(DATASET, laplace(), purpose="after")


def test_cached_grants_are_given_only_while_fresh_and_never_read_the_database(world: World):
    info, token = world.owner.create_key("etl", Role.ANALYST, DATASET, reason="nightly job")
    service = act_with(world, token)
    service.max_age = 0.5
    assert service.cached_policy() is None  # never read: only policy() can say
    policy = service.policy()
    assert service.cached_policy() is policy
    world.owner.revoke_key(info.key_id, reason="leaked")
    assert service.cached_policy() is policy  # within max_age, as policy() itself
    time.sleep(0.6)
    assert service.cached_policy() is None  # stale: the caller must ask policy()
    with pytest.raises(PermissionDeniedError):
        service.policy()
    assert service.cached_policy() is None


@pytest.mark.slow
def test_a_key_that_expires_while_in_use_stops_working(world: World):
    info, token = world.owner.create_key(
        "etl", Role.ANALYST, DATASET, expires_in=timedelta(seconds=2), reason="one run"
    )
    service = act_with(world, token)
    Ledger(world.store, access=service).charge(DATASET, laplace(), purpose="in time")
    time.sleep(2.1)  # the same process, past the key's expiry, no grant changed meanwhile
    with pytest.raises(PermissionDeniedError) as refused:
        Ledger(world.store, access=service).charge(DATASET, laplace(), purpose="too late")
    assert "expired" in (refused.value.got or "")
    entry = last_entry(world, f"key:{info.key_id}")
    assert (entry.action, entry.outcome) == ("key.use", Outcome.REFUSED)
    assert [e.purpose for e in world.owner.trail.entries(action="privacy.charge")][-1] == "in time"


def test_an_expired_key_is_refused_and_the_refusal_is_recorded(world: World):
    info, token = world.owner.create_key(
        "etl", Role.ANALYST, DATASET, expires_in=timedelta(hours=1), reason="one run"
    )
    assert act_with(world, token).principal.name == "svc:etl"
    with world.store.session() as session:
        row = session.get(ServiceKeyRow, info.key_id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(PermissionDeniedError) as refused:
        Ledger(world.store, key_settings(world, token)).charge(DATASET, laplace(), purpose="late")
    assert f"key {info.key_id}: the key was expired" in (refused.value.got or "")
    entry = last_entry(world, f"key:{info.key_id}")
    assert (entry.action, entry.outcome) == ("key.use", Outcome.REFUSED)
    assert [e.action for e in world.owner.trail.entries(actor="svc:etl")] == []


def test_a_key_scoped_below_its_services_grants_is_held_to_its_scope(world: World):
    world.owner.grant("svc:etl", Role.OWNER, reason="the service administers the workspace")
    _, token = world.owner.create_key("etl", Role.CONSUMER, reason="a prediction-only key")
    service = act_with(world, token)
    with pytest.raises(PermissionDeniedError) as refused:
        Ledger(world.store, access=service).set_budget(DATASET, Budget(epsilon=99), reason="x")
    assert refused.value.details["missing"] == "budget.set"
    entry = last_entry(world, "svc:etl")
    assert (entry.action, entry.outcome) == ("budget.set", Outcome.REFUSED)
    assert budget_of(world) == Budget(epsilon=10)


def secret_part(token: str) -> str:
    """The secret of ``veil_sk_<12 hex digits>_<secret>`` (base64url: it may hold ``_``)."""
    return token[len("veil_sk_" + "0" * 12 + "_") :]


def _secrets_of(token: str) -> list[str]:
    """The forms a key's secret could leak in: the token, its secret part, the raw bytes."""
    encoded = secret_part(token)
    raw = base64.urlsafe_b64decode(encoded + "=")
    return [token, encoded, raw.hex(), base64.b64encode(raw).decode("ascii")]


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {r.__dict__!r}" for r in caplog.records
    )


def test_a_key_never_appears_in_the_trail_logs_errors_or_settings(
    world: World, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    info, token = world.owner.create_key("etl", Role.ANALYST, DATASET, reason="nightly job")
    service = act_with(world, token)
    Ledger(world.store, access=service).charge(DATASET, laplace(), purpose="with the key")
    errors: list[PermissionDeniedError] = []
    with pytest.raises(PermissionDeniedError) as refused:
        Ledger(world.store, access=service).set_budget(DATASET, Budget(epsilon=99), reason="x")
    errors.append(refused.value)
    world.owner.revoke_key(info.key_id, reason="rotation")
    with pytest.raises(PermissionDeniedError) as refused:
        _ = act_with(world, token).principal
    errors.append(refused.value)

    with world.store.session() as session:
        row = session.get(ServiceKeyRow, info.key_id)
        assert row is not None
        stored_hash = row.secret_hash
    secret_forms = [*_secrets_of(token), stored_hash, stored_hash.rsplit("$", 1)[1]]
    trail = "\n".join(
        str(r)
        for r in world.rows("SELECT * FROM trail_entries") + world.rows("SELECT * FROM trail_heads")
    )
    assert info.key_id in trail  # the key is named on the trail, by its public id ...
    listed = world.owner.keys()
    places = {
        "trail": trail,
        "logs": _log_text(caplog),
        "errors": "\n".join(f"{e} {json.dumps(e.to_dict())} {e!r}" for e in errors),
        "settings": f"{key_settings(world, token)!r} {key_settings(world, token)}",
        "principal": f"{service.principal!r} {json.dumps(service.principal.to_dict())}",
        "key list": json.dumps([k.to_dict() for k in listed]) + repr(info),
    }
    for place, text in places.items():  # ... and its secret nowhere
        for form in secret_forms:
            assert form not in text, f"a form of the key's secret is in the {place}"


def test_bad_tokens_are_refused_alike_and_recorded_without_the_secret(world: World):
    info, token = world.owner.create_key("etl", Role.ANALYST, DATASET, reason="nightly job")
    _, other = world.owner.create_key("bi", Role.ANALYST, DATASET, reason="dashboards")
    wrong_secret = f"veil_sk_{info.key_id}_{secret_part(other)}"
    unknown_id = f"veil_sk_{'0' * 12}_{secret_part(token)}"
    malformed = token[:-5] + "!!!!!"
    presented = {"malformed": malformed, "unknown id": unknown_id, "wrong secret": wrong_secret}
    errors = {}
    for what, bad in presented.items():
        with pytest.raises(PermissionDeniedError) as refused:
            act_with(world, bad).authenticate(bad)
        errors[what] = refused.value
    shapes = {(e.code, e.exit_code, e.message, e.expected, e.fix) for e in errors.values()}
    assert len(shapes) == 1, shapes  # one message for every way a key can be wrong
    assert (
        errors["malformed"].got
        == "key (malformed): it is not a Veil service key (veil_sk_<id>_<secret>)"
    )
    # An unknown id and a known id with the wrong secret read the same: nothing tells
    # someone guessing which of the two they hit.
    assert errors["unknown id"].got == f"key {'0' * 12}: no key with this id and secret exists"
    assert errors["wrong secret"].got == f"key {info.key_id}: no key with this id and secret exists"

    refusals = world.owner.trail.entries(action="key.use")
    assert [(e.actor, e.outcome) for e in refusals] == [
        ("key:unknown", Outcome.REFUSED),
        (f"key:{'0' * 12}", Outcome.REFUSED),
        (f"key:{info.key_id}", Outcome.REFUSED),
    ]
    recorded = "\n".join(e.body for e in refusals) + json.dumps(
        [e.to_dict() for e in errors.values()]
    )
    for bad in presented.values():
        for form in (bad, secret_part(bad)):
            assert form not in recorded
    assert act_with(world, token).principal.name == "svc:etl"  # the real key still works
    assert OWNER not in {e.actor for e in refusals}
