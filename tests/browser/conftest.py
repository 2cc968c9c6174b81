"""Browser tests of the console: Debian's Chromium, driven by Playwright for Python.

``console`` starts the gateway (uvicorn on a free 127.0.0.1 port, the real app and
lifespan, ``start_gateway`` from tests/serve/conftest.py) on a fresh copy of the served
workspace: the digits dataset with a budget, the model ``digits-lr`` and a key per role.
``browser`` is one headless Chromium per pytest-xdist worker; ``page`` is a fresh
context (no cookies) at 1280x800 whose every request, console message and uncaught
error is recorded, and which at the end of every test checks that no request left
127.0.0.1, that no Content-Security-Policy violation was reported and that no script
failed.

Without Playwright or Chromium one test skips with one line naming what is missing
and the others are deselected (``.ci/run`` installs Chromium with apt where it can). ``--screenshots DIR``
saves the screenshots the tests take at the documented steps (docs/console.md; made by
scripts/console_screenshots.py).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.browser._browser import WIDE, Console, Recorder
from tests.serve.conftest import (  # the served workspace and the gateway, reused as they are
    Gateway,
    serve_home,
    serve_template,
    start_gateway,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

__all__ = ["serve_home", "serve_template", "start_gateway"]

CHROMIUM = shutil.which("chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None
if sync_playwright is None:  # pragma: no cover
    MISSING = "Playwright for Python is not installed (pip install -e '.[dev]' installs it)"
elif CHROMIUM is None:  # pragma: no cover - .ci/run installs it where apt can
    MISSING = "no `chromium` on PATH (apt-get install -y chromium, or `make browser`)"
else:
    MISSING = None

# Headless, and nothing that reaches out: without the background-networking flags Chromium
# tries Google's hosts at start (a closed network refuses them, many at a time).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAX_SCREENSHOT = 200_000  # bytes: docs/img/console stays small


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots",
        metavar="DIR",
        default=None,
        help="tests/browser: save the console's screenshots (1280x800 PNGs) into DIR",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a browser, one test skips naming what is missing; the others are deselected."""
    if MISSING is None:
        return
    needing = [item for item in items if "browser" in getattr(item, "fixturenames", ())]
    if not needing:
        return
    reason = f"browser tests SKIPPED ({len(needing)} tests): {MISSING}"
    needing[0].add_marker(pytest.mark.skip(reason=reason))
    rest = {id(item) for item in needing[1:]}
    config.hook.pytest_deselected(items=needing[1:])
    items[:] = [item for item in items if id(item) not in rest]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test worker (Debian's package; Playwright drives it)."""
    if sync_playwright is None or CHROMIUM is None:  # pragma: no cover - deselected above
        pytest.skip(f"browser tests SKIPPED: {MISSING}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def console(start_gateway: Callable[..., Gateway]) -> Console:
    """The console on a fresh copy of the served workspace."""
    return Console(start_gateway())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def open_page(
    browser: Browser, console: Console, recorder: Recorder
) -> Iterator[Callable[..., Page]]:
    """``open_page(viewport=WIDE)``: a page in a fresh context (no cookies), base URL the
    console, recorded; at the end of the test the recorder's checks run."""
    contexts: list[BrowserContext] = []

    def make(viewport: dict[str, int] | None = None) -> Page:
        made = browser.new_context(viewport=viewport or WIDE, base_url=console.url)
        made.set_default_timeout(15_000)
        recorder.attach(made)
        contexts.append(made)
        return made.new_page()

    yield make
    for made in contexts:
        made.close()
    recorder.check()


@pytest.fixture
def page(open_page: Callable[..., Page]) -> Page:
    """A page in a fresh context at 1280x800 (see ``open_page``)."""
    return open_page()


@pytest.fixture
def shoot(request: pytest.FixtureRequest) -> Callable[[Page, str], None]:
    """``shoot(page, name)``: with ``--screenshots DIR``, save the viewport as DIR/name.png."""
    directory = request.config.getoption("--screenshots", default=None)

    def save(page: Page, name: str) -> None:
        if directory is None:
            return
        path = Path(directory) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        png = page.screenshot(full_page=False, animations="disabled", caret="hide")
        path.write_bytes(_small_png(png))
        assert path.stat().st_size < MAX_SCREENSHOT, f"{path}: {path.stat().st_size} bytes"

    return save


def _small_png(png: bytes) -> bytes:
    """The screenshot, in a 256-colour palette when it is over the size limit (text stays sharp)."""
    if len(png) < MAX_SCREENSHOT:
        return png
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
