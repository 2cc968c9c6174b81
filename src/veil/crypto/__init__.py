"""Homomorphic-encryption inference, secret sharing and MPC, Paillier and encryption at rest (issue: computing on encrypted data).

Encrypted inference: :func:`compile_model` lowers a trained PyTorch or
scikit-learn model (polynomial activations, see :func:`poly_activation`) to an
:class:`HEProgram`; :meth:`HEProgram.plan` chooses CKKS parameters
(:class:`HEPlan`, :func:`plan_parameters`); the client (:class:`HEClient`) makes
keys, encrypts and decrypts, the server (:class:`HEServer`) evaluates with only
a public context (see ``docs/he.md``). :class:`PaillierClient`,
:func:`paillier_linear` and :func:`paillier_sum` do additive work with Paillier.

Encryption at rest: :class:`Vault` seals files and in-memory secrets with
AES-256-GCM envelope encryption under a :class:`MasterKey` (see ``docs/vault.md``).

Multi-party computation: :func:`secure_sum`, :func:`secure_mean`,
:func:`secure_dot` and :func:`secure_multiply` run one OS process per party
over TCP on localhost (additive or Shamir sharing, Beaver triples from a
dealer) and return an :class:`MpcResult`; the sharing primitives and
:class:`FixedPoint` work on arrays (see ``docs/mpc.md``).
"""

from veil.crypto._ckks import HEClient, HEServer, error_bound
from veil.crypto._compile import HEProgram, compile_model, poly_activation
from veil.crypto._mpc import (
    MpcResult,
    PartyDroppedError,
    run_parties,
    secure_dot,
    secure_mean,
    secure_multiply,
    secure_sum,
)
from veil.crypto._paillier import PaillierClient, paillier_linear, paillier_sum
from veil.crypto._plan import HEPlan, plan_parameters
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
    "HEClient",
    "HEPlan",
    "HEProgram",
    "HEServer",
    "MasterKey",
    "MpcResult",
    "PaillierClient",
    "PartyDroppedError",
    "SealedObject",
    "Vault",
    "VaultStatus",
    "additive_reconstruct",
    "additive_share",
    "compile_model",
    "error_bound",
    "paillier_linear",
    "paillier_sum",
    "plan_parameters",
    "poly_activation",
    "run_parties",
    "secure_dot",
    "secure_mean",
    "secure_multiply",
    "secure_sum",
    "shamir_reconstruct",
    "shamir_share",
]
