"""Who is acting, what they may do, and the record of it: :class:`Access`.

Every entry point that touches data, budgets, models or keys holds an
:class:`Access` bound to the acting principal, calls :meth:`Access.require`
before anything else, and records what it did on the trail (in its own
transaction where it writes, so the entry commits with the action). A refusal
raises :class:`~veil.errors.PermissionDeniedError` naming the missing grant,
and is itself recorded.

**Principals.** A person is the operating-system account running Veil; a
service is ``svc:NAME``, authenticated by a service key (``VEIL_KEY``). An
unowned workspace (no owner on it) is claimed by the first person who acts
on it: ``veil init`` claims it for its creator, so a single user is owner
and nothing changes for them.

**Freshness.** Grants are read once and kept in memory (a check is a set
lookup); they are read again when older than ``max_age`` seconds and the
workspace's access generation moved, so a revocation reaches a long-running
process within ``max_age``, and a new command at once.

The module runs past 500 lines because grants, service keys and the checks
are one protocol: each change takes the same access lock, bumps the same
generation and appends to the trail in the same transaction.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from veil.access._keys import hash_secret, new_key, parse_key, verify_secret
from veil.access._principal import (
    SERVICE_PREFIX,
    Principal,
    PrincipalKind,
    ServiceKeyInfo,
    check_principal_name,
)
from veil.access._roles import (
    WORKSPACE,
    WORKSPACE_ONLY,
    Grant,
    Permission,
    Policy,
    Role,
    roles_with,
)
from veil.access._trail import Outcome, Trail, TrailEntry
from veil.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from veil.store import Store
from veil.store.tables import AccessStateRow, GrantRow, ServiceKeyRow
from veil.vault import KeyStore
from veil.workspace import Settings, Workspace, login_name

__all__ = ["Access"]

# Verified tokens, per process: SHA-256 of the token -> key id. Saves the slow hash on reuse.
_VERIFIED: dict[bytes, str] = {}


def _scope(dataset: str | None) -> str:
    return WORKSPACE if dataset is None else dataset


def _describe(scope: str) -> str:
    return "the workspace" if scope == WORKSPACE else f"dataset '{scope}'"


class Access:
    """Role checks and trail records for one acting principal.

    Args:
        store: The workspace database.
        principal: Who acts. Omitted: resolved from ``settings`` (the service
            key in ``VEIL_KEY``, else the operating-system account).
        settings: Workspace settings (used only to resolve the principal).
        signing_key: The trail's Ed25519 seed (``Access.open`` takes the
            workspace's ``trail`` key).
        max_age: Seconds a process keeps grants in memory before checking
            whether they changed.

    >>> from veil.store import Store
    >>> access = Access(Store.open("sqlite://", upgrade=True), Principal("alice"))
    >>> access.allows(Permission.BUDGET_SET, "adult")  # alice claims the unowned workspace
    True
    >>> [e.action for e in access.trail.entries()]
    ['trail.start', 'access.claim']
    """

    def __init__(
        self,
        store: Store,
        principal: Principal | None = None,
        *,
        settings: Settings | None = None,
        signing_key: bytes | None = None,
        max_age: float = 1.0,
    ) -> None:
        self.store = store
        self.trail = Trail(store, signing_key=signing_key)
        self._principal = principal
        self._settings = settings
        self.max_age = max_age
        self._policy: Policy | None = None
        self._key_expires: datetime | None = None
        self._generation = -1
        self._loaded_at = 0.0

    @classmethod
    def open(cls, workspace: Workspace | None = None, *, store: Store | None = None) -> Access:
        """The access of ``workspace`` (located if omitted) for whoever runs this process."""
        workspace = workspace or Workspace.locate()
        return cls(
            store or Store.for_workspace(workspace),
            settings=workspace.settings,
            signing_key=KeyStore.for_workspace(workspace).get("trail"),
        )

    # ------------------------------------------------------------ who acts
    @property
    def principal(self) -> Principal:
        """The acting principal (a service key is checked on first use)."""
        if self._principal is None:
            settings = self._settings
            if settings is not None and settings.service_key:
                self._principal = self.authenticate(settings.service_key)
            else:
                self._principal = Principal(settings.actor if settings else login_name())
        return self._principal

    def authenticate(self, token: str) -> Principal:
        """The service principal that ``token`` (a service key) stands for.

        Raises:
            PermissionDeniedError: The key is malformed, unknown, revoked or
                expired (recorded on the trail by key id; the secret never is).
        """
        parsed = parse_key(token)
        if parsed is None:
            raise self._bad_key(None, "it is not a Veil service key (veil_sk_<id>_<secret>)")
        key_id, secret = parsed
        fingerprint = hashlib.sha256(token.strip().encode("ascii")).digest()
        with self.store.session() as session:
            row = session.get(ServiceKeyRow, key_id)
            info = None if row is None else ServiceKeyInfo.from_row(row)
            stored = None if row is None else row.secret_hash
        known = _VERIFIED.get(fingerprint) == key_id
        if info is None or stored is None or not (known or verify_secret(secret, stored)):
            raise self._bad_key(key_id, "no key with this id and secret exists")
        _VERIFIED[fingerprint] = key_id
        if info.status != "active":
            when = info.revoked_at if info.status == "revoked" else info.expires_at
            raise self._bad_key(key_id, f"the key was {info.status} at {when:%Y-%m-%d %H:%M} UTC")
        return Principal(info.principal, PrincipalKind.SERVICE, key_id, info.scopes)

    def _bad_key(self, key_id: str | None, why: str) -> PermissionDeniedError:
        self.trail.record(
            actor=f"key:{key_id}" if key_id else "key:unknown",
            action="key.use",
            outcome=Outcome.REFUSED,
            details={"key_id": key_id, "reason": why},
        )
        return PermissionDeniedError(
            "the service key was refused",
            expected="an active key from `veil keys create`",
            got=f"key {key_id or '(malformed)'}: {why}",
            fix="ask an owner for a new key (`veil keys create`), and unset VEIL_KEY to act "
            "as yourself",
        )

    # ------------------------------------------------------------ checks
    def policy(self, *, refresh: bool = False) -> Policy:
        """The acting principal's grants (read again when stale and changed).

        A service key is checked again whenever the grants are: a key revoked or
        expired while this process runs is refused from then on, not only in
        new processes.

        Raises:
            PermissionDeniedError: The acting service key was revoked or expired.
        """
        now = time.monotonic()
        principal = self.principal
        if self._key_expires is not None and datetime.now(UTC) >= self._key_expires:
            self._policy = None
            raise self._bad_key(principal.key_id, "the key expired while in use")
        if self._policy is not None and not refresh and now - self._loaded_at < self.max_age:
            return self._policy
        with self.store.session() as session:
            generation = _generation(session)
            if self._policy is not None and generation == self._generation:
                self._loaded_at = now
                return self._policy
            grants = self._grants_of(session, principal.name)
            owned = _has_owner(session)
            key = None if principal.key_id is None else session.get(ServiceKeyRow, principal.key_id)
            status = None if key is None else ServiceKeyInfo.from_row(key).status
            self._key_expires = None if key is None else key.expires_at
        if principal.key_id is not None and status != "active":
            self._policy = None
            raise self._bad_key(principal.key_id, f"the key is {status or 'gone'}")
        if not owned and principal.kind is PrincipalKind.PERSON:
            self._claim(principal)
            return self.policy(refresh=True)
        self._policy = Policy(grants, principal.scopes)
        self._generation, self._loaded_at = generation, now
        return self._policy

    def cached_policy(self) -> Policy | None:
        """The grants :meth:`policy` would return without reading the database, or ``None``.

        ``None`` when they were never read, are older than ``max_age``, or the key
        has expired: then only :meth:`policy` can say (a server calls this on its
        event loop, and :meth:`policy` in a thread when it gets ``None``).
        """
        policy = self._policy
        if policy is None or time.monotonic() - self._loaded_at >= self.max_age:
            return None
        if self._key_expires is not None and datetime.now(UTC) >= self._key_expires:
            return None
        return policy

    @staticmethod
    def _grants_of(session: Session, name: str) -> list[tuple[Role, str]]:
        rows = session.execute(
            select(GrantRow.role, GrantRow.scope).where(GrantRow.principal == name)
        ).all()
        return [(Role(r), s) for r, s in rows]

    def _claim(self, principal: Principal) -> None:
        with self.store.session(lock=True) as session:
            _lock_generation(session)
            if _has_owner(session):
                return  # someone claimed it first
            session.add(
                GrantRow(
                    principal=principal.name,
                    role=str(Role.OWNER),
                    scope=WORKSPACE,
                    granted_at=datetime.now(UTC),
                    granted_by=principal.name,
                )
            )
            _bump(session)
            self.trail.append(
                session,
                actor=principal.name,
                action="access.claim",
                details={"role": str(Role.OWNER), "scope": WORKSPACE},
                purpose="the first person to act on an unowned workspace owns it",
            )

    def allows(self, permission: Permission, dataset: str | None = None) -> bool:
        """Whether the acting principal holds ``permission`` on ``dataset`` (no record)."""
        return self.policy().allows(permission, dataset)

    def require(
        self,
        permission: Permission,
        dataset: str | None = None,
        *,
        action: str | None = None,
        purpose: str = "",
    ) -> Principal:
        """Return the acting principal if it holds ``permission``; else record and refuse.

        Raises:
            PermissionDeniedError: Naming the missing grant; the refusal is on the trail.
        """
        policy = self.policy()
        if policy.allows(permission, dataset):
            return self.principal
        # Refuse on fresh grants only: a grant made a moment ago must not be refused.
        policy = self.policy(refresh=True)
        if policy.allows(permission, dataset):
            return self.principal
        principal = self.principal
        self.trail.record(
            actor=principal.name,
            action=action or str(permission),
            outcome=Outcome.REFUSED,
            dataset=dataset,
            purpose=purpose,
            details={
                "missing": str(permission),
                "held": policy.roles_on(dataset),
                "key_id": principal.key_id,
            },
        )
        roles = [str(r) for r in roles_with(permission)]
        workspace_only = dataset is None or permission in WORKSPACE_ONLY
        where = "the workspace" if workspace_only else f"dataset '{dataset}' or the workspace"
        held = ", ".join(policy.roles_on(dataset)) or "no role"
        suggestion = roles[0]
        grant_dataset = "" if workspace_only else f" --dataset {dataset}"
        raise PermissionDeniedError(
            f"{principal.name} may not {permission.value} "
            f"({'on ' + repr(dataset) if dataset else 'on this workspace'})",
            expected=f"a grant of {' or '.join(roles)} on {where}",
            got=f"{principal.name} holds {held}",
            fix=f"ask an owner: veil access grant {principal.name} {suggestion}{grant_dataset}",
            details={"missing": str(permission), "dataset": dataset, "principal": principal.name},
        )

    # ------------------------------------------------------------ recording
    def append(
        self,
        session: Session,
        action: str,
        *,
        dataset: str | None = None,
        purpose: str = "",
        outcome: Outcome = Outcome.ALLOWED,
        links: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> TrailEntry:
        """Record ``action`` by the acting principal in ``session`` (commits with it)."""
        principal = self.principal
        extra = dict(details or {})
        if principal.key_id is not None:
            extra.setdefault("key_id", principal.key_id)
        return self.trail.append(
            session,
            actor=principal.name,
            action=action,
            outcome=outcome,
            purpose=purpose,
            dataset=dataset,
            links=links,
            details=extra,
        )

    def record(self, action: str, **entry: Any) -> TrailEntry:
        """Record ``action`` in a transaction of its own (reads, and actions outside the store)."""
        with self.store.session(lock=True) as session:
            return self.append(session, action, **entry)

    # ------------------------------------------------------------ grants
    def grants(self, *, principal: str | None = None, dataset: str | None = None) -> list[Grant]:
        """Grants in force, filtered by principal and/or scope (needs ``access.read``)."""
        self.require(Permission.ACCESS_READ, dataset, action="access.list")
        query = select(GrantRow.principal, GrantRow.role, GrantRow.scope)
        if principal is not None:
            query = query.where(GrantRow.principal == principal)
        if dataset is not None:
            query = query.where(GrantRow.scope.in_([dataset, WORKSPACE]))
        with self.store.session() as session:
            rows = session.execute(query.order_by(GrantRow.principal, GrantRow.scope)).all()
        return [Grant(p, Role(r), s) for p, r, s in rows]

    def grant(
        self, principal: str, role: Role | str, dataset: str | None = None, *, reason: str = ""
    ) -> Grant:
        """Give ``principal`` ``role`` on ``dataset`` (or the workspace). Owners only."""
        role = _role(role)
        scope = _scope(dataset)
        check_principal_name(principal)
        self.require(Permission.ACCESS_MANAGE, dataset, action="access.grant", purpose=reason)
        with self.store.session(lock=True) as session:
            _lock_generation(session)
            added = self._add_grant(session, principal, role, scope)
            if added:
                _bump(session)
            self.append(
                session,
                "access.grant",
                dataset=None if scope == WORKSPACE else scope,
                purpose=reason,
                details={
                    "principal": principal,
                    "role": str(role),
                    "scope": scope,
                    "already_held": not added,
                },
            )
        self._policy = None
        return Grant(principal, role, scope)

    def _add_grant(self, session: Session, principal: str, role: Role, scope: str) -> bool:
        """Add the grant unless it is held already; whether it was added."""
        held = session.execute(
            select(GrantRow.id).where(
                GrantRow.principal == principal,
                GrantRow.role == str(role),
                GrantRow.scope == scope,
            )
        ).first()
        if held is not None:
            return False
        session.add(
            GrantRow(
                principal=principal,
                role=str(role),
                scope=scope,
                granted_at=datetime.now(UTC),
                granted_by=self.principal.name,
            )
        )
        return True

    def revoke(
        self, principal: str, role: Role | str, dataset: str | None = None, *, reason: str = ""
    ) -> Grant:
        """Take ``role`` on ``dataset`` (or the workspace) from ``principal``. Owners only.

        Raises:
            NotFoundError: No such grant.
            ConflictError: It is the last owner of the workspace.
        """
        role = _role(role)
        scope = _scope(dataset)
        self.require(Permission.ACCESS_MANAGE, dataset, action="access.revoke", purpose=reason)
        with self.store.session(lock=True) as session:
            _lock_generation(session)
            row = session.scalars(
                select(GrantRow).where(
                    GrantRow.principal == principal,
                    GrantRow.role == str(role),
                    GrantRow.scope == scope,
                )
            ).first()
            if row is None:
                raise NotFoundError(
                    f"{principal} holds no {role} grant on {_describe(scope)}",
                    expected="a grant listed by `veil access list`",
                    got=f"{principal} {role} {scope}",
                    fix="check the principal, role and --dataset",
                )
            if role is Role.OWNER and scope == WORKSPACE:
                owners = session.scalar(
                    select(func.count())
                    .select_from(GrantRow)
                    .where(GrantRow.role == str(Role.OWNER), GrantRow.scope == WORKSPACE)
                )
                if owners == 1:
                    raise ConflictError(
                        "the workspace would have no owner",
                        expected="another owner of the workspace first",
                        got=f"{principal} is its only owner",
                        fix="grant owner to someone else, then revoke",
                    )
            session.delete(row)
            _bump(session)
            self.append(
                session,
                "access.revoke",
                dataset=None if scope == WORKSPACE else scope,
                purpose=reason,
                details={"principal": principal, "role": str(role), "scope": scope},
            )
        self._policy = None
        return Grant(principal, role, scope)

    # ------------------------------------------------------------ service keys
    def create_key(
        self,
        name: str,
        role: Role | str,
        dataset: str | None = None,
        *,
        expires_in: timedelta | None = None,
        reason: str = "",
    ) -> tuple[ServiceKeyInfo, str]:
        """A new key for service ``svc:NAME`` holding ``role`` on ``dataset``.

        Grants the role to the service if it lacks it, and scopes the key to it.
        Returns the key's record and its token: the only time the token is shown.
        """
        role = _role(role)
        scope = _scope(dataset)
        principal = name if name.startswith(SERVICE_PREFIX) else SERVICE_PREFIX + name
        check_principal_name(principal)
        if expires_in is not None and expires_in <= timedelta(0):
            raise InvalidInputError(
                "a key's lifetime must be positive",
                expected="a duration such as 90d, 12h or 30m",
                got=str(expires_in),
                fix="give a positive --expires-in, or leave it out for a key that does not expire",
            )
        self.require(Permission.ACCESS_MANAGE, dataset, action="keys.create", purpose=reason)
        token, key_id, secret = new_key()
        now = datetime.now(UTC)
        row = ServiceKeyRow(
            key_id=key_id,
            principal=principal,
            secret_hash=hash_secret(secret),
            scopes=[{"role": str(role), "scope": scope}],
            created_at=now,
            created_by=self.principal.name,
            expires_at=None if expires_in is None else now + expires_in,
        )
        with self.store.session(lock=True) as session:
            _lock_generation(session)
            granted = self._add_grant(session, principal, role, scope)
            session.add(row)
            _bump(session)
            self.append(
                session,
                "keys.create",
                dataset=None if scope == WORKSPACE else scope,
                purpose=reason,
                details={
                    "key_id": key_id,
                    "principal": principal,
                    "role": str(role),
                    "scope": scope,
                    "expires_at": row.expires_at,
                    "granted": granted,
                },
            )
            info = ServiceKeyInfo.from_row(row)
        return info, token

    def revoke_key(self, key_id: str, *, reason: str = "") -> ServiceKeyInfo:
        """Revoke a key at once (its grants stay with the service for its other keys)."""
        with self.store.session() as session:
            row = session.get(ServiceKeyRow, key_id)
            scope = None if row is None else str(row.scopes[0]["scope"]) if row.scopes else None
        dataset = None if scope in (None, WORKSPACE) else scope
        self.require(Permission.ACCESS_MANAGE, dataset, action="keys.revoke", purpose=reason)
        with self.store.session(lock=True) as session:
            _lock_generation(session)
            row = session.get(ServiceKeyRow, key_id)
            if row is None:
                raise NotFoundError(
                    f"no service key {key_id!r}",
                    expected="a key id listed by `veil keys list`",
                    got=repr(key_id),
                    fix="list the keys with `veil keys list`",
                )
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                row.revoked_by = self.principal.name
                _bump(session)
            self.append(
                session,
                "keys.revoke",
                dataset=dataset,
                purpose=reason,
                details={"key_id": key_id, "principal": row.principal},
            )
            session.flush()
            info = ServiceKeyInfo.from_row(row)
        for fingerprint in [f for f, k in _VERIFIED.items() if k == key_id]:
            del _VERIFIED[fingerprint]
        return info

    def keys(self, *, principal: str | None = None) -> list[ServiceKeyInfo]:
        """Every service key (never a secret), newest first (needs ``access.read``)."""
        self.require(Permission.ACCESS_READ, action="keys.list")
        query = select(ServiceKeyRow).order_by(ServiceKeyRow.created_at.desc())
        if principal is not None:
            query = query.where(ServiceKeyRow.principal == principal)
        with self.store.session() as session:
            return [ServiceKeyInfo.from_row(r) for r in session.scalars(query).all()]


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInputError(
            "unknown role",
            expected=f"one of {', '.join(r.value for r in Role)}",
            got=repr(role),
            fix="docs/governance.md has the roles table",
        ) from None


def _generation(session: Session) -> int:
    return int(
        session.execute(
            select(AccessStateRow.generation).where(AccessStateRow.id == 1)
        ).scalar_one()
    )


def _lock_generation(session: Session) -> None:
    session.execute(
        select(AccessStateRow.id).where(AccessStateRow.id == 1).with_for_update()
    ).first()


def _bump(session: Session) -> None:
    session.execute(
        update(AccessStateRow)
        .where(AccessStateRow.id == 1)
        .values(generation=AccessStateRow.generation + 1)
    )


def _has_owner(session: Session) -> bool:
    return (
        session.execute(
            select(GrantRow.id)
            .where(GrantRow.role == str(Role.OWNER), GrantRow.scope == WORKSPACE)
            .limit(1)
        ).first()
        is not None
    )
