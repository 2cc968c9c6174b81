"""The console: server-rendered pages for data owners, analysts and auditors at ``/console``.

Every page and form authenticates with a session cookie obtained by signing in
with a service key, checks the same permission the ``/v1`` API checks, calls
the same library functions, and is traced on the trail by the gateway's
middleware like any other request. See ``docs/console.md``.
"""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["routers"]


def routers() -> list[APIRouter]:
    """The console's routers (home and sign-in first)."""
    from veil.serve.console import _access, _datasets, _home, _models, _trail  # noqa: PLC0415

    return [m.router for m in (_home, _datasets, _models, _trail, _access)]
