"""`/api/v1/audit-events`: the tenant's audit log, newest first, for its admins only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import ConfigDict

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
)
from edrs_gateway.api.models import ApiModel, PageOf
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx
from edrs_gateway.identity.audit import AuditEvent, Outcome

router = APIRouter(prefix="/audit-events", tags=["audit"])


class AuditEventOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0190d6a0-0000-7000-8000-000000000003",
                    "actor": "anonymous",
                    "action": "login",
                    "outcome": "failure",
                    "target": "email:ann@example.com",
                    "details": {"reason": "wrong password"},
                    "ip": "203.0.113.7",
                    "createdAt": "2025-01-01T12:00:00Z",
                }
            ]
        }
    )

    id: UUID
    actor: str
    action: str
    outcome: Outcome
    target: str
    details: dict[str, Any]
    ip: str | None
    created_at: datetime

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            actor=event.actor,
            action=event.action,
            outcome=event.outcome,
            target=event.target,
            details=event.details,
            ip=event.ip,
            created_at=event.created_at,
        )


class AuditEventPage(PageOf):
    audit_events: list[AuditEventOut]


@router.get(
    "",
    response_model=AuditEventPage,
    summary="List audit events",
    description="Logins and failures, lockouts, key creation and revocation, permission "
    "denials, DLP hits: newest first. Secrets are never recorded.",
    responses=problem_responses(*AUTHENTICATED),
)
async def list_audit_events(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(require(Permission.AUDIT_READ))],
    action: Annotated[
        str | None,
        Query(
            max_length=100,
            pattern=r"^[a-z0-9_.]+$",
            description="Only this action, e.g. `login.failed`",
        ),
    ] = None,
) -> AuditEventPage:
    events, token = await ctx.audit.list(
        UUID(caller.tenant_id), page.page_token, page.page_size, action=action
    )
    return AuditEventPage(audit_events=[AuditEventOut.of(e) for e in events], next_page_token=token)
