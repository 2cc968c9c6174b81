"""Signing in to the console in Chromium: each role, a wrong key, the cookie, the keyboard."""

from __future__ import annotations

import re
import sqlite3
import time
from urllib.parse import urlsplit

import pytest
from tests.browser._browser import SESSION_COOKIE, expect, labelled, session_cookies, tab_to
from tests.serve.conftest import ROLES

pytestmark = pytest.mark.slow

# The sections of the console each role's grants open (the home page links only those).
SECTIONS = {
    "owner": {"Datasets", "Models", "Trail", "Access"},
    "analyst": {"Datasets", "Models"},
    "auditor": {"Datasets", "Models", "Trail", "Access"},
    "consumer": set(),
}
ALL_SECTIONS = {"Datasets", "Models", "Trail", "Access"}


def test_each_role_signs_in_and_sees_only_its_sections(console, open_page, shoot):
    for role in ROLES:
        page = open_page()
        page.goto("/console")  # not signed in: sent to the form, which brings you back
        assert urlsplit(page.url).path == "/console/sign-in"
        if role == "owner":
            shoot(page, "sign-in")
        console.sign_in(page, role, next_path="/console")
        assert urlsplit(page.url).path == "/console", f"{role}: {page.url}"
        main = page.get_by_role("main")
        expect(main).to_contain_text(role)  # the roles the key holds are shown
        links = {
            name
            for name in ALL_SECTIONS
            if main.get_by_role("link", name=name, exact=True).count() > 0
        }
        assert links == SECTIONS[role], role
        nav = page.get_by_role("navigation")
        in_nav = {n for n in ALL_SECTIONS if nav.get_by_role("link", name=n, exact=True).count()}
        assert in_nav == SECTIONS[role], role
        assert len(session_cookies(page)) == 1


def test_a_wrong_key_is_refused_on_the_form_and_opens_no_session(console, page):
    page.goto("/console/sign-in")
    key_id = console.keys["analyst"].split("_")[2]
    page.get_by_label(re.compile("key", re.IGNORECASE)).fill(f"veil_sk_{key_id}_{'x' * 43}")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name=re.compile("sign in", re.IGNORECASE)).click()
    assert posted.value.status == 401
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("key", re.IGNORECASE))
    assert session_cookies(page) == []
    page.goto("/console")
    assert urlsplit(page.url).path == "/console/sign-in"  # still signed out


def test_the_session_cookie_is_http_only_strict_and_scoped_to_the_console(console, page):
    console.sign_in(page, "analyst")
    (cookie,) = session_cookies(page)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert cookie["value"] not in console.keys["analyst"]  # a session token, not the key
    assert SESSION_COOKIE not in page.evaluate("document.cookie")  # no script can read it


def test_signing_out_ends_the_session_on_the_server(console, page):
    console.sign_in(page, "analyst")
    (cookie,) = session_cookies(page)
    page.get_by_role("button", name=re.compile("sign out", re.IGNORECASE)).click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == "/console/sign-in"
    assert session_cookies(page) == []
    # The old cookie, replayed (as a thief who copied it would), opens nothing.
    page.context.add_cookies([cookie])
    page.goto("/console/datasets")
    assert urlsplit(page.url).path == "/console/sign-in"


def test_sign_in_with_the_keyboard_only(console, page):
    page.goto("/console/sign-in")
    tab_to(page, "the key field", labelled("key"))
    page.keyboard.type(console.keys["analyst"])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console$"))
    assert len(session_cookies(page)) == 1


def test_a_session_ends_after_eight_hours(console, page):
    """The cookie the browser holds opens nothing once its session's 8 hours are over."""
    console.sign_in(page, "auditor")
    (cookie,) = session_cookies(page)
    hours = (cookie["expires"] - time.time()) / 3600
    assert 7.9 < hours < 8.01  # the browser is told when it ends
    with sqlite3.connect(console.gateway.home / "veil.db") as db:
        (stored,) = db.execute("SELECT expires_at FROM console_sessions").fetchone()
        db.execute("UPDATE console_sessions SET expires_at = ?", ("2000-01-01 00:00:00.000000",))
    assert stored  # the server keeps its own end, whatever the browser does with the cookie
    page.goto("/console/trail")
    assert urlsplit(page.url).path == "/console/sign-in"  # the server ended it, not the browser
