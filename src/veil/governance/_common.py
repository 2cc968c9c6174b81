"""What erasure and retention share: the managed-data check and the reference-dataset refusal."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from veil.errors import InvalidInputError

if TYPE_CHECKING:
    from veil.data import DatasetInfo

__all__ = ["BUDGET_NOTE", "crash_point", "require_managed", "require_reason"]

CRASH_VARIABLE = "VEIL_TEST_CRASH_AT"

BUDGET_NOTE = (
    "budgets are never refunded: the dataset keeps its budget and ledger across versions, "
    "and releases made before stay counted"
)


def require_managed(info: DatasetInfo, *, doing: str) -> None:
    """Refuse ``doing`` on a reference dataset: Veil does not own its file.

    Raises:
        ConflictError: ``info`` is a reference dataset (decision 1 of issue 23).
    """
    if not info.managed:
        from veil.data import reference_refusal  # noqa: PLC0415 - pandas; keeps --help light

        raise reference_refusal(info, doing)


def require_reason(reason: str) -> str:
    """A non-empty reason: every erasure and policy is on the trail with why."""
    text = (reason or "").strip()
    if not text:
        raise InvalidInputError(
            "a reason is required",
            expected="a short reason (recorded on the trail and in the erasure record)",
            got=repr(reason),
            fix='for example --reason "GDPR art. 17 request #1234"',
        )
    return text


def crash_point(step: str) -> None:
    """SIGKILL this process when ``VEIL_TEST_CRASH_AT`` is ``governance.<step>`` (tests only).

    The crash tests run ``veil erase`` and ``veil retention run`` in a child
    process and check that the old or the new version is current afterwards,
    never neither. A real kill -9: no rollback, no ``finally``, no flush (the
    same variable as the catalogue's ``managed.<step>`` points).
    """
    if os.environ.get(CRASH_VARIABLE) == f"governance.{step}":
        os.kill(os.getpid(), signal.SIGKILL)
