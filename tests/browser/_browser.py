"""Helpers of the browser tests: what a page did, the console, the keyboard."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page
    from tests.serve.conftest import Gateway

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - then the `browser` fixture skips every test, saying so
    expect = None

__all__ = [
    "NARROW",
    "SESSION_COOKIE",
    "WIDE",
    "Console",
    "Recorder",
    "expect",
    "labelled",
    "leaves_loopback",
    "session_cookies",
    "tab_to",
]

SESSION_COOKIE = "veil_session"
LOCAL_SCHEMES = {"data", "blob", "about"}  # never a network request
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


def leaves_loopback(url: str) -> bool:
    """Whether a request to ``url`` would leave 127.0.0.1."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return False
    return parts.hostname != "127.0.0.1"


@dataclass
class Recorder:
    """What a browser context did: every request's URL, console messages, uncaught errors."""

    requests: list[str] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)  # (type, text)
    errors: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("console", lambda msg: self.messages.append((msg.type, msg.text)))
        context.on("weberror", lambda error: self.errors.append(str(error.error)))

    def outside(self) -> list[str]:
        """The requests that would leave 127.0.0.1 (the console's goal: none)."""
        return [url for url in self.requests if leaves_loopback(url)]

    def csp_violations(self) -> list[str]:
        """Console messages in which Chromium reports a Content-Security-Policy violation."""
        return [text for _, text in self.messages if "Content Security Policy" in text]

    def check(self) -> None:
        assert self.requests, "the page made no request at all: the recorder is not attached"
        assert self.outside() == [], f"requests that leave 127.0.0.1: {self.outside()}"
        assert self.csp_violations() == [], f"CSP violations: {self.csp_violations()}"
        assert self.errors == [], f"uncaught script errors: {self.errors}"


@dataclass
class Console:
    """The served console: its URL, a key per role, the gateway behind it."""

    gateway: Gateway

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def keys(self) -> dict[str, str]:
        return self.gateway.keys

    def api(self, role: str | None = None, *, token: str | None = None) -> Any:
        """An httpx client of the JSON API with ``role``'s key (the page bypassed)."""
        return self.gateway.client(role, token=token)

    def sign_in(self, page: Page, role: str, *, next_path: str | None = None) -> None:
        """Sign in on the form with ``role``'s key, as a person would."""
        page.goto("/console/sign-in" + (f"?next={next_path}" if next_path else ""))
        page.get_by_label(re.compile("key", re.IGNORECASE)).fill(self.keys[role])
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name=re.compile("sign in", re.IGNORECASE)).click()
        page.wait_for_load_state()
        assert posted.value.status == 303, (
            f"{role} could not sign in ({posted.value.status}): "
            f"{page.get_by_role('main').inner_text()[:500]}"
        )


def session_cookies(page: Page) -> list[dict[str, Any]]:
    """The console's session cookie in ``page``'s context (none or one)."""
    return [dict(c) for c in page.context.cookies() if c["name"] == SESSION_COOKIE]


def _focus_visible(page: Page) -> bool:
    """Whether the focused element shows that it has focus (:focus-visible and an outline)."""
    return bool(
        page.evaluate(
            """() => {
              const el = document.activeElement;
              if (!el || !el.matches(':focus-visible')) return false;
              const s = getComputedStyle(el);
              return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0)
                  || s.boxShadow !== 'none';
            }"""
        )
    )


def tab_to(page: Page, describe: str, test: str, *, limit: int = 40) -> None:
    """Press Tab until the focused element passes ``test`` (a JS expression on ``el``)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const el = document.activeElement; return !!({test}); }}"):
            assert _focus_visible(page), f"{describe} has focus but does not show it"
            return
    raise AssertionError(f"{describe} cannot be reached with Tab ({limit} presses)")


def labelled(pattern: str) -> str:
    """A JS test: ``el`` is an input whose label matches the regular expression ``pattern``."""
    return f"el.labels && [...el.labels].some(l => /{pattern}/i.test(l.textContent))"
