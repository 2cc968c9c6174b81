"""Homomorphic-encryption inference, secret sharing and MPC, Paillier and encryption at rest (issue: computing on encrypted data).

Encryption at rest: :class:`Vault` seals files and in-memory secrets with
AES-256-GCM envelope encryption under a :class:`MasterKey` (see ``docs/vault.md``).

Multi-party computation: :func:`secure_sum`, :func:`secure_mean`,
:func:`secure_dot` and :func:`secure_multiply` run one OS process per party
over TCP on localhost (additive or Shamir sharing, Beaver triples from a
dealer) and return an :class:`MpcResult`; the sharing primitives and
:class:`FixedPoint` work on arrays (see ``docs/mpc.md``).
"""

from veil.crypto._mpc import (
    MpcResult,
    PartyDroppedError,
    run_parties,
    secure_dot,
    secure_mean,
    secure_multiply,
    secure_sum,
)
from veil.crypto._sharing import (
    FixedPoint,
    additive_reconstruct,
    additive_share,
    shamir_reconstruct,
    shamir_share,
)
from veil.crypto._vault import MasterKey, SealedObject, Vault, VaultStatus

__all__ = [
    "FixedPoint",
    "MasterKey",
    "MpcResult",
    "PartyDroppedError",
    "SealedObject",
    "Vault",
    "VaultStatus",
    "additive_reconstruct",
    "additive_share",
    "run_parties",
    "secure_dot",
    "secure_mean",
    "secure_multiply",
    "secure_sum",
    "shamir_reconstruct",
    "shamir_share",
]
