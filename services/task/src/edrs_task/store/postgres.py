"""PostgreSQL adapter of the task store: tasks, their timeline and their events, in one transaction
per change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import FailedPrecondition, NotFound
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_task import lifecycle
from edrs_task.store import Limits, NewTask, Task, TaskFilter, TimelineEntry
from edrs_task.store.budgets import ensure_run_budget

_COLUMNS = (
    "id, title, description, assignee_persona_id, status, priority, due_at, budget_max_tokens, "
    "budget_max_tool_calls, budget_max_cost_micros, workflow_run_id, parent_task_id, "
    "assignment_reason, step_type, depends_on, outcome, created_by, created_at, updated_at"
)
_TIMELINE_COLUMNS = "id, kind, from_status, to_status, note, actor, created_at"


def _task(row: Any) -> Task:
    return Task(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        assignee_persona_id=row["assignee_persona_id"],
        status=row["status"],
        priority=row["priority"],
        due_at=row["due_at"],
        budget=Limits(
            tokens=row["budget_max_tokens"],
            tool_calls=row["budget_max_tool_calls"],
            cost_micros=row["budget_max_cost_micros"],
        ),
        workflow_run_id=row["workflow_run_id"],
        parent_task_id=row["parent_task_id"],
        assignment_reason=row["assignment_reason"],
        step_type=row["step_type"],
        depends_on=tuple(row["depends_on"]),
        outcome=row["outcome"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _entry(row: Any) -> TimelineEntry:
    return TimelineEntry(
        id=row["id"],
        kind=row["kind"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        note=row["note"],
        actor=row["actor"],
        created_at=row["created_at"],
    )


class PostgresTaskStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    async def create(self, client_id: str, task: NewTask, actor: str) -> Task:
        """Store the task, its timeline and its events (`task.task_created`, and
        `task.task_assigned` when it has an assignee) in one transaction."""
        async with self.db.acquire() as conn, conn.transaction():
            return await self._insert(conn, client_id, new_id(), task, actor)

    async def create_subtasks(
        self, client_id: str, parent: Task, subtasks: Sequence[NewTask], actor: str
    ) -> list[Task]:
        """Every subtask, or none: a decomposition is stored whole. `depends_on` of each NewTask
        holds indexes into `subtasks` (as UUID(int=i)); they become the siblings' ids here."""
        ids = [new_id() for _ in subtasks]
        made: list[Task] = []
        async with self.db.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT status FROM tasks WHERE client_id = $1 AND id = $2 FOR UPDATE",
                client_id,
                parent.id,
            )
            if locked is None:
                raise NotFound(f"task {parent.id} not found")
            if locked in lifecycle.FINAL:
                raise FailedPrecondition(
                    f"task {parent.id} is {locked}: a finished task is not decomposed"
                )
            for task_id, sub in zip(ids, subtasks, strict=True):
                resolved = NewTask(
                    **{
                        **sub.__dict__,
                        "parent_task_id": parent.id,
                        "depends_on": tuple(ids[d.int] for d in sub.depends_on),
                    }
                )
                made.append(await self._insert(conn, client_id, task_id, resolved, actor))
            await self._append(
                conn,
                client_id,
                parent.id,
                "decomposed",
                note=f"{len(made)} subtasks: " + ", ".join(t.title for t in made),
                actor=actor,
            )
        return made

    async def _insert(
        self, conn: Any, client_id: str, task_id: UUID, task: NewTask, actor: str
    ) -> Task:
        row = await conn.fetchrow(
            f"""INSERT INTO tasks
                (id, client_id, title, description, assignee_persona_id, priority, due_at,
                 budget_max_tokens, budget_max_tool_calls, budget_max_cost_micros,
                 parent_task_id, assignment_reason, step_type, depends_on, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            RETURNING {_COLUMNS}""",
            task_id,
            client_id,
            task.title,
            task.description,
            task.assignee_persona_id,
            task.priority,
            task.due_at,
            task.budget.tokens,
            task.budget.tool_calls,
            task.budget.cost_micros,
            task.parent_task_id,
            task.assignment_reason,
            task.step_type,
            list(task.depends_on),
            task.created_by,
        )
        created = _task(row)
        await self._append(
            conn, client_id, created.id, "created", to_status=created.status, actor=actor
        )
        payload: dict[str, Any] = {"task_id": str(created.id), "title": created.title}
        if created.parent_task_id:
            payload["parent_task_id"] = str(created.parent_task_id)
        if created.assignee_persona_id:
            payload["persona_id"] = str(created.assignee_persona_id)
        await self.events.add(conn, "task.task_created", payload, aggregate_id=str(created.id))
        if created.assignee_persona_id:
            reason = created.assignment_reason or "assigned when the task was created"
            await self._append(conn, client_id, created.id, "assigned", note=reason, actor=actor)
            await self.events.add(
                conn,
                "task.task_assigned",
                {
                    "task_id": str(created.id),
                    "persona_id": str(created.assignee_persona_id),
                    "reason": reason,
                },
                aggregate_id=str(created.id),
            )
        return created

    async def _append(
        self,
        conn: Any,
        client_id: str,
        task_id: UUID,
        kind: str,
        *,
        from_status: str = "",
        to_status: str = "",
        note: str = "",
        actor: str = "",
    ) -> None:
        await conn.execute(
            """INSERT INTO task_timeline
                (id, client_id, task_id, kind, from_status, to_status, note, actor)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            new_id(),
            client_id,
            task_id,
            kind,
            from_status,
            to_status,
            note,
            actor,
        )

    async def get(self, client_id: str, task_id: UUID) -> Task | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM tasks WHERE client_id = $1 AND id = $2", client_id, task_id
        )
        return _task(row) if row else None

    async def list_tasks(
        self, client_id: str, where: TaskFilter, page_token: str, page_size: int
    ) -> tuple[list[Task], str]:
        conditions, args = ["client_id = $1"], [client_id]

        def add(condition: str, value: Any) -> None:
            args.append(value)
            conditions.append(condition.format(f"${len(args)}"))

        if where.statuses:
            add("status = ANY({}::text[])", list(where.statuses))
        if where.assignee_persona_id is not None:
            add("assignee_persona_id = {}", where.assignee_persona_id)
        if where.priority is not None:
            add("priority = {}", where.priority)
        if where.due_before_time is not None:
            add("due_at < {}", where.due_before_time)
        if where.due_after_time is not None:
            add("due_at >= {}", where.due_after_time)
        if where.parent_task_id is not None:
            add("parent_task_id = {}", where.parent_task_id)
        rows, token = await keyset_page(
            self.db,
            table="tasks",
            columns=_COLUMNS,
            where=" AND ".join(conditions),
            args=args,
            page_token=page_token,
            requested_size=page_size,
        )
        return [_task(r) for r in rows], token

    async def transition(
        self,
        client_id: str,
        task_id: UUID,
        status: str,
        *,
        note: str,
        actor: str,
        workflow_run_id: str = "",
    ) -> Task:
        """Move the task to `status` (legal moves only; the same status again is a no-op, so an
        engine retrying its update changes nothing), attach the run, and announce a finish
        (`task.task_completed`) in the same transaction."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM tasks WHERE client_id = $1 AND id = $2 FOR UPDATE",
                client_id,
                task_id,
            )
            if row is None:
                raise NotFound(f"task {task_id} not found")
            current = _task(row)
            run_changes = bool(workflow_run_id) and workflow_run_id != current.workflow_run_id
            if current.status == status and not run_changes:
                return current
            if current.status != status:
                lifecycle.check_transition(current.status, status)
            row = await conn.fetchrow(
                f"""UPDATE tasks SET status = $3,
                    workflow_run_id = CASE WHEN $4 = '' THEN workflow_run_id ELSE $4 END,
                    outcome = CASE WHEN $3 = ANY($5::text[]) THEN $6 ELSE outcome END,
                    updated_at = now()
                WHERE client_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
                client_id,
                task_id,
                status,
                workflow_run_id,
                list(lifecycle.FINAL),
                note,
            )
            updated = _task(row)
            if run_changes:
                await ensure_run_budget(conn, client_id, workflow_run_id, updated.budget)
                await self._append(
                    conn, client_id, task_id, "run_attached", note=workflow_run_id, actor=actor
                )
            if current.status != status:
                await self._append(
                    conn,
                    client_id,
                    task_id,
                    "cancelled" if status == lifecycle.CANCELLED else "status_changed",
                    from_status=current.status,
                    to_status=status,
                    note=note,
                    actor=actor,
                )
            if status in lifecycle.FINAL and current.status != status:
                await self.events.add(
                    conn, "task.task_completed", _completed(updated), aggregate_id=str(task_id)
                )
        return updated

    async def timeline(
        self, client_id: str, task_id: UUID, page_token: str, page_size: int
    ) -> tuple[list[TimelineEntry], str]:
        if await self.get(client_id, task_id) is None:
            raise NotFound(f"task {task_id} not found")
        rows, token = await keyset_page(
            self.db,
            table="task_timeline",
            columns=_TIMELINE_COLUMNS,
            where="client_id = $1 AND task_id = $2",
            args=[client_id, task_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_entry(r) for r in rows], token

    async def open_workload(self, client_id: str, persona_ids: Sequence[UUID]) -> dict[UUID, int]:
        rows = await self.db.fetch(
            """SELECT assignee_persona_id, count(*) AS open FROM tasks
            WHERE client_id = $1 AND assignee_persona_id = ANY($2::uuid[])
              AND status = ANY($3::text[])
            GROUP BY assignee_persona_id""",
            client_id,
            list(persona_ids),
            list(lifecycle.OPEN),
        )
        counts = {r["assignee_persona_id"]: r["open"] for r in rows}
        return {p: counts.get(p, 0) for p in persona_ids}


def _completed(task: Task) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "task_id": str(task.id),
        "title": task.title,
        "status": task.status,
        "outcome": task.outcome,
    }
    if task.assignee_persona_id:
        payload["persona_id"] = str(task.assignee_persona_id)
    if task.created_by:
        payload["user_id"] = task.created_by
    return payload
