"""The credentials of a deployment: what a credentials directory holds, and where each
process finds the files it needs (the CA certificate, the SuperLink's pair, a node's key).

A SuperNode's machine needs only ``ca.pem`` (public) and its own ``nodes/<name>.key``; the
SuperLink needs ``ca.pem``, ``superlink.pem`` and ``superlink.key``. Private files are
written 0600 and never widened. Issuing them is :mod:`veil.federated.deploy._pki`.

Threat model: docs/federated.md#deployment (indexed in docs/security.md).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from veil._io import write_bytes_atomic
from veil.errors import InvalidInputError, NotFoundError

__all__ = [
    "CA_CERTIFICATE",
    "MANIFEST",
    "NAME",
    "NODES_DIR",
    "SERVER_CERTIFICATE",
    "SERVER_KEY",
    "DeployCredentials",
    "NodeKey",
    "ca_certificate",
    "check_node_private_key",
    "check_node_public_key",
    "node_files",
    "public_keys",
    "resolve_credentials",
    "write_secret",
]

CA_CERTIFICATE = "ca.pem"
SERVER_CERTIFICATE = "superlink.pem"
SERVER_KEY = "superlink.key"
NODES_DIR = "nodes"
MANIFEST = "credentials.json"
NAME = re.compile(r"[A-Za-z0-9_-]+")  # a key name, a node-config or run-config key


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (ECDSA P-384, OpenSSH format)."""

    name: str
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class DeployCredentials:
    """The files of a credentials directory (see :func:`create_credentials`).

    A SuperNode's machine needs only ``ca.pem`` and its own ``nodes/<name>.key``; the
    SuperLink needs ``ca.pem``, ``superlink.pem`` and ``superlink.key``.
    """

    directory: Path
    ca_certificate: Path
    server_certificate: Path
    server_key: Path
    nodes: tuple[NodeKey, ...] = ()
    hostnames: tuple[str, ...] = ()

    @classmethod
    def load(cls, directory: Path) -> DeployCredentials:
        """Read a credentials directory; only ``ca.pem`` is required to exist."""
        directory = Path(directory).expanduser()
        ca = directory / CA_CERTIFICATE
        if not ca.is_file():
            raise NotFoundError(
                f"no credentials in {directory}",
                expected=f"a CA certificate at {ca}",
                got="nothing there" if not directory.exists() else "a directory without ca.pem",
                fix="create them with `veil federate serve --credentials DIR` (or "
                "veil.federated.deploy.create_credentials), or point at the directory that holds "
                "ca.pem",
            )
        nodes = tuple(
            NodeKey(public.stem, public.with_suffix(".key"), public)
            for public in sorted((directory / NODES_DIR).glob("*.pub"))
        )
        hostnames: tuple[str, ...] = ()
        manifest = directory / MANIFEST
        if manifest.is_file():
            with contextlib.suppress(ValueError, OSError):
                hostnames = tuple(json.loads(manifest.read_text("utf-8")).get("hostnames", ()))
        return cls(
            directory=directory,
            ca_certificate=ca,
            server_certificate=directory / SERVER_CERTIFICATE,
            server_key=directory / SERVER_KEY,
            nodes=nodes,
            hostnames=hostnames,
        )

    def node(self, name: str) -> NodeKey:
        """The key pair called ``name`` (for example ``node-0``)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise NotFoundError(
            f"no SuperNode key called {name!r} in {self.directory / NODES_DIR}",
            expected="one of: " + (", ".join(n.name for n in self.nodes) or "(none)"),
            got=repr(name),
            fix="create it with veil.federated.deploy.create_node_key, or pass the key file itself",
        )

    def require_server(self) -> None:
        """Check that the SuperLink's certificate and key are present."""
        for path in (self.server_certificate, self.server_key):
            if not path.is_file():
                raise NotFoundError(
                    f"the SuperLink credentials are incomplete: {path.name} is missing",
                    expected=f"{path}",
                    got="nothing there",
                    fix="run the SuperLink from the credentials directory that "
                    "create_credentials wrote (it holds superlink.pem and superlink.key), "
                    "or recreate it with force=True (then give every SuperNode the new ca.pem)",
                )


