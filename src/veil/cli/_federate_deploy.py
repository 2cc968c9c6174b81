"""``veil federate serve`` and ``veil federate join``: a real Flower deployment.

``serve`` runs the coordinator (a Flower SuperLink) on one machine; ``join`` runs one data
holder (a Flower SuperNode) on each machine that holds a shard of the data. Runs are then
submitted to the SuperLink (``veil federate ... --superlink``, or ``flwr run``).

TLS and SuperNode authentication are on by default: ``serve`` creates the credentials the
first time (a private CA, the SuperLink's certificate, one key pair per SuperNode) and
admits only SuperNodes whose public keys it was told to authorise. Its ``--address`` serves
only Flower's Fleet API; registering nodes and submitting, listing or reading runs happen on
``--control-address``, a loopback address. ``join`` runs only apps whose bundle hash the data
holder approved (Veil's published app by default).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from veil._io import dumps
from veil.cli._output import err, out
from veil.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from veil.federated.deploy import SuperLinkProcess

__all__ = ["join", "register", "serve"]

JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON line on stdout once started (address, node ids, files), "
        "for scripts; messages still go to stderr.",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Turn OFF TLS and SuperNode authentication: traffic (model updates included) "
        "travels in the clear and any process that reaches the port can join. Only for a "
        "test on one trusted machine.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``join`` to the ``veil federate`` command group."""
    app.command("serve")(serve)
    app.command("join")(join)


