"""Issue 17: a database password never appears in an error, the `veil` command's output or a log.

Each test hands Veil a PostgreSQL URL whose password is ``s3cret`` and that
fails (it does not parse, or nothing answers at its address), then searches
every place the password could leak: the message, the JSON error body, the
chained exceptions a traceback would print, the log records (captured at
DEBUG), and the real `veil` executable's output with and without ``--debug``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from veil.errors import InvalidInputError, StoreError, VeilError
from veil.store import Store
from veil.workspace import Workspace

SECRET = "s3cret"  # noqa: S105 - the password the tests try to leak

UNPARSEABLE = [
    f"postgresql://veil:{SECRET}@db.example.org:notaport/veil",  # a port that is not a number
    f"postgresql://veil:{SECRET}@[::1/veil",  # an unclosed IPv6 bracket
    f"postgresql//veil:{SECRET}@db.example.org/veil",  # no "://"
    f"veil:{SECRET}@db.example.org/veil",  # no scheme at all
    f"postgresql://veil:{SECRET}@x@db.example.org/veil",  # "@" not percent-encoded
]
UNREACHABLE = [
    f"postgresql://veil:{SECRET}@127.0.0.1:1/veil",  # nothing listens on port 1
    f"postgresql://veil@127.0.0.1:1/veil?password={SECRET}",  # the password as a parameter
]


def _everything_said(error: BaseException) -> str:
    """The error, its JSON body and the traceback (with every chained exception)."""
    said = "".join(traceback.format_exception(error))
    if isinstance(error, VeilError):
        said += json.dumps(error.to_dict())
    return said


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_an_unparseable_url_is_refused_without_its_password(url: str, logs):
    with pytest.raises(InvalidInputError, match="cannot be parsed") as caught:
        Store.open(url)
    assert SECRET not in _everything_said(caught.value)
    assert "***" in str(caught.value.got)  # the user still sees which URL it was
    assert SECRET not in logs.text


@pytest.mark.parametrize("url", UNREACHABLE)
def test_an_unreachable_database_is_reported_without_its_password(url: str, logs):
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="cannot connect") as caught:
        Store.open(url)
    assert SECRET not in _everything_said(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert SECRET not in logs.text


@pytest.mark.parametrize("url", [*UNPARSEABLE, *UNREACHABLE])
def test_redact_url_hides_the_password_whether_or_not_it_parses(url: str):
    from veil.workspace import redact_url

    shown = redact_url(url)
    assert SECRET not in shown and "***" in shown


def test_settings_do_not_show_the_database_password(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VEIL_DATABASE_URL", UNREACHABLE[0])
    settings = Workspace.create(tmp_path / ".veil").settings
    assert settings.database_url == UNREACHABLE[0]  # the real value is still there to use
    assert SECRET not in repr(settings) and SECRET not in str(settings)


@pytest.mark.slow
@pytest.mark.parametrize("url", [UNPARSEABLE[0], UNPARSEABLE[4], *UNREACHABLE])
@pytest.mark.parametrize("debug", [False, True])
def test_the_veil_command_never_prints_the_password(url: str, debug: bool, tmp_path: Path):
    Workspace.create(tmp_path / ".veil")
    executable = Path(sys.executable).with_name("veil")
    args = [str(executable), *(["--debug"] if debug else []), "db", "status", "--json"]
    done = subprocess.run(
        args,
        cwd=tmp_path,
        env=os.environ | {"VEIL_DATABASE_URL": url},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    expected = 11 if url in UNREACHABLE else 3  # store_error, invalid_input
    assert done.returncode == expected, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] in ("store_error", "invalid_input")


def test_a_reachable_database_is_displayed_without_its_password(postgres_admin_url: str):
    url = postgres_admin_url.replace("postgres@", f"postgres:{SECRET}@", 1)  # trust auth
    assert SECRET in url
    store = Store.open(url, check=False)
    try:
        store.current_revision()  # it really connects (a StoreError otherwise)
        assert SECRET not in store.display_url and "postgres:***@" in store.display_url
    finally:
        store.dispose()
