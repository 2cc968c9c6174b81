"""Where Veil keeps its state, and the settings that go with it.

A workspace is a directory, ``.veil/`` by default, holding ``config.toml`` and
(unless the database is elsewhere) the SQLite file ``veil.db``. It is found in
this order:

1. ``VEIL_HOME``, if set: that directory *is* the workspace;
2. otherwise the nearest ``.veil/`` in the current directory or one of its
   parents, so that commands work from a sub-directory of a project, as git's do.

Settings come from the environment first, then from ``config.toml``, then
from defaults:

=====================  ==========================  ==========================
setting                environment                 config.toml
=====================  ==========================  ==========================
database URL           ``VEIL_DATABASE_URL``       ``[store] url``
memory limit for data  ``VEIL_MAX_LOAD_BYTES``     ``[data] max_load_bytes``
service key            ``VEIL_KEY``                (none)
=====================  ==========================  ==========================

Who acts is not a setting: it is the operating-system account running Veil
(read from the account database, not from ``$USER``), or the service that
``VEIL_KEY`` authenticates (:mod:`veil.access` checks the key). ``VEIL_ACTOR``
used to name the actor freely, so anyone could act as anyone; it is now
refused unless it names the account itself.

This module only knows paths and settings; opening the database is
``veil.store``'s job, and keys (the vault's master key, and the named keys
in ``keys/`` that the ledger, redaction and pseudonymisation use) are
``veil.vault``'s: both sit above it in the dependency order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.errors import InvalidInputError, NotFoundError

__all__ = ["Settings", "Workspace", "login_name"]

WORKSPACE_DIRNAME = ".veil"
CONFIG_FILENAME = "config.toml"
SQLITE_FILENAME = "veil.db"
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
_log = logging.getLogger(__name__)

_CONFIG_TEMPLATE = """\
# Veil workspace settings. Environment variables override every value here.
#
# [store]
# url = "postgresql://veil@db.example.org/veil"   # VEIL_DATABASE_URL; default: SQLite file veil.db here
#
# [data]
# max_load_bytes = 8_000_000_000                   # VEIL_MAX_LOAD_BYTES; default: half the available memory
"""


_SECRET_PARAMETER = re.compile(r"(?i)((?:^|[?&;])(?:ssl)?password=)[^&;#]*")


def redact_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs, even if it does not parse.

    Everything between the scheme's ``://`` and the last ``@`` before the path
    but the user name becomes ``user:***``, and ``password=`` /
    ``sslpassword=`` parameters become ``***``. Text only, so a URL that no
    parser accepts (the case in which it is most likely to be echoed) is
    redacted too.
    """
    text = str(url)
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    base, question, query = rest.partition("?")
    if "@" in base:
        userinfo, host = base.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        base = f"{user}:***@{host}" if colon else f"{user}@{host}"
    query = _SECRET_PARAMETER.sub(r"\1***", query)
    return f"{scheme}{separator}{base}{question}{query}"


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one workspace.

    Attributes:
        database_url: SQLAlchemy URL of the store.
        max_load_bytes: Largest estimated in-memory size of data Veil will load,
            or ``None`` to use half of the memory available at load time.
        actor: The operating-system account running Veil (a person principal).
        service_key: A service key (``VEIL_KEY``) to act as its service instead;
            never shown by ``repr``.
    """

    database_url: str
    max_load_bytes: int | None
    actor: str
    service_key: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"Settings(database_url={redact_url(self.database_url)!r}, "
            f"max_load_bytes={self.max_load_bytes!r}, actor={self.actor!r}, "
            f"service_key={'***' if self.service_key else None!r})"
        )


@dataclass(frozen=True)
class Workspace:
    """A Veil workspace directory.

    Attributes:
        home: The workspace directory itself (``.../.veil`` or ``VEIL_HOME``).
    """

    home: Path

    @property
    def config_path(self) -> Path:
        """The workspace's ``config.toml``."""
        return self.home / CONFIG_FILENAME

    @property
    def sqlite_path(self) -> Path:
        """The default SQLite database file."""
        return self.home / SQLITE_FILENAME

    @classmethod
    def default_home(cls, cwd: Path | None = None) -> Path:
        """Where :meth:`create` puts a new workspace: ``VEIL_HOME`` or ``./.veil``."""
        env = os.environ.get("VEIL_HOME")
        if env:
            return Path(env).expanduser().resolve()
        return (cwd or Path.cwd()).resolve() / WORKSPACE_DIRNAME

    @classmethod
    def create(cls, home: Path | None = None) -> Workspace:
        """Create the workspace directory and its ``config.toml`` if missing.

        Idempotent: an existing workspace is returned as it is. The directory
        is made readable by its owner only, since it describes sensitive data.
        """
        home = (home or cls.default_home()).expanduser().resolve()
        if home.exists() and not home.is_dir():
            raise InvalidInputError(
                "cannot create a workspace where a file already exists",
                expected=f"{home} to be a directory or absent",
                got="a regular file",
                fix="remove the file or set VEIL_HOME to another directory",
            )
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        workspace = cls(home)
        if not workspace.config_path.exists():
            # 0600: the file may come to hold a database URL with its password.
            with contextlib.suppress(FileExistsError):
                fd = os.open(workspace.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(_CONFIG_TEMPLATE)
        workspace.make_private()
        return workspace

    @classmethod
    def locate(cls, cwd: Path | None = None) -> Workspace:
        """Find the workspace for the current directory (see the module docstring).

        Raises:
            NotFoundError: When there is none.
        """
        env = os.environ.get("VEIL_HOME")
        if env:
            home = Path(env).expanduser().resolve()
            if not (home / CONFIG_FILENAME).is_file():
                raise NotFoundError(
                    "VEIL_HOME does not point to a Veil workspace",
                    expected=f"{home / CONFIG_FILENAME} to exist",
                    got="no such file",
                    fix="run `veil init` to create it, or unset VEIL_HOME",
                )
            workspace = cls(home)
            workspace.make_private()
            return workspace
        start = (cwd or Path.cwd()).resolve()
        for directory in (start, *start.parents):
            candidate = directory / WORKSPACE_DIRNAME
            if (candidate / CONFIG_FILENAME).is_file():
                workspace = cls(candidate)
                workspace.make_private()
                return workspace
        raise NotFoundError(
            "no Veil workspace here",
            expected=f"a {WORKSPACE_DIRNAME}/ directory in {start} or a parent, or VEIL_HOME set",
            got="none found",
            fix="run `veil init` in your project directory",
        )

    def make_private(self) -> None:
        """Make the workspace readable by its owner only: the directory 0700, files 0600.

        The files are ``config.toml`` (which may hold a database password)
        and the SQLite database ``veil.db`` with its ``-wal``, ``-shm`` and
        ``-journal`` files.

        :meth:`create` and :meth:`locate` call it, so an existing workspace
        made under a loose umask (``.veil`` 0755, ``veil.db`` 0644, readable
        by every local user) is tightened the next time Veil opens it, with
        a warning on the ``veil.workspace`` logger for each path changed. A
        path owned by another user is left as it is, with a warning: only its
        owner can change it. Nothing else is touched.
        """
        targets = [self.home, self.config_path] + [
            self.home / (SQLITE_FILENAME + suffix) for suffix in _SQLITE_SUFFIXES
        ]
        for path in targets:
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            mode = stat.S_IMODE(info.st_mode)
            if not mode & 0o077:
                continue
            private = mode & ~0o077
            if info.st_uid != os.geteuid():
                _log.warning(
                    "%s is readable by other users (mode %03o) but owned by another user, so "
                    "Veil leaves it: ask its owner to run `chmod %03o %s`",
                    path,
                    mode,
                    private,
                    path,
                )
                continue
            try:
                path.chmod(private)
            except OSError as exc:
                _log.warning(
                    "%s is readable by other users (mode %03o) and could not be made private "
                    "(%s): run `chmod %03o %s`",
                    path,
                    mode,
                    exc,
                    private,
                    path,
                )
                continue
            _log.warning(
                "%s was readable by other users (mode %03o): Veil made it owner-only (mode %03o)",
                path,
                mode,
                private,
            )

    def _config(self) -> dict[str, Any]:
        try:
            with self.config_path.open("rb") as handle:
                return tomllib.load(handle)
        except FileNotFoundError:
            return {}
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(
                "the workspace configuration is not valid TOML",
                expected=f"{self.config_path} to parse as TOML",
                got=str(exc),
                fix="correct the file, or delete it and run `veil init` to write a fresh one",
            ) from exc

    @property
    def settings(self) -> Settings:
        """The settings in force now (environment, then ``config.toml``, then defaults)."""
        config = self._config()
        url = os.environ.get("VEIL_DATABASE_URL") or config.get("store", {}).get("url")
        if not url:
            url = f"sqlite:///{self.sqlite_path}"
        raw_limit = os.environ.get("VEIL_MAX_LOAD_BYTES") or config.get("data", {}).get(
            "max_load_bytes"
        )
        return Settings(
            database_url=str(url),
            max_load_bytes=_parse_bytes(raw_limit) if raw_limit not in (None, "") else None,
            actor=_acting_account(),
            service_key=os.environ.get("VEIL_KEY") or None,
        )


def _parse_bytes(raw: object) -> int:
    text = str(raw).strip().replace("_", "")
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise InvalidInputError(
            "the memory limit for loading data is not a positive whole number of bytes",
            expected="VEIL_MAX_LOAD_BYTES / [data] max_load_bytes such as 8000000000",
            got=repr(raw),
            fix="set a positive integer, or unset it to use half the available memory",
        )
    return value


def login_name() -> str:
    """The operating-system account running this process (from the account database).

    Not :func:`getpass.getuser`: that reads ``$LOGNAME`` and ``$USER`` first,
    which anyone can set.
    """
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, OSError):  # no passwd entry, e.g. in some containers
        return f"uid:{os.geteuid()}"


def _acting_account() -> str:
    account = login_name()
    claimed = os.environ.get("VEIL_ACTOR")
    if claimed and claimed != account:
        raise InvalidInputError(
            "VEIL_ACTOR no longer chooses who acts",
            expected=f"VEIL_ACTOR unset (or equal to this account, {account!r})",
            got=f"VEIL_ACTOR={claimed!r}",
            fix="unset VEIL_ACTOR: Veil records the account running it; to act as a service, "
            "set VEIL_KEY to a key from `veil keys create`",
        )
    return account
