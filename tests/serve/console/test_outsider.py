"""The console attacked from outside and walked by lesser roles, over real HTTP (issue 25).

Every test runs against the gateway of ``tests/serve/conftest.py`` (uvicorn,
the digits workspace, a key per role) and signs in through the real form.
What is checked: markup stored through every form a person can fill (and
echoed from the address bar) comes back as text on every page that shows it;
sessions end when their row says so and belong to one workspace; no GET
changes anything; odd methods and oversized input get a clean 4xx page; each
role gets from every console route what it gets from the matching ``/v1``
route; every page is served under the CSP and carries no inline code.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from tests.serve.console.conftest import ConsoleClient, csrf_of

from veil.access import parse_key

httpx = pytest.importorskip("httpx")

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:uvicorn"),
]

X = '"\'><script>alert(1)</script><img src=x onerror=alert(2)><a href="javascript:alert(3)">'
MODEL = "digits-lr"


class _Inline(HTMLParser):
    """What a page must never contain, read as a browser reads tags and attributes: a script
    that is neither a file nor a JSON data block, a style element or attribute, an event
    handler attribute, a ``javascript:`` URL."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script" and "src" not in named and named.get("type") != "application/json":
            self.found.append(f"inline <script {attrs}>")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}={value!r}>")
            link = name in ("href", "src", "action", "formaction") and value is not None
            if link and str(value).strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")


def _inline(body: str) -> list[str]:
    parser = _Inline()
    parser.feed(body)
    parser.close()
    return parser.found


def _db(gateway: Any) -> sqlite3.Connection:
    return sqlite3.connect(gateway.home / "veil.db")


def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _no_markup_from(page: Any, where: str) -> None:
    """``page`` shows no live markup of the payload and is served under the CSP."""
    body = page.text
    assert "<script>alert" not in body and "<img src=x" not in body, where
    found = _inline(body)
    assert not found, (where, found)
    assert "script-src 'self'" in page.headers.get("content-security-policy", ""), where


def _key_id(token: str) -> str:
    parsed = parse_key(token)
    assert parsed is not None
    return parsed[0]


# ---------------------------------------------------------------- stored and reflected markup
def test_markup_typed_into_any_form_or_address_is_text_on_every_page(
    console_client: Any, gateway: Any
) -> None:
    owner: ConsoleClient = console_client("owner")
    sql = f"SELECT COUNT(*) FROM digits -- {X}"
    answer = owner.submit(
        "/console/datasets/digits/query",
        {"sql": sql, "epsilon": "0.1", "purpose": X, "mechanism": "auto"},
    )
    assert answer.status_code == 200, _text(answer.text)[:600]
    _no_markup_from(answer, "query answer")
    bad = owner.submit("/console/datasets/digits/query", {"sql": X, "epsilon": X, "purpose": X})
    assert 400 <= bad.status_code < 500
    _no_markup_from(bad, "refused query")
    budget = owner.submit(
        "/console/datasets/digits/budget", {"epsilon": "11", "delta": "1e-4", "reason": X}
    )
    assert budget.status_code == 303, _text(budget.text)[:600]
    grant = owner.submit(
        "/console/access/grants",
        {"principal": "svc:someone", "role": "auditor", "dataset": "digits", "reason": X},
    )
    assert grant.status_code == 303, _text(grant.text)[:600]
    refused = owner.submit(
        "/console/access/grants", {"principal": X, "role": X, "dataset": X, "reason": X}
    )
    assert refused.status_code == 422
    _no_markup_from(refused, "refused grant")
    _, spare = gateway.state.operator.create_key("spare", "consumer", None)
    revoked = owner.submit(f"/console/access/keys/{_key_id(spare)}/revoke", {"reason": X})
    assert revoked.status_code == 303, _text(revoked.text)[:600]
    gateway.state.spool.flush()
    with _db(gateway) as db:
        last = db.execute("SELECT max(seq) FROM trail_entries").fetchone()[0]
        marked = [
            seq
            for seq, body in db.execute("SELECT seq, body FROM trail_entries").fetchall()
            if "alert(1)" in body
        ]
    assert marked, "the payload reached the trail"
    pages = [
        "/console",
        "/console/datasets",
        "/console/datasets/digits",
        f"/console/datasets/digits?purpose={X}&actor={X}&operation={X}&mechanism={X}",
        f"/console/datasets/digits?done={X}",
        f"/console/datasets/digits?since={X}",
        "/console/access",
        f"/console/access?done={X}",
        "/console/trail",
        f"/console/trail?actor={X}&dataset=digits&action={X[:60]}",
        f"/console/trail?verify={X}",
        f"/console/trail?since={X}",
        f"/console/models/{MODEL}",
        f"/console/sign-in?next={X}",
        f"/console/sign-in?next=/console/{X}",
        f"/console/{X}",
        f"/console/trail/{last}",
        *(f"/console/trail/{seq}" for seq in marked[-5:]),
    ]
    shown = 0
    for path in pages:
        page = owner.get(path)
        assert page.status_code < 500, (path, page.status_code)
        _no_markup_from(page, path)
        shown += "<script>alert(1)" in _text(page.text)
    assert shown >= 8, "the payload should be shown, as text, on the pages that list it"


