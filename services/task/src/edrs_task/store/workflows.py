"""PostgreSQL store of workflow definitions, runs and steps, the effects ledger, approvals and
schedules. Every query names the tenant; run changes are announced on NOTIFY_CHANNEL for WatchRun."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

NOTIFY_CHANNEL = "edrs_workflow_runs"
APPROVAL_CHANNEL = "edrs_approvals"
TERMINAL_RUN = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Definition:
    id: UUID
    name: str
    version: int
    description: str
    spec: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Step:
    id: str
    type: str
    status: str
    attempts: int
    output: dict[str, Any] | None
    error: str
    approval_id: UUID | None
    updated_at: datetime


@dataclass(frozen=True)
class Run:
    id: UUID
    definition_id: UUID
    workflow_name: str
    workflow_version: int
    workflow_id: str
    attempt: int
    status: str
    input: dict[str, Any]
    output: dict[str, Any]
    error: str
    idempotency_key: str | None
    request_hash: str
    schedule_id: UUID | None
    created_at: datetime
    updated_at: datetime
    steps: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class Approval:
    id: UUID
    role: str
    title: str
    details: dict[str, Any]
    status: str
    on_expiry: str
    expires_at: datetime
    decided_by: str
    comment: str
    decided_at: datetime | None
    workflow_id: str
    run_id: UUID | None
    step_id: str
    requested_by: str
    created_at: datetime
    idempotency_key: str = ""


@dataclass(frozen=True)
class ScheduleRow:
    id: UUID
    workflow_name: str
    workflow_version: int
    cron: str
    time_zone: str
    input: dict[str, Any]
    note: str
    created_at: datetime


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


_DEF = "id, name, version, description, spec, created_at"
_RUN = (
    "id, definition_id, workflow_name, workflow_version, workflow_id, attempt, status, input, "
    "output, error, idempotency_key, request_hash, schedule_id, created_at, updated_at"
)
_STEP = "step_id, type, status, attempts, output, error, approval_id, updated_at"
_APPROVAL = (
    "id, role, title, details, status, on_expiry, expires_at, decided_by, comment, decided_at, "
    "workflow_id, run_id, step_id, requested_by, created_at, idempotency_key"
)
_SCHEDULE = "id, workflow_name, workflow_version, cron, time_zone, input, note, created_at"


def _definition(r: Any) -> Definition:
    return Definition(
        id=r["id"],
        name=r["name"],
        version=r["version"],
        description=r["description"],
        spec=_json(r["spec"]),
        created_at=r["created_at"],
    )


def _step(r: Any) -> Step:
    return Step(
        id=r["step_id"],
        type=r["type"],
        status=r["status"],
        attempts=r["attempts"],
        output=_json(r["output"]) if r["output"] is not None else None,
        error=r["error"],
        approval_id=r["approval_id"],
        updated_at=r["updated_at"],
    )


def _run(r: Any, steps: list[Step] | None = None) -> Run:
    return Run(
        id=r["id"],
        definition_id=r["definition_id"],
        workflow_name=r["workflow_name"],
        workflow_version=r["workflow_version"],
        workflow_id=r["workflow_id"],
        attempt=r["attempt"],
        status=r["status"],
        input=_json(r["input"]),
        output=_json(r["output"]),
        error=r["error"],
        idempotency_key=r["idempotency_key"],
        request_hash=r["request_hash"],
        schedule_id=r["schedule_id"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        steps=steps or [],
    )


def _approval(r: Any) -> Approval:
    return Approval(
        id=r["id"],
        role=r["role"],
        title=r["title"],
        details=_json(r["details"]),
        status=r["status"],
        on_expiry=r["on_expiry"],
        expires_at=r["expires_at"],
        decided_by=r["decided_by"],
        comment=r["comment"],
        decided_at=r["decided_at"],
        workflow_id=r["workflow_id"],
        run_id=r["run_id"],
        step_id=r["step_id"],
        requested_by=r["requested_by"],
        created_at=r["created_at"],
        idempotency_key=r["idempotency_key"],
    )


def _schedule(r: Any) -> ScheduleRow:
    return ScheduleRow(
        id=r["id"],
        workflow_name=r["workflow_name"],
        workflow_version=r["workflow_version"],
        cron=r["cron"],
        time_zone=r["time_zone"],
        input=_json(r["input"]),
        note=r["note"],
        created_at=r["created_at"],
    )


class WorkflowStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    @asynccontextmanager
    async def _transaction(self, conn: Any) -> AsyncIterator[Any]:
        """`conn` as it is (its caller's transaction), or a new transaction of the pool's."""
        if conn is not None:
            yield conn
            return
        async with self.db.acquire() as own, own.transaction():
            yield own

    # -- definitions ------------------------------------------------------------------------

    async def create_definition(
        self, client_id: str, name: str, description: str, spec: dict[str, Any]
    ) -> Definition:
        """The next version of `name` (1 when new); concurrent creations serialise on a lock."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))", client_id, name
            )
            row = await conn.fetchrow(
                f"""INSERT INTO workflow_definitions (id, client_id, name, version, description, spec)
                VALUES ($1, $2, $3, (SELECT coalesce(max(version), 0) + 1 FROM workflow_definitions
                                     WHERE client_id = $2 AND name = $3), $4, $5::jsonb)
                RETURNING {_DEF}""",
                new_id(),
                client_id,
                name,
                description,
                json.dumps(spec),
            )
        return _definition(row)

    async def get_definition(self, client_id: str, name: str, version: int) -> Definition | None:
        """Version `version` of `name`, or its latest when `version` is 0."""
        row = await self.db.fetchrow(
            f"""SELECT {_DEF} FROM workflow_definitions WHERE client_id = $1 AND name = $2
            AND ($3 = 0 OR version = $3) ORDER BY version DESC LIMIT 1""",
            client_id,
            name,
            version,
        )
        return _definition(row) if row else None

    async def list_definitions(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Definition], str]:
        rows, token = await keyset_page(
            self.db,
            table="""(SELECT DISTINCT ON (client_id, name) * FROM workflow_definitions
                      ORDER BY client_id, name, version DESC) latest""",
            columns=_DEF,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_definition(r) for r in rows], token

    # -- runs -------------------------------------------------------------------------------

    async def create_run(
        self,
        client_id: str,
        *,
        run_id: UUID,
        definition: Definition,
        workflow_id: str,
        input: dict[str, Any],
        steps: list[tuple[str, str]],
        idempotency_key: str | None = None,
        request_hash: str = "",
        schedule_id: UUID | None = None,
        parent_run_id: UUID | None = None,
    ) -> tuple[Run, bool]:
        """The run and its pending steps; (run, False) when its id or idempotency key exists."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO workflow_runs (id, client_id, definition_id, workflow_name,
                    workflow_version, workflow_id, input, idempotency_key, request_hash,
                    schedule_id, parent_run_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11)
                ON CONFLICT DO NOTHING RETURNING {_RUN}""",
                run_id,
                client_id,
                definition.id,
                definition.name,
                definition.version,
                workflow_id,
                json.dumps(input),
                idempotency_key,
                request_hash,
                schedule_id,
                parent_run_id,
            )
            if row is None:
                existing = await conn.fetchrow(
                    f"""SELECT {_RUN} FROM workflow_runs WHERE client_id = $1
                    AND (id = $2 OR ($3::text IS NOT NULL AND idempotency_key = $3))""",
                    client_id,
                    run_id,
                    idempotency_key,
                )
                if existing is None:  # the id exists in another tenant: never reuse it
                    raise AlreadyExists(f"run {run_id} exists")
                return _run(existing), False
            await conn.executemany(
                """INSERT INTO workflow_run_steps (run_id, step_id, client_id, position, type)
                VALUES ($1, $2, $3, $4, $5)""",
                [(run_id, sid, client_id, i, stype) for i, (sid, stype) in enumerate(steps)],
            )
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(run_id))
        return _run(row), True

    async def get_run(self, client_id: str, run_id: UUID) -> Run | None:
        row = await self.db.fetchrow(
            f"SELECT {_RUN} FROM workflow_runs WHERE client_id = $1 AND id = $2", client_id, run_id
        )
        if row is None:
            return None
        steps = await self.db.fetch(
            f"""SELECT {_STEP} FROM workflow_run_steps WHERE client_id = $1 AND run_id = $2
            ORDER BY position""",
            client_id,
            run_id,
        )
        return _run(row, [_step(s) for s in steps])

    async def list_runs(
        self, client_id: str, workflow_name: str, status: str, page_token: str, page_size: int
    ) -> tuple[list[Run], str]:
        rows, token = await keyset_page(
            self.db,
            table="workflow_runs",
            columns=_RUN,
            where="client_id = $1 AND ($2 = '' OR workflow_name = $2) AND ($3 = '' OR status = $3)",
            args=[client_id, workflow_name, status],
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_run(r) for r in rows], token

    async def set_run_status(
        self,
        client_id: str,
        run_id: UUID,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        error: str = "",
    ) -> None:
        """Moves a run; a finished run stays finished (a late report of an earlier attempt
        changes nothing) and skips the steps that never ran."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE workflow_runs SET status = $3, output = coalesce($4::jsonb, output),
                    error = $5, updated_at = now()
                WHERE client_id = $1 AND id = $2 AND status NOT IN ('succeeded', 'cancelled')""",
                client_id,
                run_id,
                status,
                json.dumps(output) if output is not None else None,
                error,
            )
            if status in TERMINAL_RUN:
                await conn.execute(
                    """UPDATE workflow_run_steps SET status = 'skipped', updated_at = now()
                    WHERE client_id = $1 AND run_id = $2 AND status = 'pending'""",
                    client_id,
                    run_id,
                )
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(run_id))

    async def start_retry(self, client_id: str, run_id: UUID, workflow_id: str) -> Run | None:
        """Marks a failed run running again as attempt+1 under `workflow_id`; the steps to run
        again go back to pending. None unless the run is failed."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE workflow_runs SET status = 'running', attempt = attempt + 1,
                    workflow_id = $3, error = '', updated_at = now()
                WHERE client_id = $1 AND id = $2 AND status = 'failed' RETURNING {_RUN}""",
                client_id,
                run_id,
                workflow_id,
            )
            if row is None:
                return None
            await conn.execute(
                """UPDATE workflow_run_steps SET status = 'pending', error = '', output = NULL,
                    approval_id = NULL, updated_at = now()
                WHERE client_id = $1 AND run_id = $2 AND status <> 'succeeded'""",
                client_id,
                run_id,
            )
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(run_id))
        run = await self.get_run(client_id, run_id)
        assert run is not None
        return run

    async def set_step(
        self,
        client_id: str,
        run_id: UUID,
        step_id: str,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        error: str = "",
        started: bool = False,
    ) -> None:
        async with self.db.acquire() as conn, conn.transaction():
            await self._set_step(
                conn,
                client_id,
                run_id,
                step_id,
                status,
                output=output,
                error=error,
                started=started,
            )

    @staticmethod
    async def _set_step(
        conn: Any,
        client_id: str,
        run_id: UUID,
        step_id: str,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        error: str = "",
        started: bool = False,
        approval_id: UUID | None = None,
    ) -> None:
        await conn.execute(
            """UPDATE workflow_run_steps SET status = $4, output = coalesce($5::jsonb, output),
                error = $6, attempts = attempts + $7::int,
                approval_id = coalesce($8, approval_id), updated_at = now()
            WHERE client_id = $1 AND run_id = $2 AND step_id = $3""",
            client_id,
            run_id,
            step_id,
            status,
            json.dumps(output) if output is not None else None,
            error,
            1 if started else 0,
            approval_id,
        )
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(run_id))

    # -- the effects ledger -----------------------------------------------------------------

    async def effect(self, key: str) -> dict[str, Any] | None:
        """The recorded result of the side effect `key`, if it completed."""
        value = await self.db.fetchval("SELECT result FROM workflow_effects WHERE key = $1", key)
        return _json(value) if value is not None else None

    async def record_effect(
        self,
        key: str,
        client_id: str,
        run_id: UUID,
        step_id: str,
        kind: str,
        result: dict[str, Any],
    ) -> dict[str, Any]:
        """Records the effect and moves its step (succeeded, or compensated) in one transaction;
        when `key` was recorded already, returns that first result and changes nothing."""
        async with self.db.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """INSERT INTO workflow_effects (key, client_id, run_id, step_id, kind, result)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (key) DO NOTHING
                RETURNING true""",
                key,
                client_id,
                run_id,
                step_id,
                kind,
                json.dumps(result),
            )
            if not inserted:
                return await self.effect(key) or {}
            status = "succeeded" if kind == "step" else "compensated"
            await self._set_step(
                conn, client_id, run_id, step_id, status, output=result if kind == "step" else None
            )
        return result

    # -- approvals --------------------------------------------------------------------------

    async def open_approval(
        self,
        client_id: str,
        *,
        approval_id: UUID,
        idempotency_key: str,
        role: str,
        title: str,
        details: dict[str, Any],
        on_expiry: str,
        expires_at: datetime,
        workflow_id: str,
        requested_by: str,
        run_id: UUID | None = None,
        step_id: str = "",
        conn: Any = None,
    ) -> tuple[Approval, bool]:
        """The approval, announced as task.approval_requested; (existing, False) for a key seen
        before. A run's step and the run move to waiting_for_approval with it. In `conn`'s
        transaction when given (a budget's overrun asks in the reservation's)."""
        async with self._transaction(conn) as conn:
            row = await conn.fetchrow(
                f"""INSERT INTO approvals (id, client_id, idempotency_key, role, title, details,
                    on_expiry, expires_at, workflow_id, requested_by, run_id, step_id)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (client_id, idempotency_key) DO NOTHING RETURNING {_APPROVAL}""",
                approval_id,
                client_id,
                idempotency_key,
                role,
                title,
                json.dumps(details),
                on_expiry,
                expires_at,
                workflow_id,
                requested_by,
                run_id,
                step_id,
            )
            if row is None:
                existing = await conn.fetchrow(
                    f"""SELECT {_APPROVAL} FROM approvals
                    WHERE client_id = $1 AND idempotency_key = $2""",
                    client_id,
                    idempotency_key,
                )
                return _approval(existing), False
            approval = _approval(row)
            payload: dict[str, Any] = {
                "approval_id": str(approval.id),
                "role": role,
                "title": title,
                "expires_at": expires_at.isoformat(),
                "on_expiry": on_expiry,
                "requested_by": requested_by,
            }
            if run_id is not None:
                payload |= {"run_id": str(run_id), "step_id": step_id}
                await self._set_step(
                    conn,
                    client_id,
                    run_id,
                    step_id,
                    "waiting_for_approval",
                    approval_id=approval.id,
                )
                await conn.execute(
                    """UPDATE workflow_runs SET status = 'waiting_for_approval', updated_at = now()
                    WHERE client_id = $1 AND id = $2 AND status = 'running'""",
                    client_id,
                    run_id,
                )
            await self.events.add(
                conn, "task.approval_requested", payload, aggregate_id=str(approval.id)
            )
        return approval, True

    async def get_approval(
        self, client_id: str, approval_id: UUID, conn: Any = None
    ) -> Approval | None:
        """The approval; read in `conn` when given (a caller holding a transaction must not wait
        for a second connection of the pool)."""
        row = await (conn or self.db).fetchrow(
            f"SELECT {_APPROVAL} FROM approvals WHERE client_id = $1 AND id = $2",
            client_id,
            approval_id,
        )
        return _approval(row) if row else None

    async def list_approvals(
        self, client_id: str, status: str, role: str, page_token: str, page_size: int
    ) -> tuple[list[Approval], str]:
        """`role` '' lists every role's approvals."""
        rows, token = await keyset_page(
            self.db,
            table="approvals",
            columns=_APPROVAL,
            where="client_id = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR role = $3)",
            args=[client_id, status, role],
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_approval(r) for r in rows], token

    async def decide_approval(
        self,
        client_id: str,
        approval_id: UUID,
        status: str,
        decided_by: str,
        comment: str,
    ) -> tuple[Approval | None, bool]:
        """Decides a pending approval (announced as task.approval_decided): (approval, True);
        (approval as it is, False) when it was not pending; (None, False) when absent."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE approvals SET status = $3, decided_by = $4, comment = $5,
                    decided_at = now()
                WHERE client_id = $1 AND id = $2 AND status = 'pending' RETURNING {_APPROVAL}""",
                client_id,
                approval_id,
                status,
                decided_by,
                comment,
            )
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {_APPROVAL} FROM approvals WHERE client_id = $1 AND id = $2",
                    client_id,
                    approval_id,
                )
                return (_approval(existing) if existing else None), False
            approval = _approval(row)
            await self._decided(conn, approval)
        return approval, True

    async def expire_approval(
        self, client_id: str, approval_id: UUID, conn: Any = None
    ) -> Approval:
        """On expiry: a pending approval takes its on_expiry outcome (expired, or the default
        decision by "expiry"); one decided meanwhile is returned as decided."""
        async with self._transaction(conn) as conn:
            row = await conn.fetchrow(
                f"""UPDATE approvals SET
                    status = CASE on_expiry WHEN 'approve' THEN 'approved'
                                            WHEN 'reject' THEN 'rejected' ELSE 'expired' END,
                    decided_by = 'expiry', decided_at = now()
                WHERE client_id = $1 AND id = $2 AND status = 'pending' RETURNING {_APPROVAL}""",
                client_id,
                approval_id,
            )
            if row is not None:
                approval = _approval(row)
                await self._decided(conn, approval)
                return approval
            existing = await conn.fetchrow(
                f"SELECT {_APPROVAL} FROM approvals WHERE client_id = $1 AND id = $2",
                client_id,
                approval_id,
            )
        return _approval(existing)

    async def _decided(self, conn: Any, approval: Approval) -> None:
        payload: dict[str, Any] = {
            "approval_id": str(approval.id),
            "status": approval.status,
            "decided_by": approval.decided_by,
            "comment": approval.comment,
        }
        if approval.run_id is not None:
            payload |= {"run_id": str(approval.run_id), "step_id": approval.step_id}
        await self.events.add(conn, "task.approval_decided", payload, aggregate_id=str(approval.id))
        await conn.execute("SELECT pg_notify($1, $2)", APPROVAL_CHANNEL, str(approval.id))

    # -- schedules --------------------------------------------------------------------------

    async def create_schedule(
        self,
        client_id: str,
        *,
        schedule_id: UUID,
        workflow_name: str,
        workflow_version: int,
        cron: str,
        time_zone: str,
        input: dict[str, Any],
        note: str,
    ) -> ScheduleRow:
        row = await self.db.fetchrow(
            f"""INSERT INTO workflow_schedules (id, client_id, workflow_name, workflow_version,
                cron, time_zone, input, note)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) RETURNING {_SCHEDULE}""",
            schedule_id,
            client_id,
            workflow_name,
            workflow_version,
            cron,
            time_zone,
            json.dumps(input),
            note,
        )
        return _schedule(row)

    async def get_schedule(self, client_id: str, schedule_id: UUID) -> ScheduleRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_SCHEDULE} FROM workflow_schedules WHERE client_id = $1 AND id = $2",
            client_id,
            schedule_id,
        )
        return _schedule(row) if row else None

    async def list_schedules(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[ScheduleRow], str]:
        rows, token = await keyset_page(
            self.db,
            table="workflow_schedules",
            columns=_SCHEDULE,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_schedule(r) for r in rows], token

    async def delete_schedule(self, client_id: str, schedule_id: UUID) -> bool:
        deleted = await self.db.fetchval(
            "DELETE FROM workflow_schedules WHERE client_id = $1 AND id = $2 RETURNING true",
            client_id,
            schedule_id,
        )
        return bool(deleted)
