"""What an audit puts on the trail (veil.audit._records): the model's load and the audit's run.

Both entries link the model, its ledger event and its data's version, so that
an auditor can follow an audit back to the release it measured.
"""

from __future__ import annotations

from types import SimpleNamespace

from veil.access import Access, Outcome, Principal
from veil.audit._records import record_audit, record_load

CARD = SimpleNamespace(
    model="adult-dp",
    dataset="adult",
    dataset_sha256="ab" * 32,
    ledger_event_id=7,
    private=True,
    epsilon=1.5,
)
LINKS = {"model": "adult-dp", "ledger_event": 7, "content_sha256": "ab" * 32}


def test_the_load_and_the_audit_link_the_model_its_ledger_event_and_data_version(store):
    access = Access(store, Principal("alice"))
    record_load(access, CARD, "a membership audit")
    record_audit(access, CARD, "a membership audit", Outcome.FAILED, {"error": "bad input"})
    (loaded,) = access.trail.entries(action="model.load")
    (audited,) = access.trail.entries(action="audit.run")
    assert (loaded.dataset, loaded.purpose, loaded.outcome) == (
        "adult",
        "a membership audit",
        Outcome.ALLOWED,
    )
    assert dict(loaded.links) == dict(audited.links) == LINKS
    assert dict(loaded.details) == {"private": True, "epsilon": 1.5}
    assert (audited.dataset, audited.outcome) == ("adult", Outcome.FAILED)
    assert dict(audited.details) == {"error": "bad input"}
