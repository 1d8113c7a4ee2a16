"""API keys: `edrs_<prefix>_<secret>`, shown once, stored as the SHA-256 of the secret.

A fast hash is right here, unlike for passwords: the secret is 256 random bits from
`secrets.token_urlsafe`, so there is nothing to guess and a slow hash would only slow every login.
The prefix is stored in clear to find the key (and to let a user tell their keys apart).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_gateway.auth.principal import Role

KEY_SCHEME = "edrs"
_PREFIX_BYTES = 6  # 12 hex characters: no "_" inside, so the key splits unambiguously
_SECRET_BYTES = 32


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    id: UUID
    tenant_id: UUID
    name: str
    prefix: str
    role: Role
    scopes: tuple[str, ...]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime

    def usable_at(self, moment: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > moment)


@dataclass(frozen=True)
class NewKeyMaterial:
    prefix: str
    secret: str

    @property
    def plaintext(self) -> str:
        return f"{KEY_SCHEME}_{self.prefix}_{self.secret}"


def generate_key() -> NewKeyMaterial:
    return NewKeyMaterial(secrets.token_hex(_PREFIX_BYTES), secrets.token_urlsafe(_SECRET_BYTES))


def parse_key(value: str) -> tuple[str, str] | None:
    """(prefix, secret) of a key in our format, else None."""
    scheme, _, rest = value.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or not prefix or not secret or len(value) > 200:
        return None
    return prefix, secret


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


_COLUMNS = (
    "id, tenant_id, name, prefix, role, scopes, expires_at, revoked_at, last_used_at, created_at"
)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        prefix=row["prefix"],
        role=row["role"],
        scopes=tuple(row["scopes"]),
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        created_at=row["created_at"],
    )


class ApiKeyStore:
    """The `api_keys` table. Revoked keys stay for the audit trail but are gone from get/list."""

    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def create(
        self,
        tenant_id: UUID,
        *,
        name: str,
        role: Role,
        scopes: tuple[str, ...] = (),
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """The stored key and its plaintext, which exists only in this return value."""
        material = generate_key()
        row = await self.db.fetchrow(
            f"INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, role, scopes, "
            f"expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}",
            new_id(),
            tenant_id,
            name,
            material.prefix,
            hash_secret(material.secret),
            role,
            list(scopes),
            expires_at,
        )
        return _key(row), material.plaintext

    async def get(self, tenant_id: UUID, key_id: UUID) -> ApiKey | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM api_keys "
            "WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
            tenant_id,
            key_id,
        )
        return _key(row) if row else None

    async def list(
        self, tenant_id: UUID, page_token: str, page_size: int
    ) -> tuple[list[ApiKey], str]:
        rows, token = await keyset_page(
            self.db,
            table="api_keys",
            columns=_COLUMNS,
            where="tenant_id = $1 AND revoked_at IS NULL",
            args=[tenant_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_key(r) for r in rows], token

    async def revoke(self, tenant_id: UUID, key_id: UUID) -> ApiKey | None:
        row = await self.db.fetchrow(
            f"UPDATE api_keys SET revoked_at = now() "
            f"WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING {_COLUMNS}",
            tenant_id,
            key_id,
        )
        return _key(row) if row else None

    async def authenticate(self, plaintext: str, now: datetime) -> ApiKey | None:
        """The usable key `plaintext` is, else None (unknown, wrong secret, revoked or expired)."""
        parsed = parse_key(plaintext)
        if parsed is None:
            return None
        prefix, secret = parsed
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE prefix = $1", prefix
        )
        if row is None or not secret_matches(secret, row["secret_hash"]):
            return None
        key = _key(row)
        if not key.usable_at(now):
            return None
        await self.db.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key.id)
        return key
