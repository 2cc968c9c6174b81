"""The trail's status reads consistently while a verification finishes.

A verification records its ``trail.verify`` entry, then says it is done. The
status must read the running job before the trail: read the other way round,
a verification that finished between the two reads showed as done with no
last verification (a full run in CI caught it once). The test below makes that
interleaving happen every time: the trail's page read completes the job just
after it has read the entries.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from veil.access import Access, Principal
from veil.serve._trail_routes import Verification, _now, _run, _Verifier, status_of
from veil.store import Store


class _FinishesAfterPaging:
    """The real trail; its first ``page`` read is followed by the job's end."""

    def __init__(self, access: Access, job: Verification) -> None:
        self._access, self._job, self._done = access, job, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._access.trail, name)

    def page(self, **query: Any) -> Any:
        found = self._access.trail.page(**query)
        if not self._done:
            self._done = True
            _run(self._job, self._access)  # the verification ends right after the read
        return found


def test_a_status_that_shows_a_verification_done_shows_its_entry() -> None:
    access = Access(Store.open("sqlite://", upgrade=True), Principal("alice"))
    access.record("dataset.read", dataset="adult")  # something to verify
    verifier = _Verifier()
    job = Verification(1, "alice", _now())
    verifier.current = job
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace()))
    request.app.state.veil_trail_verifier = verifier
    trail: Any = _FinishesAfterPaging(access, job)

    during = status_of(request, trail)
    assert job.state == "done"  # it did finish in the middle of that status
    if during["running"]["state"] == "done":  # the order this test rules out
        assert during["last_verification"] is not None
    assert during["running"]["state"] == "running"

    after = status_of(request, trail)
    assert after["running"]["state"] == "done"
    assert after["running"]["result"]["ok"] is True
    assert after["last_verification"]["seq"] == after["running"]["result"]["seq"]
