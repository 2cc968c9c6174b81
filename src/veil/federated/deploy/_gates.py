"""The two gates of a Veil deployment on Flower 1.42, run as ``python -m veil.federated.deploy._gates``.

Flower 1.42 serves a SuperLink's Fleet API (what data holders use), Control API
(registering nodes, submitting, listing and stopping runs, reading logs) and Runtime API
(what the ServerApp uses) from one HTTP server on one address, and authenticates Control
only with account authentication (OIDC), which the open-source distribution does not ship.
Anyone who could reach the data holders' address with the public ``ca.pem`` could therefore
register a node of their own and run code of their choosing on every SuperNode. Flower
offers no option to serve these APIs apart, so Veil does it with Flower's own objects:

``superlink``
    Builds the SuperLink exactly as ``flower-superlink`` does (same arguments, same
    FastAPI app, same lifespan) and serves it twice from one process: the whole app on
    ``--host``/``--port`` (a loopback address: the operator's), and on the data holders'
    address (``--veil-fleet-address``) the same app behind :class:`FleetOnly`, which answers
    404 to every request that is not a Fleet API call. No protocol is added or changed.

``node``
    Stands in for ``flower-superexec`` next to a SuperNode started with
    ``--isolation process``: it takes ClientApp tasks from the SuperNode's Runtime API (signed
    with the SuperNode's SuperExec secret, Flower's own mechanism) and starts
    ``flwr-clientapp`` only for runs whose app (FAB) hash the data holder approved. A task of
    any other app is answered with a Flower error reply naming the hash that arrived and the
    approved ones; its code is never installed or loaded. Every process it starts gets the
    allow-listed environment of :func:`veil._childenv.child_environment`.

The SuperNode checks that a FAB's content hashes to the hash it is stored under, so the
hash this gate checks is the hash of the code that would run.

Threat model: docs/federated.md#deployment (indexed in docs/security.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from veil._childenv import child_environment

__all__ = ["FLEET_PATH", "FleetOnly", "main"]

#: The only requests served on the data holders' address: Fleet API calls and health checks.
FLEET_PATH = re.compile(r"/v1/fleet/[a-z][a-z-]*")
_HEALTH = "/health"
_NOT_HERE = (
    b'{"detail": "Not found. This address serves only the Fleet API (data holders); '
    b"the Control and Runtime APIs listen on the coordinator's loopback address.\"}"
)
_REFUSED = "refused app"


class FleetOnly:
    """An ASGI wrapper that passes only Fleet API calls (and health checks) to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    @staticmethod
    def allowed(method: str, path: str) -> bool:
        if method == "POST" and FLEET_PATH.fullmatch(path):
            return True
        return method in ("GET", "HEAD") and path == _HEALTH

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.allowed(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return  # no lifespan here: the loopback server owns it
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_NOT_HERE)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _NOT_HERE})


def _pop_option(argv: list[str], name: str) -> str:
    index = argv.index(name)
    value = argv[index + 1]
    del argv[index : index + 2]
    return value


def _superlink(argv: list[str]) -> None:
    import uvicorn  # noqa: PLC0415 - a dependency of flwr
    from flwr.superlink.main import create_app  # noqa: PLC0415

    # The module, not the function of the same name that flwr.superlink.cli exports.
    flower = importlib.import_module("flwr.superlink.cli.flower_superlink")
    fleet = _pop_option(argv, "--veil-fleet-address")
    fleet_host, _, fleet_port = fleet.rpartition(":")
    sys.argv = ["flower-superlink", *argv]
    config = flower._parse_superlink_lifespan_config()  # noqa: SLF001 - Flower's own parser
    app = create_app(config, flower.SuperLinkLifespan)
    log_config = flower.get_uvicorn_log_config(flower.console_handler.level)
    public = uvicorn.Server(
        uvicorn.Config(
            app=FleetOnly(app),
            host=fleet_host.strip("[]"),
            port=int(fleet_port),
            lifespan="off",
            access_log=True,
            log_config=log_config,
            ssl_keyfile=config.ssl_keyfile,
            ssl_certfile=config.ssl_certfile,
            workers=1,
        )
    )
    # In a thread, uvicorn installs no signal handlers: the loopback server below owns them.
    threading.Thread(target=public.run, name="veil-fleet-only", daemon=True).start()
    uvicorn.run(
        app=app,
        host=config.host,
        port=config.port,
        reload=False,
        access_log=True,
        log_config=log_config,
        ssl_keyfile=config.ssl_keyfile,
        ssl_certfile=config.ssl_certfile,
        workers=1,
    )
    public.should_exit = True


