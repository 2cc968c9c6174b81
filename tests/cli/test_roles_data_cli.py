"""Roles at the CLI for data, queries and models: a refusal exits 9 with the library's message.

The person running the tests owns the workspace (the first to act claims it);
the other principal is a service acting through a key in ``VEIL_KEY``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.access import Access
from veil.cli._app import main
from veil.workspace import Workspace

EXIT_PERMISSION_DENIED = 9


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def registered(capsys: pytest.CaptureFixture[str], workspace: Workspace) -> Workspace:
    path = Path("people.csv")
    path.write_text("age\n" + "".join(f"{20 + i % 50}\n" for i in range(200)), encoding="utf-8")
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", "people", "--bounds", "age=0:120"
    )
    assert code == 0, err
    code, _, err = run(capsys, "budget", "set", "people", "--epsilon", "5")
    assert code == 0, err
    return workspace


def service(workspace: Workspace, role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Act, from now on, as svc:NAME holding ``role`` on 'people'."""
    access = Access.open(workspace)
    try:
        _, token = access.create_key(f"{role}-bot", role, "people", reason="test")
    finally:
        access.store.dispose()
    monkeypatch.setenv("VEIL_KEY", token)


def trail(workspace: Workspace, actor: str) -> list[tuple[str, str]]:
    access = Access.open(workspace)
    try:
        return [(e.action, str(e.outcome)) for e in access.trail.entries(actor=actor)]
    finally:
        access.store.dispose()


def test_an_auditor_query_exits_9_before_any_read(
    capsys: pytest.CaptureFixture[str], registered: Workspace, monkeypatch: pytest.MonkeyPatch
):
    service(registered, "auditor", monkeypatch)
    code, _, err = run(
        capsys, "query", "people", "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "1"
    )
    assert code == EXIT_PERMISSION_DENIED, err
    assert "permission_denied" in err and "svc:auditor-bot may not budget.spend" in err
    assert trail(registered, "svc:auditor-bot") == [("privacy.charge", "refused")]


def test_an_analyst_queries_and_its_read_is_on_the_trail(
    capsys: pytest.CaptureFixture[str], registered: Workspace, monkeypatch: pytest.MonkeyPatch
):
    service(registered, "analyst", monkeypatch)
    code, out, err = run(
        capsys, "query", "people", "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "1", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["rows"]
    actions = trail(registered, "svc:analyst-bot")
    assert ("dataset.read", "allowed") in actions
    assert ("privacy.charge", "allowed") in actions


def test_a_consumer_sees_no_datasets_and_cannot_register(
    capsys: pytest.CaptureFixture[str], registered: Workspace, monkeypatch: pytest.MonkeyPatch
):
    service(registered, "consumer", monkeypatch)
    code, out, err = run(capsys, "datasets", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    code, _, err = run(capsys, "datasets", "show", "people")
    assert code == EXIT_PERMISSION_DENIED, err
    code, _, err = run(capsys, "datasets", "remove", "people")
    assert code == EXIT_PERMISSION_DENIED and "dataset.register" in err
    assert trail(registered, "svc:consumer-bot") == [
        ("dataset.metadata", "refused"),
        ("dataset.remove", "refused"),
    ]
