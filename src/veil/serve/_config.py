"""How ``veil serve`` runs: :class:`ServeConfig`, from the command line or the environment.

uvicorn starts each worker process by importing the app factory, so the
configuration travels to workers as one environment variable
(``VEIL_SERVE_CONFIG``, JSON) that :meth:`ServeConfig.from_env` reads back.

Several workers share state only through the database and Redis: the ledger,
the trail and the keys live in the database, and the rate limits, count
budgets and throttles in Redis. SQLite is one file that one process writes
at a time and an in-memory limiter is one process's memory, so ``--workers``
above one needs PostgreSQL (``VEIL_DATABASE_URL``) and Redis
(``VEIL_REDIS_URL``); :meth:`ServeConfig.check` refuses to start otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from veil.errors import InvalidInputError
from veil.workspace import Settings, redact_url

__all__ = ["CONFIG_ENV", "REDIS_ENV", "ServeConfig"]

CONFIG_ENV = "VEIL_SERVE_CONFIG"
REDIS_ENV = "VEIL_REDIS_URL"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_MAX_WORKERS = 64
_MAX_PORT = 65535


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one ``veil serve`` (every worker reads the same).

    Attributes:
        home: The workspace's home (its ``.veil`` folder).
        host: Address to bind (``127.0.0.1`` by default; another needs ``allow_remote``).
        port: TCP port.
        workers: uvicorn worker processes.
        policy: The serving policy file (YAML); ``None``: ``<home>/serve.yaml`` if it
            exists, else the built-in defaults.
        redis_url: Redis for shared limits and counters (``VEIL_REDIS_URL``); ``None``
            keeps them in memory (one worker only).
        max_body_bytes: Largest JSON request body.
        max_he_bytes: Largest public context a client may upload for encrypted inference.
        max_he_request_bytes: Largest encrypted inference request.
        he_context_ttl: Seconds an uploaded public context is kept.
        he_contexts_per_key: Public contexts one key may keep per program (the oldest goes).
        flush_interval: Seconds between moves of the trail spool into the trail.
        ip_rate: Requests per client address allowed before authentication.
        allow_remote: Bind to a non-loopback address (put TLS in front: the service speaks
            plain HTTP).
        shutdown_grace: Seconds in-flight requests get to finish on shutdown.
    """

    home: Path
    host: str = "127.0.0.1"
    port: int = 8700
    workers: int = 1
    policy: Path | None = None
    redis_url: str | None = None
    max_body_bytes: int = 1 << 20
    max_he_bytes: int = 64 << 20
    max_he_request_bytes: int = 16 << 20
    he_context_ttl: float = 86400.0
    he_contexts_per_key: int = 4
    flush_interval: float = 0.05
    ip_rate: str = "200/second"
    allow_remote: bool = False
    shutdown_grace: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)

    def policy_path(self) -> Path | None:
        """The policy file in force: the one given, else ``<home>/serve.yaml`` when present."""
        if self.policy is not None:
            return self.policy
        default = self.home / "serve.yaml"
        return default if default.is_file() else None

    # ------------------------------------------------------------ checks
    def check(self, settings: Settings) -> None:
        """Refuse a configuration that would serve without shared accounting or limits.

        Raises:
            InvalidInputError: Several workers without PostgreSQL and Redis, a bad
                port or worker count, or a public address without ``allow_remote``.
        """
        if not 1 <= self.workers <= _MAX_WORKERS:
            raise InvalidInputError(
                "invalid number of workers",
                expected="1 to 64 worker processes",
                got=str(self.workers),
                fix="pass --workers 1 (SQLite) or up to the machine's cores (PostgreSQL + Redis)",
            )
        if not 0 <= self.port <= _MAX_PORT:
            raise InvalidInputError(
                "invalid port", expected="0 to 65535", got=str(self.port), fix="pass --port 8700"
            )
        if self.host not in _LOOPBACK and not self.allow_remote:
            raise InvalidInputError(
                "the service would listen beyond this machine",
                expected="127.0.0.1, ::1 or localhost",
                got=self.host,
                fix="bind to 127.0.0.1 behind a TLS-terminating proxy, or pass --allow-remote "
                "if a proxy on another address forwards to it",
            )
        if self.workers > 1:
            missing = []
            if not settings.database_url.startswith("postgresql"):
                missing.append(
                    f"PostgreSQL in VEIL_DATABASE_URL (the store is "
                    f"{redact_url(settings.database_url)})"
                )
            if not self.redis_url:
                missing.append(f"Redis in {REDIS_ENV} (unset)")
            if missing:
                raise InvalidInputError(
                    f"{self.workers} workers need a shared database and shared limits",
                    expected="VEIL_DATABASE_URL=postgresql://... and VEIL_REDIS_URL=redis://...",
                    got="missing " + " and ".join(missing),
                    fix="set both (the ledger and the trail need one database every worker "
                    "writes; rate limits and query budgets need one Redis), or run --workers 1",
                )

    # ------------------------------------------------------------ transport to workers
    def to_env(self) -> str:
        data = asdict(self)
        data["home"] = str(self.home)
        data["policy"] = None if self.policy is None else str(self.policy)
        return json.dumps(data)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeConfig:
        """The configuration a worker process was started with."""
        environ = dict(os.environ if environ is None else environ)
        raw = environ.get(CONFIG_ENV)
        if raw is None:
            raise InvalidInputError(
                "the service's configuration is missing",
                expected=f"{CONFIG_ENV} set by `veil serve`",
                got="unset",
                fix="start the service with `veil serve`, or call create_app(config)",
            )
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["home"] = Path(data["home"])
        data["policy"] = None if data.get("policy") is None else Path(data["policy"])
        return cls(**data)