def write_secret(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``data`` atomically; private files are created 0600 and never widened."""
    write_bytes_atomic(path, data, mode=0o600 if private else 0o644)


def check_node_private_key(path: Path) -> None:
    """Check that ``path`` is an unencrypted OpenSSH EC private key on a NIST curve."""

    if not path.is_file():
        raise NotFoundError(
            "the SuperNode's private key was not found",
            expected=f"an OpenSSH private key file at {path}",
            got="nothing there",
            fix="pass the node-<i>.key file from the credentials directory (or create one "
            "with veil.federated.deploy.create_node_key and have its .pub authorised)",
        )
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError(
            "the SuperNode key cannot be read",
            expected="an unencrypted OpenSSH ECDSA private key (P-256, P-384 or P-521)",
            got=f"{path}: {exc}",
            fix="use a key written by create_credentials or create_node_key",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInputError(
            "the SuperNode key is not an elliptic-curve key",
            expected="an OpenSSH ECDSA private key (Flower authenticates SuperNodes with ECDSA)",
            got=f"{type(key).__name__} in {path}",
        )


def check_node_public_key(path: Path) -> None:

    if not path.is_file():
        raise NotFoundError(
            "the SuperNode's public key was not found",
            expected=f"an OpenSSH public key file (.pub) at {path}",
            got="nothing there",
        )
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError(
            "the SuperNode public key cannot be read",
            expected="one OpenSSH line 'ecdsa-sha2-nistp384 AAAA...'",
            got=f"{path}: {exc}",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidInputError(
            "the SuperNode public key is not an elliptic-curve key",
            expected="an OpenSSH ECDSA public key (ecdsa-sha2-nistp256/384/521)",
            got=f"{type(key).__name__} in {path}",
        )


def resolve_credentials(
    credentials: DeployCredentials | Path | None, *, insecure: bool
) -> DeployCredentials | None:
    if isinstance(credentials, DeployCredentials):
        return credentials
    if credentials is not None:
        return DeployCredentials.load(Path(credentials))
    if insecure:
        return None
    raise NotFoundError(
        "no credentials were given, and TLS with SuperNode authentication is the default",
        expected="a credentials directory (ca.pem, superlink.pem, superlink.key, nodes/)",
        got="None",
        fix="create them with veil.federated.deploy.create_credentials(DIR) or `veil federate serve "
        "--credentials DIR`; pass insecure=True (--insecure) only for a local test",
    )


def node_files(
    credentials: DeployCredentials | Path | None, node_key: NodeKey | Path | str | None
) -> tuple[Path, Path]:
    """The CA certificate and the private key a secure SuperNode needs."""
    if credentials is None:
        raise NotFoundError(
            "a secure SuperNode needs the SuperLink's CA certificate",
            expected="credentials: a credentials directory or its ca.pem",
            got="None",
            fix="copy ca.pem from the SuperLink's credentials directory (it is public), or "
            "pass insecure=True (--insecure) only for a local test",
        )
    creds: DeployCredentials | None = None
    if isinstance(credentials, DeployCredentials):
        creds = credentials
        ca = creds.ca_certificate
    elif Path(credentials).is_dir():
        creds = DeployCredentials.load(Path(credentials))
        ca = creds.ca_certificate
    else:
        ca = Path(credentials).expanduser()
        if not ca.is_file():
            raise NotFoundError(
                "the SuperLink's CA certificate was not found",
                expected=f"a PEM file (ca.pem) at {ca}",
                got="nothing there",
                fix="copy ca.pem from the SuperLink's credentials directory",
            )
    if node_key is None:
        raise NotFoundError(
            "a secure SuperNode needs its authentication key",
            expected="node_key: a private key file or a key name in the credentials",
            got="None",
            fix="pass the node's .key file; its .pub must be registered at the SuperLink",
        )
    if isinstance(node_key, NodeKey):
        key = node_key.private_key
    elif isinstance(node_key, str):
        if creds is None:
            raise InvalidInputError(
                "a key name needs a credentials directory",
                expected="a key file path, or credentials given as a directory",
                got=repr(node_key),
            )
        key = creds.node(node_key).private_key
    else:
        key = Path(node_key).expanduser()
    check_node_private_key(key)
    return ca, key


def ca_certificate(credentials: DeployCredentials | Path) -> Path:
    """The CA certificate of ``credentials``: a :class:`DeployCredentials`, its directory,
    or the ``ca.pem`` file itself."""
    if isinstance(credentials, DeployCredentials):
        return credentials.ca_certificate
    path = Path(credentials)
    return DeployCredentials.load(path).ca_certificate if path.is_dir() else path


def public_keys(paths: Sequence[Path]) -> list[Path]:
    """The SuperNode public keys to authorise: each ``.pub`` file, and every ``*.pub`` in
    each directory (sorted).

    Raises:
        NotFoundError: When a path does not exist, or a directory holds no ``.pub`` file.
    """
    keys: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.pub"))
            if not found:
                raise NotFoundError(
                    f"no public keys in {path}",
                    expected="SuperNode public keys (*.pub) in the --authorize directory",
                    got="none",
                )
            keys += found
        elif path.is_file():
            keys.append(path)
        else:
            raise NotFoundError(
                "a key to authorise was not found",
                expected=f"a .pub file or a directory of them at {path}",
                got="nothing there",
            )
    return keys
