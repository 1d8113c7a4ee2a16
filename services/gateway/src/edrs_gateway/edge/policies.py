"""Per-tenant edge policies read from the gateway's database (today: the DLP policy)."""

from __future__ import annotations

from typing import cast
from uuid import UUID

import asyncpg
from edrs_core.dlp import DlpPolicy

DEFAULT_DLP_POLICY: DlpPolicy = "redact"


class TenantPolicies:
    """Reads `tenants.dlp_policy`; an unknown tenant gets the default (redact)."""

    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def dlp_policy(self, tenant_id: str) -> DlpPolicy:
        try:
            key = UUID(tenant_id)
        except ValueError:
            return DEFAULT_DLP_POLICY
        found = await self.db.fetchval("SELECT dlp_policy FROM tenants WHERE id = $1", key)
        return cast(DlpPolicy, found) if found else DEFAULT_DLP_POLICY
