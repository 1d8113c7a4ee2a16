"""The tenant store port: what the gateway needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from edrs_gateway.auth.principal import Tier


@dataclass(frozen=True, kw_only=True)
class NewTenant:
    name: str
    tier: Tier = "standard"


@dataclass(frozen=True, kw_only=True)
class Tenant(NewTenant):
    id: UUID
    created_at: datetime


class TenantStore(Protocol):
    async def create(self, tenant: NewTenant) -> Tenant:
        """Raises AlreadyExists when another tenant has the same name, ignoring case."""
        ...

    async def get(self, tenant_id: UUID) -> Tenant | None: ...

    async def list(self, page_token: str, page_size: int) -> tuple[list[Tenant], str]: ...
