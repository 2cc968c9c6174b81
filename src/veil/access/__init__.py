"""Principals, roles, service keys and the tamper-evident trail: every access leaves a trace.

:class:`Access` checks what the acting principal may do and records what it
did; :class:`Trail` is the append-only, hash-chained Merkle log the records go
to; :mod:`veil.access.verifier` checks the trail's proofs and signed heads
with no Veil code at all. ``docs/governance.md`` has the roles table and the
threat model.

This package sits just above the store and the vault, so every layer above it
(data, ledger, models, audits, the service) checks and records through it.
"""

from veil.access._access import Access
from veil.access._keys import parse_key
from veil.access._principal import Principal, PrincipalKind, ServiceKeyInfo
from veil.access._roles import ROLE_PERMISSIONS, WORKSPACE, Grant, Permission, Policy, Role
from veil.access._trail import (
    HEAD_EVERY,
    Outcome,
    Trail,
    TrailEntry,
    TrailProblem,
    TrailReport,
    TreeHead,
)

__all__ = [
    "HEAD_EVERY",
    "ROLE_PERMISSIONS",
    "WORKSPACE",
    "Access",
    "Grant",
    "Outcome",
    "Permission",
    "Policy",
    "Principal",
    "PrincipalKind",
    "Role",
    "ServiceKeyInfo",
    "Trail",
    "TrailEntry",
    "TrailProblem",
    "TrailReport",
    "TreeHead",
    "parse_key",
]
