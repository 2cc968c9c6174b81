"""The console: server-rendered pages for data owners, analysts and auditors at ``/console``.

Every page and form authenticates with a session cookie obtained by signing in
with a service key, checks the same permission the ``/v1`` API checks, calls
the same library functions, and is traced on the trail by the gateway's
middleware like any other request. See ``docs/console.md``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

__all__ = ["PREFIX", "install", "routers"]

PREFIX = "/console"


def routers() -> list[APIRouter]:
    """The console's routers (home and sign-in first)."""
    from veil.serve.console import _access, _datasets, _home, _models, _trail  # noqa: PLC0415

    return [m.router for m in (_home, _datasets, _models, _trail, _access)]


def install(app: Any) -> None:
    """Add the console to the gateway ``app``: its pages, static files and HTML refusals."""
    from starlette.staticfiles import StaticFiles  # noqa: PLC0415

    from veil.serve._errors import html_errors  # noqa: PLC0415
    from veil.serve.console._home import sign_in_redirect  # noqa: PLC0415
    from veil.serve.console._render import STATIC_PREFIX, error_page  # noqa: PLC0415
    from veil.serve.console._session import SignInRequired  # noqa: PLC0415

    html_errors[PREFIX] = error_page
    app.add_exception_handler(SignInRequired, sign_in_redirect)
    for router in routers():
        app.include_router(router)
    app.mount(
        STATIC_PREFIX,
        StaticFiles(packages=[("veil.serve.console", "static")], follow_symlink=False),
        name="console-static",
    )
