"""Issuing a deployment's credentials: a private certificate authority, the SuperLink's TLS
certificate and one authentication key pair per SuperNode.

:func:`create_credentials` makes a private CA, the SuperLink's certificate (for
``127.0.0.1``, ``::1``, ``localhost`` and any extra hostnames) and one key pair per
SuperNode (ECDSA P-384, OpenSSH format, private keys 0600). The CA's private key is
discarded once the certificate is signed, so nobody can mint a second certificate that
SuperNodes would trust. :func:`open_credentials` reuses a directory or issues one.

Threat model: docs/federated.md#deployment (indexed in docs/security.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veil.errors import ConflictError, InvalidInputError
from veil.federated.deploy._credentials import (
    CA_CERTIFICATE,
    MANIFEST,
    NAME,
    NODES_DIR,
    SERVER_CERTIFICATE,
    SERVER_KEY,
    DeployCredentials,
    NodeKey,
    write_secret,
)

__all__ = ["create_credentials", "create_node_key", "open_credentials"]

_VALIDITY_DAYS = 365


def _check_hostname(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9*](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+", name):
        raise InvalidInputError(
            "not a hostname or IP address",
            expected="a DNS name such as superlink.example.org, or an IP address",
            got=repr(name),
            fix="pass the name the SuperNodes will use in --superlink HOST:PORT",
        )
    return x509.DNSName(name.rstrip("."))


def create_node_key(directory: Path, name: str, *, force: bool = False) -> NodeKey:
    """Create one SuperNode key pair ``<directory>/<name>.key`` (0600) and ``<name>.pub``.

    The private key stays on the SuperNode's machine; only the ``.pub`` file goes to the
    SuperLink's operator, who authorises it (:func:`register_supernode`).

    Raises:
        ConflictError: When either file exists and ``force`` is false.
        InvalidInputError: When ``name`` is not a simple file name.
    """
    if not NAME.fullmatch(name):
        raise InvalidInputError(
            "bad SuperNode key name",
            expected="letters, digits, '-' or '_'",
            got=repr(name),
        )
    directory = Path(directory).expanduser()
    node = NodeKey(name, directory / f"{name}.key", directory / f"{name}.pub")
    existing = [p for p in (node.private_key, node.public_key) if p.exists()]
    if existing and not force:
        raise ConflictError(
            f"a SuperNode key called {name!r} already exists",
            expected="no key files at " + ", ".join(str(p) for p in existing),
            got="existing files",
            fix="reuse it, choose another name, or pass force=True (the SuperLink must then "
            "authorise the new public key)",
        )
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_secret(node.private_key, private, private=True)
    write_secret(node.public_key, public + f" veil-{name}\n".encode(), private=False)
    return node


def create_credentials(
    directory: Path,
    *,
    hostnames: Sequence[str] = (),
    nodes: int = 2,
    force: bool = False,
    valid_days: int = _VALIDITY_DAYS,
) -> DeployCredentials:
    """Create the TLS and authentication credentials of a deployment in ``directory``.

    Writes ``ca.pem`` (the certificate every SuperNode and ``flwr`` client trusts),
    ``superlink.pem`` and ``superlink.key`` (0600) for the SuperLink, valid for
    ``127.0.0.1``, ``::1``, ``localhost`` and ``hostnames``, ``nodes/node-<i>.key`` (0600)
    and ``nodes/node-<i>.pub`` for ``nodes`` SuperNodes, and a ``credentials.json``
    manifest. All keys are ECDSA P-384. The CA's private key is not kept.

    Args:
        directory: Where to write (created 0700 if missing).
        hostnames: Extra DNS names or IP addresses by which SuperNodes reach the SuperLink.
        nodes: How many SuperNode key pairs to create (0 when nodes make their own).
        force: Replace existing credentials (every SuperNode then needs the new ca.pem).
        valid_days: Lifetime of the certificates.

    Raises:
        ConflictError: When credentials already exist there and ``force`` is false.
        InvalidInputError: On a bad hostname, node count or lifetime.
    """
    if nodes < 0 or valid_days < 1:
        raise InvalidInputError(
            "bad credential parameters",
            expected="nodes >= 0 and valid_days >= 1",
            got=f"nodes={nodes}, valid_days={valid_days}",
        )
    directory = Path(directory).expanduser()
    names = ["localhost", "127.0.0.1", "::1", *hostnames]
    alternative = list(dict.fromkeys(_check_hostname(n) for n in names))
    existing = [
        p
        for p in (directory / CA_CERTIFICATE, directory / SERVER_KEY, directory / MANIFEST)
        if p.exists()
    ]
    if (directory / NODES_DIR).is_dir() and any((directory / NODES_DIR).iterdir()):
        existing.append(directory / NODES_DIR)
    if existing and not force:
        raise ConflictError(
            f"credentials already exist in {directory}",
            expected="an empty or new directory",
            got="existing " + ", ".join(p.name for p in existing),
            fix="reuse them (DeployCredentials.load, or `veil federate serve --credentials "
            "DIR` without --force), or pass force to replace them; replaced credentials "
            "invalidate every SuperNode's ca.pem and key",
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if force and (directory / NODES_DIR).is_dir():
        for stale in (directory / NODES_DIR).glob("*.[kp][eu][yb]"):
            stale.unlink()

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=valid_days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Veil federated deployment"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Veil deployment CA"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    del ca_key  # never written: no one can issue another certificate the nodes trust
    pem = serialization.Encoding.PEM
    write_secret(
        directory / SERVER_KEY,
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private=True,
    )
    write_secret(directory / SERVER_CERTIFICATE, server.public_bytes(pem), private=False)
    write_secret(directory / CA_CERTIFICATE, ca.public_bytes(pem), private=False)
    node_keys = [
        create_node_key(directory / NODES_DIR, f"node-{index}", force=force)
        for index in range(nodes)
    ]
    manifest = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "not_valid_after": until.isoformat(timespec="seconds"),
        "hostnames": names,
        "ca_sha256": ca.fingerprint(hashes.SHA256()).hex(),
        "nodes": [node.name for node in node_keys],
        "key_type": "ECDSA P-384 (SuperNode keys in OpenSSH format)",
    }
    write_secret(
        directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), private=False
    )
    return DeployCredentials.load(directory)


def open_credentials(
    directory: Path, *, hostnames: Sequence[str] = (), nodes: int = 2, force: bool = False
) -> tuple[DeployCredentials, bool]:
    """The SuperLink's credentials in ``directory``: reused if there, else created.

    Returns:
        The credentials, and True when they were created now.

    Raises:
        NotFoundError: When reused credentials lack the SuperLink's certificate or key.
        InvalidInputError: When the reused certificate does not name every hostname.
    """
    directory = Path(directory)
    if (directory / CA_CERTIFICATE).is_file() and not force:
        credentials = DeployCredentials.load(directory)
        credentials.require_server()
        missing = [name for name in hostnames if name not in credentials.hostnames]
        if missing:
            raise InvalidInputError(
                "the existing SuperLink certificate does not name every --hostname",
                expected="hostnames among: " + ", ".join(credentials.hostnames),
                got=", ".join(missing),
                fix="pass --force to issue new credentials for these hostnames (every "
                "SuperNode then needs the new ca.pem and a newly authorised key), or drop "
                "the --hostname",
            )
        return credentials, False
    return create_credentials(directory, hostnames=hostnames, nodes=nodes, force=force), True
