"""Console fixtures: a gateway and clients signed in to the console as each role.

``console_client(role)`` signs in through the real sign-in form over real HTTP
(the pre-session CSRF cookie, the key, the session cookie back) and returns an
httpx client carrying the session cookie; ``client.csrf()`` reads the CSRF token
off a console page and ``client.submit(url, data)`` posts a form with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


class ConsoleClient(httpx.Client):  # type: ignore[misc, name-defined]
    """An httpx client signed in to the console (see the module)."""

    def csrf(self, url: str = "/console") -> str:
        page = self.get(url)
        assert page.status_code == 200, (url, page.status_code, page.text[:500])
        return csrf_of(page.text)

    def submit(self, url: str, data: dict[str, Any], *, page: str = "/console") -> Any:
        return self.post(url, data={**data, "csrf": self.csrf(page)})


def sign_in(base_url: str, token: str) -> ConsoleClient:
    client = ConsoleClient(base_url=base_url, timeout=60, follow_redirects=False)
    form = client.get("/console/sign-in")
    assert form.status_code == 200, form.text[:500]
    answer = client.post(
        "/console/sign-in", data={"csrf": csrf_of(form.text), "key": token, "next": "/console"}
    )
    assert answer.status_code == 303, answer.text[:500]
    assert client.cookies.get("veil_session"), "no session cookie after sign-in"
    return client


@pytest.fixture
def console_client(gateway: Any) -> Iterator[Callable[[str], ConsoleClient]]:
    """``console_client(role)``: a client signed in with ``role``'s key on ``gateway``."""
    made: list[ConsoleClient] = []

    def make(role: str) -> ConsoleClient:
        client = sign_in(gateway.url, gateway.keys[role])
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
