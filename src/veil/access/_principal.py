"""Principals: a person (an operating-system account) or a service holding a key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from veil.access._roles import Role
from veil.errors import InvalidInputError
from veil.store.tables import ServiceKeyRow

__all__ = [
    "MAX_PRINCIPAL_LENGTH",
    "SERVICE_PREFIX",
    "Principal",
    "PrincipalKind",
    "ServiceKeyInfo",
    "check_principal_name",
]

SERVICE_PREFIX = "svc:"
MAX_PRINCIPAL_LENGTH = 200
_SERVICE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class PrincipalKind(StrEnum):
    PERSON = "person"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    """Who acts: a person (an account) or a service authenticated by one of its keys."""

    name: str
    kind: PrincipalKind = PrincipalKind.PERSON
    key_id: str | None = None
    scopes: tuple[tuple[Role, str], ...] | None = None

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "key_id": self.key_id,
            "scopes": None
            if self.scopes is None
            else [{"role": str(r), "scope": s} for r, s in self.scopes],
        }


@dataclass(frozen=True)
class ServiceKeyInfo:
    """A service key as listed: never its secret."""

    key_id: str
    principal: str
    scopes: tuple[tuple[Role, str], ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "principal": self.principal,
            "scopes": [{"role": str(r), "scope": s} for r, s in self.scopes],
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "status": self.status,
        }

    @classmethod
    def from_row(cls, row: ServiceKeyRow) -> ServiceKeyInfo:
        return cls(
            key_id=row.key_id,
            principal=row.principal,
            scopes=tuple((Role(s["role"]), str(s["scope"])) for s in row.scopes),
            created_at=row.created_at,
            created_by=row.created_by,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


def check_principal_name(name: str) -> None:
    bare = name.removeprefix(SERVICE_PREFIX)
    if (
        not bare
        or len(name) > MAX_PRINCIPAL_LENGTH
        or any(c.isspace() or not c.isprintable() for c in name)
        or (name.startswith(SERVICE_PREFIX) and not set(bare) <= _SERVICE_NAME_CHARS)
    ):
        raise InvalidInputError(
            "invalid principal name",
            expected="an account name, or svc:NAME with lower-case letters, digits, '-', '_', '.'",
            got=repr(name),
            fix="use the account's login name, or a service name such as svc:reporting",
        )
