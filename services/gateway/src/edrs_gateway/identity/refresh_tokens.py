"""Refresh tokens: opaque random strings stored as SHA-256, rotated on every use, in families.

A login starts a family that lives at most `family_ttl`; each refresh marks the presented token
used and issues the next one of the same family. Presenting a used token means two parties hold
the family (one of them stole it), so the whole family is revoked and the caller must log in again.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg
from edrs_core.ids import new_id
from edrs_events.pg import Connection

SubjectKind = Literal["user", "api_key"]


@dataclass(frozen=True)
class RefreshSubject:
    tenant_id: UUID
    subject_kind: SubjectKind
    subject_id: UUID
    family_id: UUID


@dataclass(frozen=True)
class Rotated:
    """The presented token was valid: here is the next one of its family."""

    subject: RefreshSubject
    token: str


@dataclass(frozen=True)
class Reused:
    """The presented token had been used already: its family is now revoked."""

    subject: RefreshSubject


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RefreshTokenStore:
    def __init__(self, db: asyncpg.Pool, *, family_ttl: timedelta) -> None:
        self.db = db
        self.family_ttl = family_ttl

    async def start_family(
        self, tenant_id: UUID, subject_kind: SubjectKind, subject_id: UUID
    ) -> str:
        """The first refresh token of a new family (at login)."""
        async with self.db.acquire() as conn:
            return await _insert(
                conn,
                RefreshSubject(tenant_id, subject_kind, subject_id, new_id()),
                family_expires_at=None,
                family_ttl=self.family_ttl,
            )

    async def rotate(self, token: str) -> Rotated | Reused | None:
        """Use `token`: the next token, Reused (family revoked) or None (unknown/expired/revoked)."""
        async with self.db.acquire() as conn, conn.transaction():
            # FOR UPDATE: two concurrent uses of one token are serialised, so the second sees it
            # used and revokes the family rather than both getting a new token.
            row = await conn.fetchrow(
                "SELECT id, family_id, tenant_id, subject_kind, subject_id, family_expires_at, "
                "used_at, revoked_at, expires_at > now() AS live FROM refresh_tokens "
                "WHERE token_hash = $1 FOR UPDATE",
                _hash(token),
            )
            if row is None or row["revoked_at"] is not None:
                return None
            subject = RefreshSubject(
                row["tenant_id"], row["subject_kind"], row["subject_id"], row["family_id"]
            )
            if row["used_at"] is not None:
                await _revoke_family(conn, row["family_id"])
                return Reused(subject)
            if not row["live"]:
                return None
            await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["id"])
            next_token = await _insert(
                conn,
                subject,
                family_expires_at=row["family_expires_at"],
                family_ttl=self.family_ttl,
            )
        return Rotated(subject, next_token)

    async def revoke(self, token: str) -> RefreshSubject | None:
        """Revoke the family of `token`; None when the token is unknown."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT family_id, tenant_id, subject_kind, subject_id FROM refresh_tokens "
                "WHERE token_hash = $1",
                _hash(token),
            )
            if row is None:
                return None
            await _revoke_family(conn, row["family_id"])
        return RefreshSubject(
            row["tenant_id"], row["subject_kind"], row["subject_id"], row["family_id"]
        )

    async def revoke_subject(self, subject_kind: SubjectKind, subject_id: UUID) -> None:
        await self.db.execute(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE subject_kind = $1 AND subject_id = $2 AND revoked_at IS NULL",
            subject_kind,
            subject_id,
        )

    @staticmethod
    async def forget_subject(
        conn: Connection, tenant_id: UUID, subject_kind: SubjectKind, subject_id: UUID
    ) -> None:
        """Delete the subject's tokens (an erased user), in `conn`'s transaction."""
        await conn.execute(
            "DELETE FROM refresh_tokens "
            "WHERE tenant_id = $1 AND subject_kind = $2 AND subject_id = $3",
            tenant_id,
            subject_kind,
            subject_id,
        )


async def _revoke_family(conn: Connection, family_id: UUID) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
    )


async def _insert(
    conn: Connection,
    subject: RefreshSubject,
    *,
    family_expires_at: datetime | None,
    family_ttl: timedelta,
) -> str:
    token = secrets.token_urlsafe(32)
    # Each token lives as long as its family: rotation, not a short life, limits a stolen one.
    await conn.execute(
        "INSERT INTO refresh_tokens (id, family_id, tenant_id, subject_kind, subject_id, "
        "token_hash, expires_at, family_expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now() + $8::interval), "
        "coalesce($7, now() + $8::interval))",
        new_id(),
        subject.family_id,
        subject.tenant_id,
        subject.subject_kind,
        subject.subject_id,
        _hash(token),
        family_expires_at,
        family_ttl,
    )
    return token
