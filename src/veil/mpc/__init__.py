"""Multi-party computation: secret sharing, and parties that compute on shares.

:func:`secure_sum`, :func:`secure_mean`, :func:`secure_dot` and
:func:`secure_multiply` run one OS process per party over TCP on localhost
(additive or Shamir sharing, Beaver triples from a dealer) and return an
:class:`MpcResult`; :func:`run_parties` is the one runner behind them. The
sharing primitives (:func:`additive_share`, :func:`shamir_share` and their
reconstructions) and :class:`FixedPoint` work on arrays in this process (see
``docs/mpc.md``).
"""

from veil.mpc._mpc import (
    PartyDroppedError,
    run_parties,
    secure_dot,
    secure_mean,
    secure_multiply,
    secure_sum,
)
from veil.mpc._result import MpcResult
from veil.mpc._sharing import (
    FixedPoint,
    additive_reconstruct,
    additive_share,
    shamir_reconstruct,
    shamir_share,
)

__all__ = [
    "FixedPoint",
    "MpcResult",
    "PartyDroppedError",
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
