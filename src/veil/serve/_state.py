"""What one worker of the service holds: :class:`ServeState`, built at start-up.

One per worker process: the store (its connection pool), the trail spool, the
limits, the serving policy, the loaded models and the monitor. Requests reach
it through :func:`get_state`. An :class:`~veil.access.Access` (and its
catalogue and ledger) is kept per service key, so a key's grants are read once
and checked again only when they change (``Access.max_age``), and the
ledger's composed histories stay warm between requests.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from veil.access import Access, Principal
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.data import Catalog
    from veil.ledger import Ledger
    from veil.serve._config import ServeConfig
    from veil.store import Store

__all__ = ["VERIFY_SLOTS", "ServeState", "get_state"]

VERIFY_SLOTS = 2


@dataclass
class ServeState:
    """The service's parts in one worker (see ``serve.md`` in the docs for each one's job)."""

    config: ServeConfig
    workspace: Workspace
    store: Store
    signing_key: bytes
    ledger_key: bytes
    operator: Access
    spool: Any
    limits: Any
    policy: Any
    models: Any
    monitor: Any
    log: logging.Logger
    ready: bool = True
    flood: Any = None  # veil.serve._app.Flood: refusals before authentication, counted
    # Checks of tokens this worker has not verified yet (scrypt, ~65 ms of CPU each) run at
    # most this many at once; see veil.serve._auth.
    verify_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(VERIFY_SLOTS), repr=False
    )
    verifying: dict[str, Future[Principal]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _accesses: dict[str, Access] = field(default_factory=dict, repr=False)
    _catalogs: dict[str, Catalog] = field(default_factory=dict, repr=False)
    _ledgers: dict[str, Ledger] = field(default_factory=dict, repr=False)

    def access(self, principal: Principal) -> Access:
        """The :class:`Access` of ``principal`` (one per key, kept)."""
        name = principal.key_id or principal.name
        found = self._accesses.get(name)
        if found is None:
            with self._lock:
                found = self._accesses.get(name)
                if found is None:
                    found = Access(self.store, principal, signing_key=self.signing_key)
                    self._accesses[name] = found
        return found

    def forget(self, principal: Principal) -> None:
        """Drop what is kept for a key (revoked or expired)."""
        name = principal.key_id or principal.name
        with self._lock:
            self._accesses.pop(name, None)
            self._catalogs.pop(name, None)
            self._ledgers.pop(name, None)

    def catalog(self, access: Access) -> Catalog:
        """The catalogue as ``access``'s principal sees it."""
        from veil.data import Catalog  # noqa: PLC0415 - pandas: only when a route needs it

        name = access.principal.key_id or access.principal.name
        found = self._catalogs.get(name)
        if found is None:
            found = Catalog(
                self.store, self.workspace.settings, access=access, workspace=self.workspace
            )
            self._catalogs[name] = found
        return found

    def ledger(self, access: Access) -> Ledger:
        """The workspace ledger (the one budget gate) acting as ``access``'s principal."""
        from veil.ledger import Ledger  # noqa: PLC0415

        name = access.principal.key_id or access.principal.name
        found = self._ledgers.get(name)
        if found is None:
            found = Ledger(self.store, self.workspace.settings, key=self.ledger_key, access=access)
            self._ledgers[name] = found
        return found


async def get_state(request: Request) -> ServeState:
    """The worker's :class:`ServeState` (a FastAPI dependency).

    ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a
    hop that costs more than this attribute read.
    """
    state: ServeState = request.app.state.veil
    return state