def _log(message: str) -> None:
    sys.stdout.write(f"veil: {message}\n")
    sys.stdout.flush()


def _refusal(fab_hash: str, approved: Sequence[str]) -> str:
    return (
        f"a Veil data holder {_REFUSED} {fab_hash}: not approved by this data holder "
        f"(approved: {', '.join(approved)}); its code was not run"
    )


def _refuse(address: str, token: str, reason: str) -> None:
    """Answer a task with a Flower error reply, without installing or loading its FAB."""
    from flwr.app import Message  # noqa: PLC0415
    from flwr.app.error import Error  # noqa: PLC0415
    from flwr.common.constant import ErrorCode, SubStatus  # noqa: PLC0415
    from flwr.supercore.interceptors import (  # noqa: PLC0415
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker  # noqa: PLC0415
    from flwr.supercore.runtime import RuntimeHttpClient  # noqa: PLC0415
    from flwr.supernode.runtime.run_clientapp import (  # noqa: PLC0415
        pull_task_input,
        push_message,
        push_task_output,
    )

    client = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    try:
        message, context, _run, _fab = pull_task_input(client)  # the FAB is never installed
        reply = Message(Error(code=ErrorCode.INVALID_FAB, reason=reason), reply_to=message)
        push_message(client, reply, context)
        push_task_output(client, context, SubStatus.FAILED, reason)
    finally:
        client.close()


def _node(argv: list[str]) -> None:
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # noqa: PLC0415
    from flwr.supercore.app_utils import start_parent_process_monitor  # noqa: PLC0415
    from flwr.supercore.constant import TaskType  # noqa: PLC0415
    from flwr.supercore.interceptors import (  # noqa: PLC0415
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker  # noqa: PLC0415
    from flwr.supercore.runtime import RuntimeHttpClient  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m veil.federated.deploy._gates node")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--approve", action="append", default=[], required=True)
    parser.add_argument("--superexec-auth-secret-file", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args(argv)
    approved = tuple(dict.fromkeys(args.approve))
    secret = Path(args.superexec_auth_secret_file).read_bytes()
    start_parent_process_monitor(args.parent_pid)
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="SuperExec"),
            SuperExecAuthHttpInterceptor(
                master_secret=secret,
                protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"}),
            ),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    beside = Path(sys.executable).parent / "flwr-clientapp"
    clientapp = str(beside) if os.access(beside, os.X_OK) else "flwr-clientapp"
    environment = child_environment({k: v for k, v in os.environ.items() if k.startswith("FLWR_")})
    _log("approving ClientApp tasks of apps " + ", ".join(approved))
    running: list[subprocess.Popen[bytes]] = []
    waiting = False
    while True:
        try:
            answer = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=[str(TaskType.CLIENT_APP)])
            )
        except Exception as exc:  # noqa: BLE001 - the SuperNode may still be starting
            if not waiting:
                _log(f"waiting for the SuperNode's Runtime API: {type(exc).__name__}")
            waiting = True
            time.sleep(args.poll)
            continue
        waiting = False
        if answer.HasField("task") and answer.token:
            task = answer.task
            if task.fab_hash in approved:
                _log(f"approved app {task.fab_hash} of run {task.run_id}: starting its ClientApp")
                running.append(
                    subprocess.Popen(  # noqa: S603 - Flower's executable, no shell
                        [
                            clientapp,
                            "--runtime-api-address",
                            args.runtime_api_address,
                            "--token",
                            answer.token,
                            "--insecure",
                            "--parent-pid",
                            str(os.getpid()),
                        ],
                        env=environment,
                        stdin=subprocess.DEVNULL,
                    )
                )
            else:
                _log(
                    f"{_REFUSED} {task.fab_hash} of run {task.run_id}: not approved by this "
                    f"data holder (approved: {', '.join(approved)}); its code was not run"
                )
                try:
                    _refuse(
                        args.runtime_api_address, answer.token, _refusal(task.fab_hash, approved)
                    )
                except Exception as exc:  # noqa: BLE001 - the refusal stands; only the reply failed
                    _log(f"could not send the refusal of run {task.run_id}: {exc}")
        running = [process for process in running if process.poll() is None]
        time.sleep(args.poll)


def main(argv: Sequence[str] | None = None) -> None:
    """``superlink ARGS...`` or ``node ARGS...`` (see the module docstring)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in ("superlink", "node"):
        sys.exit("usage: python -m veil.federated.deploy._gates {superlink|node} ARGS...")
    if arguments[0] == "superlink":
        _superlink(arguments[1:])
    else:
        _node(arguments[1:])


if __name__ == "__main__":
    main()
