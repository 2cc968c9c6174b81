"""Encryption at rest: AES-256-GCM envelopes under a master key (see ``docs/vault.md``)."""

from veil.vault._vault import MasterKey, SealedObject, Vault, VaultStatus, decode_raw_key

__all__ = ["MasterKey", "SealedObject", "Vault", "VaultStatus", "decode_raw_key"]