def test_a_value_closing_a_script_tag_stays_inside_the_json_block() -> None:
    from veil.serve.console._render import environment

    block = '<script type="application/json" id="d">{{ data|tojson }}</script>'
    out = environment().from_string(block).render(data={"k": "</script><script>alert(1)//"})
    assert out.count("</script>") == 1 and "<script>alert" not in out
    inner = out.split('id="d">', 1)[1].rsplit("</script>", 1)[0]
    assert json.loads(inner) == {"k": "</script><script>alert(1)//"}


# ---------------------------------------------------------------- sessions
def test_an_expired_session_row_ends_the_session(console_client: Any, gateway: Any) -> None:
    client: ConsoleClient = console_client("owner")
    assert client.get("/console").status_code == 200
    with _db(gateway) as db:
        db.execute("UPDATE console_sessions SET expires_at = '2000-01-01 00:00:00.000000'")
    page = client.get("/console/datasets")
    assert page.status_code == 303 and page.headers["location"].startswith("/console/sign-in")
    action = client.post("/console/sign-out", data={"csrf": "x"})
    assert action.status_code in (401, 403)
    with _db(gateway) as db:
        assert db.execute("SELECT count(*) FROM console_sessions").fetchone()[0] == 0


def test_a_session_of_one_workspace_opens_nothing_on_another(
    console_client: Any, gateway: Any, serve_template: Any, tmp_path: Path
) -> None:
    from tests.serve.conftest import Served, _serve_in_thread

    home = tmp_path / "second" / ".veil"
    shutil.copytree(serve_template.home, home)
    second = _serve_in_thread(Served(home, dict(serve_template.keys)), None)
    try:
        client: ConsoleClient = console_client("owner")
        cookie = client.cookies["veil_session"]
        other = httpx.get(
            f"{second.url}/console/datasets",
            cookies={"veil_session": cookie},
            follow_redirects=False,
        )
        assert other.status_code == 303
        assert other.headers["location"].startswith("/console/sign-in")
    finally:
        second.stop()


def test_sign_in_never_redirects_off_the_console_nor_splits_headers(gateway: Any) -> None:
    client = httpx.Client(base_url=gateway.url, follow_redirects=False)
    for target in (
        "/console\r\nSet-Cookie: a=b",
        "/console%0d%0aSet-Cookie:%20a=b",
        "///evil.example",
        "/console/sign-out",
        "javascript:alert(1)",
        " /console",
        "/console" + "/x" * 5000,
    ):
        form = client.get("/console/sign-in")
        answer = client.post(
            "/console/sign-in",
            data={"csrf": csrf_of(form.text), "key": gateway.keys["auditor"], "next": target},
        )
        assert answer.status_code == 303, (target, answer.status_code)
        location = answer.headers["location"]
        assert location.startswith("/console") and not location.startswith("//"), target
        assert "\r" not in location and "\n" not in location and "a" not in answer.cookies
    client.close()


def test_a_key_too_long_is_refused_as_too_long_not_as_missing(gateway: Any) -> None:
    client = httpx.Client(base_url=gateway.url, follow_redirects=False)
    form = client.get("/console/sign-in")
    answer = client.post("/console/sign-in", data={"csrf": csrf_of(form.text), "key": "k" * 300})
    assert answer.status_code == 401
    words = _text(answer.text)
    assert "too long" in words and "no service key was given" not in words, words[-400:]
    assert "veil_session" not in answer.cookies
    client.close()


