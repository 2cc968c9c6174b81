"""Who acts in a command, and what it leaves on the trail (commands outside the catalogue and ledger).

The catalogue and the ledger check roles and record on their own. The commands
that work on keys, plain files and model files (``vault``, ``scan``,
``anonymize``, ``redact``, ``he compile``, ``db upgrade``) hold an
:class:`~veil.access.Access` of their workspace here instead. A command that
works on plain files without a workspace keeps working without one: with no
workspace there is nobody to check and nowhere to record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from veil.errors import NotFoundError, VeilError
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.access import Access

__all__ = ["failure_recorded", "find_workspace", "workspace_access"]


def find_workspace() -> Workspace | None:
    """The workspace of the current directory (or ``VEIL_HOME``), or ``None`` when there is none."""
    try:
        return Workspace.locate()
    except NotFoundError:
        return None


@contextmanager
def workspace_access(workspace: Workspace) -> Iterator[Access]:
    """The acting principal's :class:`~veil.access.Access` on ``workspace`` (store closed after)."""
    from veil.access import Access  # noqa: PLC0415 - SQLAlchemy: keeps `veil --help` fast
    from veil.store import Store  # noqa: PLC0415

    store = Store.for_workspace(workspace)
    try:
        yield Access.open(workspace, store=store)
    finally:
        store.dispose()


@contextmanager
def failure_recorded(
    access: Access | None,
    action: str,
    *,
    dataset: str | None = None,
    purpose: str = "",
    details: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Record ``action`` as failed if the block raises (then re-raise); nothing if it succeeds.

    The entry names the error's stable code (or its type), never its message:
    a message may quote a value from the data. ``access=None`` (no workspace)
    records nothing.
    """
    if access is None:
        yield
        return
    from veil.access import Outcome  # noqa: PLC0415

    try:
        yield
    except BaseException as exc:
        error = exc.code if isinstance(exc, VeilError) else type(exc).__name__
        try:
            access.record(
                action,
                dataset=dataset,
                purpose=purpose,
                outcome=Outcome.FAILED,
                details={**(details or {}), "error": error},
            )
        except Exception as unrecorded:  # noqa: BLE001 - the action's own error comes first
            exc.add_note(f"the failure could not be recorded on the trail: {unrecorded}")
        raise
