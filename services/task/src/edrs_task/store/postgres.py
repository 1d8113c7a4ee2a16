"""PostgreSQL adapter of the task store."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_task.store import NewTask, Task

_COLUMNS = "id, title, description, assignee_persona_id, status, priority, created_at, updated_at"


def _task(row: Any) -> Task:
    return Task(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        assignee_persona_id=row["assignee_persona_id"],
        status=row["status"],
        priority=row["priority"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresTaskStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    async def create(self, client_id: str, task: NewTask) -> Task:
        """Store the task and its `task.task_created` event in one transaction."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO tasks
                    (id, client_id, title, description, assignee_persona_id, priority)
                VALUES ($1, $2, $3, $4, $5, $6)
                RETURNING {_COLUMNS}""",
                new_id(),
                client_id,
                task.title,
                task.description,
                task.assignee_persona_id,
                task.priority,
            )
            created = _task(row)
            payload: dict[str, Any] = {"task_id": str(created.id), "title": created.title}
            if created.assignee_persona_id:
                payload["persona_id"] = str(created.assignee_persona_id)
            await self.events.add(conn, "task.task_created", payload, aggregate_id=str(created.id))
        return created

    async def get(self, client_id: str, task_id: UUID) -> Task | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM tasks WHERE client_id = $1 AND id = $2", client_id, task_id
        )
        return _task(row) if row else None

    async def list(self, client_id: str, page_token: str, page_size: int) -> tuple[list[Task], str]:
        rows, token = await keyset_page(
            self.db,
            table="tasks",
            columns=_COLUMNS,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_task(r) for r in rows], token
