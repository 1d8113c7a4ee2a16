"""The task store port: what the task service needs from its datastore, whatever the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Caps on tokens, tool calls and money (millionths of a US dollar); 0 means no cap."""

    tokens: int = 0
    tool_calls: int = 0
    cost_micros: int = 0

    def __bool__(self) -> bool:
        return bool(self.tokens or self.tool_calls or self.cost_micros)


@dataclass(frozen=True, kw_only=True)
class NewTask:
    title: str
    description: str = ""
    assignee_persona_id: UUID | None = None
    priority: int = 3
    due_at: datetime | None = None
    budget: Limits = field(default_factory=Limits)
    parent_task_id: UUID | None = None
    assignment_reason: str = ""
    step_type: str = ""
    depends_on: tuple[UUID, ...] = ()
    created_by: str = ""


@dataclass(frozen=True, kw_only=True)
class Task(NewTask):
    id: UUID
    status: str
    workflow_run_id: str
    outcome: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class TaskFilter:
    """Every filter that is set must match."""

    statuses: Sequence[str] = ()
    assignee_persona_id: UUID | None = None
    priority: int | None = None
    due_before_time: datetime | None = None
    due_after_time: datetime | None = None
    parent_task_id: UUID | None = None


@dataclass(frozen=True, kw_only=True)
class TimelineEntry:
    id: UUID
    kind: str
    from_status: str
    to_status: str
    note: str
    actor: str
    created_at: datetime


class TaskStore(Protocol):
    async def create(self, client_id: str, task: NewTask, actor: str) -> Task: ...

    async def create_subtasks(
        self, client_id: str, parent: Task, subtasks: Sequence[NewTask], actor: str
    ) -> list[Task]: ...

    async def get(self, client_id: str, task_id: UUID) -> Task | None: ...

    async def list_tasks(
        self, client_id: str, where: TaskFilter, page_token: str, page_size: int
    ) -> tuple[list[Task], str]: ...

    async def transition(
        self,
        client_id: str,
        task_id: UUID,
        status: str,
        *,
        note: str,
        actor: str,
        workflow_run_id: str = "",
    ) -> Task: ...

    async def timeline(
        self, client_id: str, task_id: UUID, page_token: str, page_size: int
    ) -> tuple[list[TimelineEntry], str]: ...

    async def open_workload(self, client_id: str, persona_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Open (queued, running, waiting) tasks assigned to each persona."""
        ...
