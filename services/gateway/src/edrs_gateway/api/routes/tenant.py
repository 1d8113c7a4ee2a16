"""`/api/v1/tenant`: the caller's own tenant (a caller sees no other)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends
from pydantic import ConfigDict

from edrs_gateway.api.common import AUTHENTICATED, not_found, problem_responses
from edrs_gateway.api.models import ApiModel
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal, Tier
from edrs_gateway.context import Ctx

router = APIRouter(tags=["tenant"])


class TenantOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0190d6a0-0000-7000-8000-000000000000",
                    "name": "Acme Corp.",
                    "tier": "professional",
                    "createdAt": "2025-01-01T12:00:00Z",
                }
            ]
        }
    )

    id: UUID
    name: str
    tier: Tier
    created_at: datetime


@router.get(
    "/tenant",
    response_model=TenantOut,
    summary="Get your tenant",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_tenant(
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.TENANT_READ))],
) -> TenantOut:
    tenant = await ctx.tenants.get(UUID(caller.tenant_id))
    if tenant is None:
        raise not_found("tenant", caller.tenant_id)
    return TenantOut(id=tenant.id, name=tenant.name, tier=tenant.tier, created_at=tenant.created_at)
