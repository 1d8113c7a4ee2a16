"""The audit log of security-relevant actions, newest first, readable by the tenant's admins."""

from __future__ import annotations

import builtins
import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page
from edrs_events.pg import Connection

from edrs_gateway.auth.principal import Principal

log = logging.getLogger("edrs.gateway.audit")

Outcome = Literal["success", "failure", "denied"]

# What an erased user's id becomes in the audit log (see AuditLog.erase_subject).
ERASED_USER = "user:erased"


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    id: UUID
    tenant_id: UUID | None
    actor: str
    action: str
    outcome: Outcome
    target: str
    details: dict[str, Any] = field(default_factory=dict)
    ip: str | None
    created_at: datetime


def actor_of(principal: Principal | None) -> str:
    """`user:<id>`, `api_key:<id>` or `anonymous`: who did it, as the log shows it."""
    if principal is None:
        return "anonymous"
    return f"{principal.subject_kind}:{principal.subject_id}"


def _ip(value: str | None) -> str | None:
    # The column is `inet`; a test client's "testclient" or a unix socket has no address.
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


_COLUMNS = "id, tenant_id, actor, action, outcome, target, details, host(ip) AS ip, created_at"


def _event(row: Any) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        tenant_id=row["tenant_id"],
        actor=row["actor"],
        action=row["action"],
        outcome=row["outcome"],
        target=row["target"],
        details=json.loads(row["details"]),
        ip=row["ip"],
        created_at=row["created_at"],
    )


class AuditLog:
    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def record(
        self,
        tenant_id: UUID | str | None,
        action: str,
        outcome: Outcome,
        *,
        actor: str = "anonymous",
        target: str = "",
        details: dict[str, Any] | None = None,
        ip: str | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Append an event (in `conn`'s transaction when given). `details` must never hold a
        secret: name what was found, not its value."""
        await (conn or self.db).execute(
            "INSERT INTO audit_events (id, tenant_id, actor, action, outcome, target, details, ip) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::inet)",
            new_id(),
            UUID(str(tenant_id)) if tenant_id is not None else None,
            actor,
            action,
            outcome,
            target,
            json.dumps(details or {}),
            _ip(ip),
        )
        log.info("audit %s %s", action, outcome, extra={"actor": actor, "target": target})

    async def list(
        self, tenant_id: UUID, page_token: str, requested_size: int, *, action: str | None = None
    ) -> tuple[list[AuditEvent], str]:
        """One page, newest first, optionally only `action`; and the next page's token."""
        params: list[Any] = [tenant_id]
        condition = "tenant_id = $1"
        if action:
            params.append(action)
            condition += f" AND action = ${len(params)}"
        rows, token = await keyset_page(
            self.db,
            table="audit_events",
            columns=_COLUMNS,
            where=condition,
            args=params,
            page_token=page_token,
            requested_size=requested_size,
            descending=True,
        )
        return [_event(r) for r in rows], token

    async def of_subject(
        self, tenant_id: UUID, names: Sequence[str], limit: int
    ) -> builtins.list[AuditEvent]:  # `list` is a method here
        """The newest `limit` entries naming a subject as actor or target, under any of its
        `names` (`user:<id>`, `email:<address>`)."""
        rows = await self.db.fetch(
            f"""SELECT {_COLUMNS} FROM audit_events
                WHERE tenant_id = $1 AND (actor = ANY($2::text[]) OR target = ANY($2::text[]))
                ORDER BY created_at DESC, id DESC LIMIT $3""",
            tenant_id,
            list(names),
            limit,
        )
        return [_event(r) for r in rows]

    @staticmethod
    async def erase_subject(conn: Connection, tenant_id: UUID, names: Sequence[str]) -> int:
        """Take a subject out of the tenant's log, in `conn`'s transaction: each of its `names`
        (`user:<id>`, `email:<address>`) becomes `<kind>:erased` as actor and target, and the
        addresses they acted from are dropped. The entries stay: what was done to the tenant's
        resources remains on record, without naming the person. Returns how many changed."""
        status = await conn.execute(
            """UPDATE audit_events SET
                   actor = CASE WHEN actor = ANY($2::text[])
                                THEN split_part(actor, ':', 1) || ':erased' ELSE actor END,
                   target = CASE WHEN target = ANY($2::text[])
                                 THEN split_part(target, ':', 1) || ':erased' ELSE target END,
                   -- Where they acted (or tried to, by email): their address. An admin's
                   -- address on acting upon them stays.
                   ip = CASE WHEN actor = ANY($2::text[]) OR actor = 'anonymous' THEN NULL
                             ELSE ip END
               WHERE tenant_id = $1 AND (actor = ANY($2::text[]) OR target = ANY($2::text[]))""",
            tenant_id,
            list(names),
        )
        return int(status.split()[-1])
