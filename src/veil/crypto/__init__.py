"""Homomorphic-encryption inference, secret sharing and MPC, Paillier and encryption at rest (issue: computing on encrypted data).

Encryption at rest: :class:`Vault` seals files and in-memory secrets with
AES-256-GCM envelope encryption under a :class:`MasterKey` (see ``docs/vault.md``).
"""

from veil.crypto._vault import MasterKey, SealedObject, Vault, VaultStatus

__all__ = ["MasterKey", "SealedObject", "Vault", "VaultStatus"]
