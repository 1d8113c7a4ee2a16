"""Users of a tenant: the PostgreSQL adapter, with the login bookkeeping (failures, lockout)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists, FailedPrecondition
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page
from edrs_events.pg import Connection

from edrs_gateway.auth.principal import Role


@dataclass(frozen=True, kw_only=True)
class User:
    id: UUID
    tenant_id: UUID
    email: str
    display_name: str
    role: Role
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class UserCredentials:
    """What a password login needs; never leaves the login code."""

    user: User
    password_hash: str


_COLUMNS = "id, tenant_id, email, display_name, role, locked_until, created_at, updated_at"


def _user(row: Any) -> User:
    return User(
        id=row["id"],
        tenant_id=row["tenant_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        locked_until=row["locked_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _duplicate(email: str) -> AlreadyExists:
    return AlreadyExists(
        f"a user with email {email!r} already exists in this tenant (emails ignore case)",
        field="email",
    )


class UserStore:
    """The `users` table. Every method takes the tenant, so no call can reach another tenant's user."""

    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def create(
        self, tenant_id: UUID, *, email: str, display_name: str, password_hash: str, role: Role
    ) -> User:
        try:
            row = await self.db.fetchrow(
                f"INSERT INTO users (id, tenant_id, email, display_name, password_hash, role) "
                f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
                new_id(),
                tenant_id,
                email,
                display_name,
                password_hash,
                role,
            )
        except asyncpg.UniqueViolationError:
            raise _duplicate(email) from None
        return _user(row)

    async def get(self, tenant_id: UUID, user_id: UUID) -> User | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2", tenant_id, user_id
        )
        return _user(row) if row else None

    async def list(
        self, tenant_id: UUID, page_token: str, page_size: int
    ) -> tuple[list[User], str]:
        rows, token = await keyset_page(
            self.db,
            table="users",
            columns=_COLUMNS,
            where="tenant_id = $1",
            args=[tenant_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_user(r) for r in rows], token

    async def update(
        self,
        tenant_id: UUID,
        user_id: UUID,
        *,
        display_name: str | None = None,
        password_hash: str | None = None,
        role: Role | None = None,
    ) -> User | None:
        """Change the given fields; a new password also lifts a lockout. None when not found.

        FailedPrecondition when it would leave the tenant without an admin."""
        async with self.db.acquire() as conn, conn.transaction():
            await _lock_tenant(conn, tenant_id)
            if role is not None and role != "admin":
                await _keep_an_admin(conn, tenant_id, user_id, "change the role of")
            row = await conn.fetchrow(
                f"""UPDATE users SET
                        display_name = coalesce($3, display_name),
                        password_hash = coalesce($4, password_hash),
                        role = coalesce($5, role),
                        failed_logins = CASE WHEN $4::text IS NULL THEN failed_logins ELSE 0 END,
                        locked_until = CASE WHEN $4::text IS NULL THEN locked_until END,
                        updated_at = now()
                    WHERE tenant_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
                tenant_id,
                user_id,
                display_name,
                password_hash,
                role,
            )
        return _user(row) if row else None

    async def delete(
        self,
        tenant_id: UUID,
        user_id: UUID,
        also: Callable[[Connection], Awaitable[None]] | None = None,
    ) -> bool:
        """False when not found; FailedPrecondition when it is the tenant's last admin.

        `also` runs in the deletion's transaction once the user is gone (their other rows, the
        event announcing it): it commits with the deletion or not at all."""
        async with self.db.acquire() as conn, conn.transaction():
            await _lock_tenant(conn, tenant_id)
            await _keep_an_admin(conn, tenant_id, user_id, "delete")
            deleted = await conn.fetchval(
                "DELETE FROM users WHERE tenant_id = $1 AND id = $2 RETURNING id",
                tenant_id,
                user_id,
            )
            if deleted is not None and also is not None:
                await also(conn)
        return deleted is not None

    async def credentials(self, tenant_id: UUID, email: str) -> UserCredentials | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS}, password_hash FROM users "
            "WHERE tenant_id = $1 AND lower(email) = lower($2)",
            tenant_id,
            email,
        )
        if row is None:
            return None
        return UserCredentials(user=_user(row), password_hash=row["password_hash"])

    async def record_failed_login(
        self, user_id: UUID, *, threshold: int, locked_until: datetime
    ) -> bool:
        """Count a failure; the `threshold`-th in a row locks the user until `locked_until`.
        True when it just locked.

        One UPDATE, so concurrent failures cannot lose a count."""
        locked = await self.db.fetchval(
            """UPDATE users SET
                   failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0
                                        ELSE failed_logins + 1 END,
                   locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3::timestamptz
                                       ELSE locked_until END
               WHERE id = $1
               RETURNING failed_logins = 0""",
            user_id,
            threshold,
            locked_until,
        )
        return bool(locked)

    async def record_successful_login(self, user_id: UUID, new_hash: str | None = None) -> None:
        """Reset the failure count; store `new_hash` when the old one used weaker parameters."""
        await self.db.execute(
            "UPDATE users SET failed_logins = 0, password_hash = coalesce($2, password_hash) "
            "WHERE id = $1",
            user_id,
            new_hash,
        )

    async def unlock(self, tenant_id: UUID, email: str) -> User | None:
        """Lift a lockout and forget failed logins (break-glass). None when not found."""
        row = await self.db.fetchrow(
            f"UPDATE users SET failed_logins = 0, locked_until = NULL, updated_at = now() "
            f"WHERE tenant_id = $1 AND lower(email) = lower($2) RETURNING {_COLUMNS}",
            tenant_id,
            email,
        )
        return _user(row) if row else None

    async def any_in_tenant(self, tenant_id: UUID) -> bool:
        return bool(
            await self.db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1)", tenant_id
            )
        )


async def _lock_tenant(conn: Connection, tenant_id: UUID) -> None:
    # Serialises role changes and deletions within a tenant, so two admins demoting each other at
    # once cannot both pass the "another admin remains" check.
    await conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)


async def _keep_an_admin(conn: Connection, tenant_id: UUID, user_id: UUID, verb: str) -> None:
    others = await conn.fetchval(
        "SELECT count(*) FROM users WHERE tenant_id = $1 AND role = 'admin' AND id <> $2",
        tenant_id,
        user_id,
    )
    is_admin = await conn.fetchval(
        "SELECT role = 'admin' FROM users WHERE tenant_id = $1 AND id = $2", tenant_id, user_id
    )
    if is_admin and others == 0:
        raise FailedPrecondition(
            f"cannot {verb} the tenant's last admin; make another user admin first", field="role"
        )