def _json_line(payload: dict[str, Any]) -> None:
    sys.stdout.write(dumps(payload) + "\n")
    sys.stdout.flush()


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP all end the command like Ctrl-C, so the Flower processes
    (in their own sessions) are stopped in order; also where a shell started us with
    SIGINT ignored (``cmd &``) or a service manager stops us with SIGTERM."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    names = ("SIGINT", "SIGTERM", "SIGHUP")
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    previous = {number: signal.signal(number, interrupt) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _ConsoleWarnings(logging.Handler):
    """Veil's deployment warnings (``veil.federated`` logger) on stderr, in yellow."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"warning: {record.getMessage()}", style="bold yellow", markup=False)


@contextmanager
def _library_warnings_on_stderr() -> Iterator[None]:
    library = logging.getLogger("veil.federated")
    handler = _ConsoleWarnings(level=logging.WARNING)
    library.addHandler(handler)
    propagate, library.propagate = library.propagate, False
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.propagate = propagate


def serve(
    address: Annotated[
        str,
        typer.Option(
            "--address",
            help="HOST:PORT the SuperLink listens on. The default accepts only this "
            "machine; use 0.0.0.0:9093 for SuperNodes on other machines (and add the "
            "name they use with --hostname).",
        ),
    ] = "127.0.0.1:9093",  # reviewed: 0.0.0.0 only when asked, and it serves the Fleet API alone
    # (tests/federated/deploy/test_deploy_attacks.py plays the outsider at that address)
    control_address: Annotated[
        str,
        typer.Option(
            "--control-address",
            help="Loopback HOST:PORT of the Control API (register nodes, submit, list, stop "
            "and read runs; `veil federate --deploy --superlink` uses it). Only loopback is "
            "accepted: Flower 1.42 does not authenticate it, so whoever has a shell on this "
            "machine is the operator.",
        ),
    ] = "127.0.0.1:9095",
    credentials_dir: Annotated[
        Path,
        typer.Option(
            "--credentials",
            help="Credentials directory. Created on first use: ca.pem (give it to every "
            "SuperNode; it is public), superlink.pem, superlink.key (stays here) and "
            "nodes/node-<i>.key/.pub (give each SuperNode its own .key). Reused afterwards.",
        ),
    ] = Path("federation/credentials"),
    hostnames: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            help="A DNS name or IP address by which SuperNodes reach this machine; it is "
            "written into the certificate (localhost, 127.0.0.1 and ::1 always are). "
            "Repeatable.",
        ),
    ] = None,
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            min=0,
            help="SuperNode key pairs to create with new credentials (0 when every "
            "SuperNode makes its own and sends you its .pub).",
        ),
    ] = 2,
    authorize: Annotated[
        list[Path] | None,
        typer.Option(
            "--authorize",
            help="A SuperNode public key (.pub) to admit, or a directory of them (e.g. "
            "federation/credentials/nodes). Repeatable. Registrations are kept in the "
            "state database across restarts. SuperNodes with other keys are refused.",
        ),
    ] = None,
    state: Annotated[
        Path,
        typer.Option(
            "--state",
            help="Directory for the SuperLink's database (runs, registered SuperNodes) "
            "and its log, superlink.log.",
        ),
    ] = Path("federation/superlink"),
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace existing credentials with new ones. Every SuperNode then needs "
            "the new ca.pem and key.",
        ),
    ] = False,
    insecure: InsecureOption = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the SuperLink to start.")
    ] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Run the coordinator (a Flower SuperLink) until Ctrl-C.

    SuperNodes connect to it with `veil federate join`; runs are submitted to it. With
    TLS and SuperNode authentication (the default) it admits only the SuperNodes whose
    public keys you authorise with --authorize.

    Example, all on one machine:

        veil federate serve --authorize federation/credentials/nodes

        veil federate join --superlink 127.0.0.1:9093 --credentials federation/credentials --partition-id 0 --num-partitions 2
    """
    from veil.federated.deploy import (  # noqa: PLC0415
        open_credentials,
        public_keys,
        start_superlink,
    )

    credentials = None
    created = False
    credentials_dir = credentials_dir.expanduser().resolve()
    state = state.expanduser().resolve()
    if insecure:
        if authorize:
            raise InvalidInputError(
                "--authorize has no effect with --insecure",
                expected="either authenticated SuperNodes or --insecure",
                got="both",
                fix="drop --insecure (authentication needs TLS), or drop --authorize",
            )
    else:
        credentials, created = open_credentials(
            credentials_dir, hostnames=list(hostnames or []), nodes=nodes, force=force
        )
    keys = public_keys(list(authorize or []))
    with _signals_as_interrupt(), _library_warnings_on_stderr():
        try:
            with start_superlink(
                address,
                credentials,
                state,
                insecure,
                control_address=control_address,
                timeout=timeout,
            ) as link:
                registered = [
                    {"public_key": str(key), "node_id": link.register(key)} for key in keys
                ]
                flwr_home = link.write_flwr_config(state / "flwr-cli")
                _announce_link(link, registered, flwr_home, created=created, as_json=as_json)
                link.run_until_stopped(
                    fix="read its log above; restart `veil federate serve` (registrations "
                    "are kept in --state)",
                )
        except KeyboardInterrupt:
            err.print("SuperLink stopped.", markup=False)


def _announce_link(
    link: SuperLinkProcess,
    registered: list[dict[str, Any]],
    flwr_home: Path,
    *,
    created: bool,
    as_json: bool,
) -> None:
    credentials = link.credentials
    payload = {
        "event": "superlink-started",
        "address": link.address,
        "fleet_only": True,
        "control_address": link.control_address,
        "tls": credentials is not None,
        "supernode_authentication": credentials is not None,
        "credentials": str(credentials.directory) if credentials else None,
        "credentials_created": created,
        "ca_certificate": str(credentials.ca_certificate) if credentials else None,
        "registered": registered,
        "log": str(link.log_path),
        "flwr_home": str(flwr_home),
        "pid": link.pid,
    }
    if as_json:
        _json_line(payload)
        return
    mode = "TLS, SuperNode authentication on" if credentials else "INSECURE: no TLS, no auth"
    fleet = f"SuperLink listening on {link.address} ({mode}; Fleet API only: the data holders' "
    control = (
        f"Control API on {link.control_address} (loopback: submit runs here, e.g. "
        f"`veil federate --deploy --superlink {link.control_address}`)."
    )
    lines = [fleet + "address).", control]
    if credentials is not None:
        verb = "created" if created else "reused"
        lines.append(f"Credentials {verb} in {credentials.directory}.")
        for item in registered:
            node_id = item["node_id"]
            state = f"node id {node_id}" if node_id is not None else "already registered"
            lines.append(f"Authorised {item['public_key']} ({state}).")
        ca = credentials.ca_certificate
        if not registered:
            lines.append(
                "No SuperNode is authorised yet: restart with --authorize KEY.pub (or a "
                "directory of .pub files), or, while this runs, "
                f"`FLWR_HOME={flwr_home} flwr supernode register KEY.pub veil`."
            )
        lines.append(
            f"On each SuperNode's machine (with {ca} and that node's own key):\n"
            f"  veil federate join --superlink {link.fleet_address} --root-cert ca.pem "
            "--key node-<i>.key --partition-id <i> --num-partitions <n> [--data DIR]"
        )
    else:
        lines.append(
            f"On each SuperNode: veil federate join --superlink {link.fleet_address} "
            "--insecure --partition-id <i> --num-partitions <n>"
        )
    lines.append(f"Flower CLI: FLWR_HOME={flwr_home} flwr list veil. Log: {link.log_path}.")
    lines.append("Press Ctrl-C to stop.")
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def _node_credentials(
    credentials_dir: Path | None,
    root_cert: Path | None,
    key: Path | None,
    partition_id: int,
    insecure: bool,
) -> tuple[Path | None, Path | str | None]:
    """The CA certificate (or credentials directory) and the key of a joining SuperNode."""
    if insecure:
        if credentials_dir or root_cert or key:
            raise InvalidInputError(
                "--insecure cannot be combined with credentials",
                expected="--credentials/--root-cert/--key, or --insecure",
                got="both",
            )
        return None, None
    if credentials_dir is not None:
        if root_cert is not None:
            raise InvalidInputError(
                "give either --credentials or --root-cert",
                expected="one source of the CA certificate",
                got="both",
            )
        return credentials_dir, key or f"node-{partition_id}"
    if root_cert is None:
        raise NotFoundError(
            "no credentials given: TLS and SuperNode authentication are on by default",
            expected="--credentials DIR, or --root-cert ca.pem with --key node-<i>.key",
            got="neither",
            fix="copy ca.pem and this node's key from the SuperLink's operator; --insecure "
            "only for a local test against `veil federate serve --insecure`",
        )
    if key is None:
        raise NotFoundError(
            "no --key given",
            expected="this node's private key (node-<i>.key)",
            got="--root-cert only",
            fix="pass --key FILE, whose .pub the SuperLink's operator has authorised",
        )
    return root_cert, key


def join(
    superlink: Annotated[
        str,
        typer.Option(
            "--superlink",
            help="The SuperLink's HOST:PORT, as printed by `veil federate serve`; HOST must "
            "be a name in its certificate (see serve --hostname).",
        ),
    ],
    partition_id: Annotated[
        int,
        typer.Option(
            "--partition-id",
            min=0,
            help="This node's shard of the data, from 0 to --num-partitions - 1.",
        ),
    ],
    num_partitions: Annotated[
        int,
        typer.Option("--num-partitions", min=1, help="How many shards the data is split into."),
    ],
    credentials_dir: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            help="A credentials directory: uses its ca.pem and nodes/node-<partition-id>.key "
            "(override the key with --key).",
        ),
    ] = None,
    root_cert: Annotated[
        Path | None,
        typer.Option(
            "--root-cert",
            help="The SuperLink's ca.pem (public), to verify that this is the real "
            "SuperLink. Instead of --credentials.",
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="This node's private key (node-<i>.key; keep it secret). The SuperLink "
            "must have authorised the matching .pub.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Directory with this node's data (MNIST idx files); the ClientApp reads "
            "it as node config 'data'. Without it the ClientApp uses its default data.",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Directory for the SuperNode's log (supernode.log); temporary if omitted.",
        ),
    ] = None,
    approve_app: Annotated[
        list[str] | None,
        typer.Option(
            "--approve-app",
            help="SHA-256 of a Flower App bundle this node may run (as "
            "veil.federated.deploy.app_hash prints it). Repeatable. Default: only Veil's published "
            "app of this Veil version. Runs of any other app are refused and their code is "
            "never run.",
        ),
    ] = None,
    insecure: InsecureOption = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds to wait for the SuperLink to admit this node."),
    ] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Run one data holder (a Flower SuperNode) until Ctrl-C.

    The node connects to the SuperLink, proves its identity with its key, and trains on
    its own shard whenever a run asks it to; its data never leaves this machine, only
    model updates do.

    Example: veil federate join --superlink 127.0.0.1:9093 --credentials federation/credentials --partition-id 0 --num-partitions 2
    """
    from veil.federated.deploy import partition_node_config, start_supernode  # noqa: PLC0415

    config = partition_node_config(partition_id, num_partitions, data)
    ca, node_key = _node_credentials(credentials_dir, root_cert, key, partition_id, insecure)
    with _signals_as_interrupt(), _library_warnings_on_stderr():
        try:
            with start_supernode(
                superlink,
                ca,
                node_key,
                config,
                insecure,
                state_dir=state,
                timeout=timeout,
                approved_apps=approve_app or None,
            ) as node:
                payload = {
                    "event": "supernode-joined",
                    "superlink": superlink,
                    "node_id": node.node_id,
                    "node_config": config,
                    "tls": not insecure,
                    "approved_apps": list(node.approved_apps),
                    "log": str(node.log_path),
                    "pid": node.pid,
                }
                if as_json:
                    _json_line(payload)
                else:
                    mode = "TLS, authenticated" if not insecure else "INSECURE"
                    out.print(
                        f"SuperNode {node.node_id} joined {superlink} ({mode}) as partition "
                        f"{partition_id} of {num_partitions}. Runs only the apps "
                        f"{', '.join(node.approved_apps)}. Log: {node.log_path}. "
                        "Press Ctrl-C to leave.",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
                node.run_until_stopped(
                    fix="read its log above; run `veil federate join` again",
                )
        except KeyboardInterrupt:
            err.print("SuperNode stopped.", markup=False)
