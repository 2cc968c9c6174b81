"""The console's front door over real HTTP: sign-in, sessions, CSRF, headers, the trail."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

import pytest
from tests.serve.console.conftest import ConsoleClient, csrf_of, sign_in

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

httpx = pytest.importorskip("httpx")

# Routes anyone may reach (the sign-in form) or any signed-in key (home, sign-out).
OPEN = {"/console", "/console/sign-in", "/console/sign-out"}


def _db(gateway: Any) -> sqlite3.Connection:
    return sqlite3.connect(gateway.home / "veil.db")


def _trail(gateway: Any, path: str) -> list[dict[str, Any]]:
    gateway.state.spool.flush()
    with _db(gateway) as db:
        rows = db.execute("SELECT body FROM trail_entries ORDER BY seq").fetchall()
    bodies = [json.loads(r[0]) for r in rows]
    return [b for b in bodies if str((b.get("details") or {}).get("route", "")).startswith(path)]


def test_sign_in_form_is_served_with_a_strict_policy_and_no_inline_code(gateway: Any) -> None:
    page = httpx.get(f"{gateway.url}/console/sign-in")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"  # Chromium sends a real Origin
    assert page.headers["cache-control"] == "no-store"
    assert "app;dur=" in page.headers["server-timing"]
    html = page.text
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert 'for="f-key"' in html and 'id="f-key"' in html  # the field has its label
    pre = page.headers["set-cookie"]
    assert "veil_signin=" in pre and "HttpOnly" in pre and "SameSite=strict" in pre


def test_a_signed_in_session_is_an_httponly_strict_cookie_and_only_its_hash_is_stored(
    gateway: Any,
) -> None:
    client = httpx.Client(base_url=gateway.url, follow_redirects=False)
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(form.text), "key": gateway.keys["analyst"], "next": "/console"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    cookie = next(
        v for k, v in answer.headers.multi_items() if k == "set-cookie" and "veil_session=" in v
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    token = client.cookies["veil_session"]
    with _db(gateway) as db:
        stored = [r[0] for r in db.execute("SELECT token_sha256 FROM console_sessions")]
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]
    home = client.get("/console")
    assert home.status_code == 200 and "analyst" in home.text
    client.close()


def test_a_wrong_key_is_refused_without_a_session_and_is_on_the_trail(gateway: Any) -> None:
    client = httpx.Client(base_url=gateway.url, follow_redirects=False)
    form = client.get("/console/sign-in")
    forged = "veil_sk_" + "0" * 12 + "_" + "x" * 40
    answer = client.post("/console/sign-in", data={"csrf": csrf_of(form.text), "key": forged})
    assert answer.status_code == 401
    assert "Sign-in refused" in answer.text
    assert "veil_session" not in answer.headers.get("set-cookie", "")
    entries = _trail(gateway, "/console/sign-in")
    assert any(e["outcome"] == "refused" for e in entries)
    client.close()


def test_without_a_session_pages_redirect_to_sign_in_and_actions_are_refused(gateway: Any) -> None:
    page = httpx.get(f"{gateway.url}/console", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/sign-in?next=/console"
    action = httpx.post(f"{gateway.url}/console/sign-out", data={"csrf": "x"})
    assert action.status_code == 401
    assert "text/html" in action.headers["content-type"]


def test_next_never_leaves_the_console(gateway: Any) -> None:
    client = httpx.Client(base_url=gateway.url, follow_redirects=False)
    for target in ("//evil.example/x", "https://evil.example/", "/v1/datasets", "/console\\@evil"):
        form = client.get("/console/sign-in")
        answer = client.post(
            "/console/sign-in",
            data={"csrf": csrf_of(form.text), "key": gateway.keys["auditor"], "next": target},
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/console", target
    client.close()


def test_forms_need_the_csrf_token_and_the_same_origin(console_client: Any, gateway: Any) -> None:
    client: ConsoleClient = console_client("owner")
    token = client.csrf()
    assert client.post("/console/sign-out", data={"x": "1"}).status_code == 403
    assert client.post("/console/sign-out").status_code == 400  # no form at all
    wrong = token[:-1] + ("1" if token.endswith("0") else "0")
    assert client.post("/console/sign-out", data={"csrf": wrong}).status_code == 403
    cross = client.post(
        "/console/sign-out", data={"csrf": token}, headers={"origin": "http://evil.example"}
    )
    assert cross.status_code == 403 and "another origin" in cross.text
    site = client.post(
        "/console/sign-out", data={"csrf": token}, headers={"sec-fetch-site": "cross-site"}
    )
    assert site.status_code == 403
    opaque = client.post("/console/sign-out", data={"csrf": token}, headers={"origin": "null"})
    assert opaque.status_code == 403  # an opaque origin the browser does not vouch for
    json_body = client.post("/console/sign-out", json={"csrf": token})
    assert json_body.status_code == 400 and "URL-encoded" in json_body.text
    assert client.get("/console").status_code == 200  # still signed in after every refusal
    # A token from another session is worth nothing here.
    other = sign_in(gateway.url, gateway.keys["owner"])
    assert client.post("/console/sign-out", data={"csrf": other.csrf()}).status_code == 403
    other.close()


def test_sign_out_ends_the_session_in_the_database(console_client: Any, gateway: Any) -> None:
    client: ConsoleClient = console_client("auditor")
    token = client.cookies["veil_session"]
    out = client.post("/console/sign-out", data={"csrf": client.csrf()})
    assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
    replay = httpx.get(
        f"{gateway.url}/console", cookies={"veil_session": token}, follow_redirects=False
    )
    assert replay.status_code == 303 and replay.headers["location"].startswith("/console/sign-in")
    with _db(gateway) as db:
        assert db.execute("SELECT count(*) FROM console_sessions").fetchone()[0] == 0


def test_revoking_the_key_ends_its_sessions_at_once(console_client: Any, gateway: Any) -> None:
    client: ConsoleClient = console_client("analyst")
    assert client.get("/console").status_code == 200
    key_id = client.get("/console").text.split("<code>")[1].split("</code>")[0]
    principal = gateway.app.state.veil_console_keys[key_id]
    gateway.state.operator.revoke_key(key_id, reason="test")
    gateway.state.forget(principal)  # as the revoking route does (Access caches grants a while)
    page = client.get("/console")
    assert page.status_code == 303 and page.headers["location"].startswith("/console/sign-in")


def test_every_console_route_declares_a_permission(gateway: Any) -> None:
    from fastapi.routing import APIRoute

    from veil.serve.console import routers

    missing = []
    checked = 0
    # The app's own route list holds included routers, not their routes: read the console's.
    for route in (r for router in routers() for r in router.routes):
        if not isinstance(route, APIRoute) or not route.path.startswith("/console"):
            continue
        checked += 1
        if route.path in OPEN:
            continue
        permissions = [
            getattr(d.call, "veil_permission", None) for d in route.dependant.dependencies
        ]
        if not any(permissions):
            missing.append(f"{sorted(route.methods or ())} {route.path}")
    assert checked >= 20, f"only {checked} console routes found"
    assert not missing, f"console routes without console_needs(...): {missing}"


def test_console_requests_are_on_the_trail_but_static_files_are_not(
    console_client: Any, gateway: Any
) -> None:
    client: ConsoleClient = console_client("owner")
    assert client.get("/console").status_code == 200
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert "default-src 'none'" in css.headers["content-security-policy"]
    chart = client.get("/console/static/vendor/uplot/uPlot.iife.min.js")
    assert chart.status_code == 200
    home = [e for e in _trail(gateway, "/console") if e["details"]["route"] == "/console"]
    assert home and home[-1]["actor"] == "svc:test-owner"
    assert not _trail(gateway, "/console/static")


def test_an_unknown_console_page_is_an_html_404(console_client: Any) -> None:
    client: ConsoleClient = console_client("owner")
    page = client.get("/console/no-such-page")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "404" in page.text
    escaped = client.get("/console/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert "<script>alert(1)" not in escaped.text


def test_a_form_over_the_body_limit_is_a_413_page_not_json(gateway: Any) -> None:
    limit = gateway.state.config.max_body_bytes
    answer = httpx.post(
        f"{gateway.url}/console/sign-in",
        content=b"key=" + b"x" * (limit + 10),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("text/html")
    assert "the form is too large" in answer.text and f"{limit:,} bytes" in answer.text
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    api = httpx.post(f"{gateway.url}/v1/datasets/digits/query", content=b"x" * (limit + 10))
    assert api.status_code == 413 and api.json()["error"]["code"] == "data_too_large"


def test_start_up_warms_the_curve_cache_and_records_nothing(gateway: Any) -> None:
    """A worker composes each dataset's RDP curves before its first page (see console.warm)."""
    from veil.ledger import Mechanism, PrivacyEvent
    from veil.ledger._burndown import SHARED_CURVES
    from veil.serve.console import warm

    state = gateway.state
    ledger = state.ledger(state.operator)
    event = PrivacyEvent("count(*)", (Mechanism.laplace(scale=1000.0, sensitivity=1.0),))
    ledger.charge_many([("digits", event)] * 70, purpose="warm-up test")
    SHARED_CURVES._held.clear()
    with _db(gateway) as db:
        before = db.execute("SELECT count(*) FROM trail_entries").fetchone()[0]
        digits = db.execute("SELECT id FROM datasets WHERE name = 'digits'").fetchone()[0]
    warm(state)
    assert any(key[0] == digits for key in SHARED_CURVES._held)
    with _db(gateway) as db:
        assert db.execute("SELECT count(*) FROM trail_entries").fetchone()[0] == before