def test_signing_in_lands_on_the_page_asked_for_with_its_filters(gateway: Any) -> None:
    client = httpx.Client(base_url=gateway.url, follow_redirects=False)
    asked = "/console/trail?actor=svc:test-owner&outcome=refused"
    away = client.get(asked)
    assert away.status_code == 303
    form = client.get(away.headers["location"])
    kept = re.search(r'name="next" value="([^"]*)"', form.text)
    assert kept and html.unescape(kept.group(1)) == asked, away.headers["location"]
    answer = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(form.text), "key": gateway.keys["auditor"], "next": asked},
    )
    assert answer.status_code == 303 and answer.headers["location"] == asked
    client.close()


def test_forms_work_behind_a_proxy_that_forwards_another_host(gateway: Any) -> None:
    """nginx sends the upstream's address as Host by default: the browser's word decides."""
    client = httpx.Client(base_url=gateway.url, follow_redirects=False)
    public = {"origin": "https://veil.example.org"}
    for headers, status in (
        ({**public, "sec-fetch-site": "same-origin"}, 303),  # a browser on the public name
        (public, 403),  # no browser vouches: the Origin must match the Host
        ({**public, "sec-fetch-site": "cross-site"}, 403),
        ({**public, "sec-fetch-site": "same-site"}, 403),
    ):
        form = client.get("/console/sign-in")
        answer = client.post(
            "/console/sign-in",
            data={"csrf": csrf_of(form.text), "key": gateway.keys["auditor"], "next": "/console"},
            headers=headers,
        )
        assert answer.status_code == status, (headers, answer.status_code)
    client.close()


# ---------------------------------------------------------------- methods and sizes
CONSOLE_ROUTES = {
    ("GET", "/console"),
    ("GET", "/console/sign-in"),
    ("POST", "/console/sign-in"),
    ("POST", "/console/sign-out"),
    ("GET", "/console/datasets"),
    ("GET", "/console/datasets/{name}"),
    ("GET", "/console/datasets/{name}/query"),
    ("POST", "/console/datasets/{name}/query"),
    ("POST", "/console/datasets/{name}/budget"),
    ("GET", "/console/models"),
    ("GET", "/console/models/{name}"),
    ("GET", "/console/models/{name}/report"),
    ("GET", "/console/models/{name}/live"),
    ("GET", "/console/trail"),
    ("POST", "/console/trail/verify"),
    ("GET", "/console/trail/verification"),
    ("GET", "/console/trail/{seq}"),
    ("GET", "/console/trail/{seq}/proof.json"),
    ("GET", "/console/access"),
    ("POST", "/console/access/grants"),
    ("POST", "/console/access/grants/revoke"),
    ("POST", "/console/access/keys/{key_id}/revoke"),
}
# Tables a GET must leave alone (the trail grows by one serve.request entry per request).
KEPT = (
    "privacy_events",
    "privacy_budgets",
    "budget_changes",
    "access_grants",
    "access_keys",
    "console_sessions",
    "datasets",
    "serve_usage",
)


def _snapshot(gateway: Any) -> dict[str, list[Any]]:
    gateway.state.spool.flush()
    with _db(gateway) as db:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in KEPT}


