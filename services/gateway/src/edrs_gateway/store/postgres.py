"""PostgreSQL adapter of the tenant store."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_gateway.store import NewTenant, Tenant

_COLUMNS = "id, name, tier, created_at"


def _tenant(row: Any) -> Tenant:
    return Tenant(id=row["id"], name=row["name"], tier=row["tier"], created_at=row["created_at"])


class PostgresTenantStore:
    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def create(self, tenant: NewTenant) -> Tenant:
        try:
            row = await self.db.fetchrow(
                f"INSERT INTO tenants (id, name, tier) VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
                new_id(),
                tenant.name,
                tenant.tier,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                f"a tenant named {tenant.name!r} already exists (names are compared ignoring case)",
                field="name",
            ) from None
        return _tenant(row)

    async def get(self, tenant_id: UUID) -> Tenant | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM tenants WHERE id = $1", tenant_id)
        return _tenant(row) if row else None

    async def list(self, page_token: str, page_size: int) -> tuple[list[Tenant], str]:
        rows, token = await keyset_page(
            self.db,
            table="tenants",
            columns=_COLUMNS,
            where="TRUE",
            args=[],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_tenant(r) for r in rows], token
