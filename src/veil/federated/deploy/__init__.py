"""Real deployment of a federated run on Flower: credentials, SuperLink, SuperNodes, runs.

Flower's deployment runtime has one coordinating process, the *SuperLink*, and one
long-running process per data holder, the *SuperNode*. A run is submitted to the
SuperLink's Control API (``flwr run``); the SuperLink starts the ServerApp, which sends
messages that each SuperNode answers by starting a ClientApp next to its data.

This package drives the Flower 1.42 executables with secure defaults, one concern per
module:

* credentials (``_credentials``, ``_pki``): :func:`create_credentials` makes a private CA,
  the SuperLink's TLS certificate and one ECDSA P-384 key pair per SuperNode (private keys
  0600; the CA's private key is discarded); :func:`open_credentials` reuses or creates them.
* process supervision (``_processes``, ``_superlink``, ``_supernode``):
  :func:`start_superlink` and :func:`start_supernode` start the processes (telemetry off,
  runtime dependency installation off, an allow-listed environment), wait until they are
  ready and stop them, with their children, when the context manager exits. TLS and
  SuperNode authentication are on unless ``insecure=True`` is passed explicitly.
* Flower's command line (``_flwr``): :func:`register_supernode` authorises a SuperNode's
  public key (``flwr supernode register``); :func:`submit_run` submits an app
  (``flwr run --stream``), waits for it and checks that it completed;
  :func:`write_flwr_config` writes the Flower CLI's ``config.toml``.
* the Flower App (``_app``): :func:`write_flower_app`, :func:`app_hash` and Veil's
  published app, the one data holders approve by default.
* the gates (``_gates``, run as ``python -m veil.federated.deploy._gates``): the Fleet-only
  filter at the data holders' address, and the SuperNode's check of approved app hashes.

Threat model: docs/federated.md#deployment (indexed in docs/security.md).
"""

from veil.federated.deploy._app import (
    app_hash,
    published_app_hash,
    veil_run_overrides,
    write_flower_app,
    write_published_app,
)
from veil.federated.deploy._credentials import (
    CA_CERTIFICATE,
    DeployCredentials,
    NodeKey,
    public_keys,
)
from veil.federated.deploy._flwr import (
    DeployedRun,
    register_supernode,
    submit_run,
    write_flwr_config,
)
from veil.federated.deploy._pki import create_credentials, create_node_key, open_credentials
from veil.federated.deploy._processes import free_port
from veil.federated.deploy._superlink import SuperLinkProcess, start_superlink
from veil.federated.deploy._supernode import (
    SuperNodeProcess,
    partition_node_config,
    start_supernode,
)

__all__ = [
    "CA_CERTIFICATE",
    "DeployCredentials",
    "DeployedRun",
    "NodeKey",
    "SuperLinkProcess",
    "SuperNodeProcess",
    "app_hash",
    "create_credentials",
    "create_node_key",
    "free_port",
    "open_credentials",
    "partition_node_config",
    "public_keys",
    "published_app_hash",
    "register_supernode",
    "start_superlink",
    "start_supernode",
    "submit_run",
    "veil_run_overrides",
    "write_flower_app",
    "write_flwr_config",
    "write_published_app",
]
