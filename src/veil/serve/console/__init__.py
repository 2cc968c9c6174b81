"""The console: server-rendered pages for data owners, analysts and auditors at ``/console``.

Every page and form authenticates with a session cookie obtained by signing in
with a service key, checks the same permission the ``/v1`` API checks, calls
the same library functions, and is traced on the trail by the gateway's
middleware like any other request. See ``docs/console.md``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

__all__ = ["PREFIX", "install", "routers", "warm"]

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


def warm(state: Any) -> None:
    """Before the first request: compile the templates and compose each dataset's RDP curves.

    A worker's first dataset page otherwise pays for them (899 ms at 100,000
    releases, measured by ``veil bench serve --parts console``); here the cost
    moves to start-up, and the curves land in the process's shared cache.
    Only datasets whose ledger the operator may read are composed, so warming
    records nothing on the trail; a failure is logged, never fatal.
    """
    from sqlalchemy import select  # noqa: PLC0415

    from veil.access import Permission  # noqa: PLC0415
    from veil.serve.console._render import environment  # noqa: PLC0415
    from veil.store.tables import DatasetRow  # noqa: PLC0415

    try:
        templates = environment()
        for name in templates.list_templates(filter_func=lambda n: n.endswith(".html")):
            templates.get_template(name)
        with state.store.session() as session:
            names = list(session.scalars(select(DatasetRow.name)).all())
        operator = state.operator
        ledger = state.ledger(operator)
        for name in names:
            if operator.allows(Permission.LEDGER_READ, name):
                ledger.status(name, cross_check=True)
    except Exception:
        state.log.warning("console warm-up failed; first pages will be slower", exc_info=True)
