"""The task store port: what the task service needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class NewTask:
    title: str
    description: str = ""
    assignee_persona_id: UUID | None = None
    priority: int = 3


@dataclass(frozen=True, kw_only=True)
class Task(NewTask):
    id: UUID
    status: str
    created_at: datetime
    updated_at: datetime


class TaskStore(Protocol):
    async def create(self, client_id: str, task: NewTask) -> Task: ...

    async def get(self, client_id: str, task_id: UUID) -> Task | None: ...

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Task], str]: ...
