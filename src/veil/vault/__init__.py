"""The vault: where Veil's keys live, and encryption at rest under them.

Two kinds of key, one home:

- **The master key** opens the vault. :class:`Vault` seals files and
  in-memory secrets with AES-256-GCM envelope encryption: each object under
  its own data key, each data key wrapped by the master key
  (:class:`MasterKey`: a passphrase stretched with scrypt, or 32 raw bytes)
  and kept in the vault's manifest, so that :meth:`Vault.rotate` re-wraps
  keys without touching data (see ``docs/vault.md``).
- **Named keys** are the secrets Veil's own features use by name: the
  ledger's checkpoint key, the key of reversible redaction, pseudonymisation
  keys. :class:`KeyStore` keeps each in an owner-only file (or takes it from
  ``VEIL_KEY_<NAME>``)::

      key = KeyStore.for_workspace(workspace).get("ledger")

Why named keys are not sealed under the master key: they are used by
commands that must run unattended (every budget charge reads the ledger's
key), and a passphrase on each would stop them; their protection is the
file's mode and its place outside the data, as before, and their file format
and environment override are unchanged, so a workspace's existing keys read
back byte for byte (a changed key would break the ledger's chain and every
pseudonym).

Why this package, and not :class:`veil.workspace.Workspace`, hands out keys:
the workspace knows paths and settings only, and sits below the vault in
the dependency order, so it cannot import the vault. A ``Workspace.keys``
accessor would have to keep its own copy of the key rules (names, creation,
the environment override): a second key store. Callers ask the vault
instead, the one module that knows how keys are made, named and read.
"""

from veil.vault._keys import MasterKey, decode_raw_key
from veil.vault._manifest import SealedObject, VaultStatus
from veil.vault._named import KeyStore
from veil.vault._vault import Vault

__all__ = ["KeyStore", "MasterKey", "SealedObject", "Vault", "VaultStatus", "decode_raw_key"]