def test_every_console_route_is_listed_and_no_get_changes_anything(
    console_client: Any, gateway: Any
) -> None:
    from fastapi.routing import APIRoute

    from veil.serve.console import routers

    routes = {
        (method, route.path)
        for router in routers()
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert routes == CONSOLE_ROUTES, routes ^ CONSOLE_ROUTES
    client: ConsoleClient = console_client("owner")
    before = _snapshot(gateway)
    seq = 1
    for method, path in sorted(CONSOLE_ROUTES):
        if method != "GET":
            continue
        url = path.replace("{name}", "digits" if "datasets" in path else MODEL)
        url = url.replace("{seq}", str(seq))
        page = client.get(url)
        assert page.status_code in (200, 303, 404), (url, page.status_code)
    assert _snapshot(gateway) == before


def test_other_methods_get_a_405_page_that_says_what_is_allowed(console_client: Any) -> None:
    client: ConsoleClient = console_client("owner")
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"):
        for path, allowed in (
            ("/console", "GET"),
            ("/console/datasets/digits", "GET"),
            ("/console/trail/verify", "POST"),
        ):
            page = client.request(method, path)
            assert page.status_code == 405, (method, path, page.status_code)
            assert allowed in page.headers.get("allow", ""), (method, path, page.headers)
            assert "script-src 'self'" in page.headers["content-security-policy"]
            if method != "HEAD":
                assert "OpenAPI" not in page.text and method in _text(page.text), page.text


def test_oversized_addresses_and_forms_get_a_clean_4xx(console_client: Any) -> None:
    client: ConsoleClient = console_client("owner")
    for path in (
        "/console/trail?actor=" + "a" * 5000,
        "/console/datasets/digits?purpose=" + "p" * 20000,
        "/console/datasets/digits?before=" + "9" * 400,
        "/console/trail/" + "9" * 400,
        "/console/datasets/" + "d" * 400,
        "/console/models/" + "m" * 400,
    ):
        page = client.get(path)
        assert page.status_code < 500, (path[:60], page.status_code)
        assert "text/html" in page.headers["content-type"] and "Traceback" not in page.text
        if page.status_code >= 400:
            assert "OpenAPI" not in page.text, _text(page.text)[:400]
    token = client.csrf()
    long_form = client.post(
        "/console/datasets/digits/query",
        data={"csrf": token, "sql": "S" * 500_000, "epsilon": "1" * 10_000},
    )
    assert 400 <= long_form.status_code < 500, long_form.status_code
    many = "&".join(f"f{i}=1" for i in range(500))
    crowded = client.post(
        "/console/datasets/digits/query",
        content=f"csrf={token}&{many}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert crowded.status_code == 400 and "at most 64" in _text(crowded.text)


def test_static_files_serve_nothing_outside_their_folder(gateway: Any) -> None:
    raw = httpx.Client(base_url=gateway.url, follow_redirects=False)
    for path in (
        "/console/static/../_session.py",
        "/console/static/%2e%2e/_session.py",
        "/console/static/..%2f_session.py",
        "/console/static/..%5c_session.py",
        "/console/static/%2e%2e/templates/base.html",
        "/console/static/",
        "/console/static/vendor/",
    ):
        answer = raw.send(raw.build_request("GET", path))  # the path as written, not normalised
        assert answer.status_code in (401, 404), (path, answer.status_code)
        assert "SESSION_COOKIE" not in answer.text and "{% block" not in answer.text, path
        assert "script-src 'self'" in answer.headers.get("content-security-policy", ""), path
    raw.close()


# ---------------------------------------------------------------- the policy on every page
def test_every_page_is_under_the_policy_and_carries_no_inline_code(
    console_client: Any, gateway: Any
) -> None:
    anonymous = httpx.Client(base_url=gateway.url, follow_redirects=False)
    away = anonymous.get("/console/datasets")
    assert (
        away.status_code == 303 and "script-src 'self'" in away.headers["content-security-policy"]
    )
    signin = anonymous.get("/console/sign-in")
    _no_markup_from(signin, "sign-in")
    wrong = anonymous.post(
        "/console/sign-in", data={"csrf": csrf_of(signin.text), "key": "veil_sk_x_y"}
    )
    assert wrong.status_code == 401
    _no_markup_from(wrong, "sign-in refused")
    anonymous.close()
    for role in ("owner", "analyst", "auditor", "consumer"):
        client: ConsoleClient = console_client(role)
        answer = client.post(
            "/console/datasets/digits/query",
            data={"csrf": client.csrf(), "sql": "SELECT COUNT(*) FROM digits", "epsilon": "0.1"},
        )
        _no_markup_from(answer, f"{role} query")
        for path in (
            "/console",
            "/console/datasets",
            "/console/datasets/digits",
            "/console/datasets/digits/query",
            "/console/datasets/nope",
            "/console/models",
            f"/console/models/{MODEL}",
            "/console/trail",
            "/console/trail/1",
            "/console/trail/0",
            "/console/access",
            "/console/no-such-page",
        ):
            page = client.get(path)
            assert page.status_code < 500, (role, path)
            _no_markup_from(page, f"{role} {path}")
            words = _text(page.text)
            for shown in (" None ", " nan ", " {} ", "Traceback"):
                assert shown not in f" {words} ", (role, path, shown)
        for path in (f"/console/models/{MODEL}/live", "/console/trail/verification",
                     "/console/trail/1/proof.json"):  # fmt: skip
            data = client.get(path)
            assert "script-src 'self'" in data.headers["content-security-policy"], path
            assert data.headers["x-content-type-options"] == "nosniff", path
