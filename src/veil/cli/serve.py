"""``veil serve``: run the gateway (DP queries, protected and encrypted inference) under uvicorn.

The command checks everything it can before a worker starts (the workspace,
the store's schema version, the policy file, and for several workers the
PostgreSQL store and Redis), so that a mistake is one clear message and a
non-zero exit, not a worker crash loop. ``--check`` stops there and prints
what would run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from veil.cli._output import err, out, print_json
from veil.errors import require
from veil.workspace import Workspace, redact_url

__all__ = ["serve"]


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8700,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Worker processes; more than 1 needs VEIL_DATABASE_URL (PostgreSQL) and "
            "VEIL_REDIS_URL.",
        ),
    ] = 1,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Serving policy (YAML): output defences, budgets, rates, monitors per model "
            "and key. Default: <workspace>/serve.yaml if present, else label-only outputs, "
            "500 records per key and model.",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="VEIL_REDIS_URL",
            help="Redis for limits shared by workers (default: in memory, one worker).",
        ),
    ] = None,
    max_body: Annotated[
        int, typer.Option("--max-body", help="Largest JSON request body, in bytes.")
    ] = 1 << 20,
    max_he_body: Annotated[
        int,
        typer.Option("--max-he-body", help="Largest encrypted upload (context or request), bytes."),
    ] = 64 << 20,
    ip_rate: Annotated[
        str,
        typer.Option(
            "--ip-rate",
            help="Requests per client address allowed before its key is read (limits syntax).",
        ),
    ] = "200/second",
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies (comma-separated addresses) whose X-Forwarded-For names the client. "
            "Default: none; every client is its connection's address.",
        ),
    ] = None,
    shutdown_grace: Annotated[
        float,
        typer.Option("--shutdown-grace", help="Seconds in-flight requests get on shutdown."),
    ] = 10.0,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Listen on a non-loopback address (plain HTTP: put a TLS proxy in front).",
        ),
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
    check: Annotated[
        bool, typer.Option("--check", help="Check the configuration and policy, then exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --check: print JSON.")] = False,
) -> None:
    """Serve DP queries and models over HTTP, with keys, roles, limits, monitors and the trail."""
    require("fastapi", extra="serve", purpose="run `veil serve`")
    uvicorn = require("uvicorn", extra="serve", purpose="run `veil serve`")
    from veil.serve import (  # noqa: PLC0415 - FastAPI: keeps --help fast
        CONFIG_ENV,
        ModelCache,
        ServeConfig,
        ServePolicy,
        check_rate,
        configure_logging,
    )
    from veil.store import Store  # noqa: PLC0415

    workspace = Workspace.locate()
    config = ServeConfig(
        home=workspace.home,
        host=host,
        port=port,
        workers=workers,
        policy=None if policy is None else policy.resolve(),
        redis_url=redis_url or None,
        max_body_bytes=max_body,
        max_he_bytes=max_he_body,
        allow_remote=allow_remote,
        ip_rate=ip_rate,
        shutdown_grace=shutdown_grace,
        extra={"log_level": log_level},
    )
    config.check(workspace.settings)
    check_rate(ip_rate)
    store = Store.for_workspace(workspace)  # refuses a schema `veil db upgrade` must move first
    store.dispose()
    loaded = ServePolicy.load(config.policy_path())
    from veil.access import Access  # noqa: PLC0415

    cache = ModelCache(workspace, Access.open(workspace), torch_threads=None)
    cache.check_private(loaded)
    unknown = [m for m in loaded.models if not cache.registry.exists(m)]
    summary: dict[str, Any] = {
        "url": f"http://{host}:{port}",
        "workers": workers,
        "workspace": str(workspace.home),
        "database": redact_url(workspace.settings.database_url),
        "limits": "redis " + redact_url(redis_url) if redis_url else "in memory (one worker)",
        "policy": str(config.policy_path() or "built-in defaults"),
        "models": loaded.models,
        "unknown_models": unknown,
    }
    if unknown:
        err.print(
            f"warning: the policy names models this workspace lacks: {', '.join(unknown)} "
            "(their settings apply if models of those names are trained later)"
        )
    if check:
        if as_json:
            print_json(summary)
        else:
            for name, value in summary.items():
                out.print(f"{name:>10}: {value}")
        return
    os.environ[CONFIG_ENV] = config.to_env()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")  # see veil.serve._app._one_thread_per_request
    configure_logging(log_level)
    out.print(f"veil serve: {summary['url']} ({workers} worker(s), {summary['database']})")
    uvicorn.run(
        "veil.serve._app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=max(1, int(shutdown_grace)),
        server_header=False,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: any local process could then
        # pick the address it is limited as. Only the proxies named here are believed.
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        ws="none",  # no WebSocket routes; its legacy module warns on import
    )
