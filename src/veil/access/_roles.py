"""Roles and what each may do: a fixed table, checked against grants held in memory.

Why not a policy engine (pycasbin, oso, OPA): Veil's model is four fixed roles
on two kinds of scope (the workspace, one dataset), which is a dictionary
lookup. pycasbin evaluates a general matcher per policy line and was measured
at about 62 ms per check with 11,000 policies (FIELD-NOTES.md), three hundred
times the 0.2 ms a check may cost here; ``veil bench trail`` measures ours. A
general engine would also make the roles table something to read in a policy
DSL rather than in the docs and the code below, side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ROLE_PERMISSIONS", "WORKSPACE", "Grant", "Permission", "Policy", "Role"]

WORKSPACE = "*"  # the scope of a grant on the whole workspace


class Role(StrEnum):
    """The four roles (``docs/governance.md`` has the table)."""

    OWNER = "owner"
    ANALYST = "analyst"
    AUDITOR = "auditor"
    CONSUMER = "consumer"


class Permission(StrEnum):
    """One thing a principal may do. Dataset permissions may be granted per dataset."""

    DATASET_REGISTER = "dataset.register"  # register, update, remove a dataset
    DATASET_READ_ROWS = "dataset.read_rows"  # see raw rows
    DATASET_READ_METADATA = "dataset.read_metadata"  # schema, size, fingerprint
    DATASET_USE = "dataset.use"  # let a DP mechanism read the rows on your behalf
    DATASET_RELEASE_ROWS = "dataset.release_rows"  # anonymise, redact: row-level outputs
    BUDGET_SET = "budget.set"
    BUDGET_SPEND = "budget.spend"  # DP queries, DP training, synthetic data
    NON_PRIVATE_USE = "dataset.non_private"  # a recorded use without DP (baselines)
    LEDGER_READ = "ledger.read"
    AUDIT_RUN = "audit.run"
    MODEL_READ = "model.read"  # model cards, weights
    MODEL_PREDICT = "model.predict"  # call a (served) model
    TRAIL_READ = "trail.read"
    TRAIL_CHECKPOINT = "trail.checkpoint"
    ACCESS_MANAGE = "access.manage"  # grant and revoke roles, create and revoke keys
    ACCESS_READ = "access.read"  # list grants and keys
    KEYS_USE = "keys.use"  # vault: encrypt, decrypt, rotate; named keys
    DATASET_ERASE = "dataset.erase"  # erase a person, set and run retention (managed data)
    CONSENT_MANAGE = "consent.manage"  # record consent, declare purposes, enable filtering
    CONSENT_READ = "consent.read"  # consent state, erasures and retention records


_P = Permission
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.ANALYST: frozenset(
        {
            _P.DATASET_READ_METADATA,
            _P.DATASET_USE,
            _P.BUDGET_SPEND,
            _P.LEDGER_READ,
            _P.MODEL_READ,
            _P.MODEL_PREDICT,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            _P.DATASET_READ_METADATA,
            _P.DATASET_USE,  # an audit attacks a model with its training rows; it shows none
            _P.LEDGER_READ,
            _P.AUDIT_RUN,
            _P.MODEL_READ,
            _P.MODEL_PREDICT,
            _P.TRAIL_READ,
            _P.ACCESS_READ,
            _P.CONSENT_READ,
        }
    ),
    Role.CONSUMER: frozenset({_P.MODEL_PREDICT}),
}

# Permissions held only through a grant on the whole workspace: a dataset's owner manages
# that dataset (its budget, its grants and keys), not the workspace's keys, its trail's
# checkpoints or the registration of other data.
WORKSPACE_ONLY = frozenset({_P.KEYS_USE, _P.TRAIL_CHECKPOINT, _P.DATASET_REGISTER})


@dataclass(frozen=True, order=True)
class Grant:
    """A role held by a principal on a scope (:data:`WORKSPACE` or a dataset name)."""

    principal: str
    role: Role
    scope: str = WORKSPACE

    def to_dict(self) -> dict[str, str]:
        return {"principal": self.principal, "role": str(self.role), "scope": self.scope}


class Policy:
    """The grants of one principal, held in memory: a check is a set lookup.

    Args:
        grants: The principal's (role, scope) pairs.
        limit: A service key's scopes: only these (role, scope) pairs may be
            exercised, however many the principal holds. ``None``: no limit.
    """

    def __init__(
        self,
        grants: Iterable[tuple[Role, str]],
        limit: Iterable[tuple[Role, str]] | None = None,
    ) -> None:
        held = {(Role(r), s) for r, s in grants}
        if limit is not None:
            allowed = {(Role(r), s) for r, s in limit}
            held = {g for g in held if g in allowed or (g[0], WORKSPACE) in allowed}
            held |= {g for g in allowed if (g[0], WORKSPACE) in held}
        self.grants = frozenset(held)
        self._workspace: frozenset[Permission] = frozenset().union(
            *(ROLE_PERMISSIONS[r] for r, s in held if s == WORKSPACE)
        )
        by_dataset: dict[str, set[Permission]] = {}
        for role, scope in held:
            if scope != WORKSPACE:
                by_dataset.setdefault(scope, set()).update(ROLE_PERMISSIONS[role])
        self._datasets = {k: frozenset(v - WORKSPACE_ONLY) for k, v in by_dataset.items()}

    def allows(self, permission: Permission, dataset: str | None = None) -> bool:
        """Whether ``permission`` is held on ``dataset`` (or on the workspace when ``None``)."""
        if permission in self._workspace:
            return True
        if dataset is None:
            return False
        held = self._datasets.get(dataset)
        return held is not None and permission in held

    def roles_on(self, dataset: str | None) -> list[str]:
        """The roles held on ``dataset`` (workspace grants included), for messages."""
        return sorted(
            f"{r}" + ("" if s == WORKSPACE else f" on '{s}'")
            for r, s in self.grants
            if s in {WORKSPACE, dataset}
        )


def roles_with(permission: Permission) -> list[Role]:
    """The roles that carry ``permission``, most specific first (for refusal messages)."""
    order = [Role.CONSUMER, Role.ANALYST, Role.AUDITOR, Role.OWNER]
    return [r for r in order if permission in ROLE_PERMISSIONS[r]]
