"""The task service's gRPC servicers: TaskService here (validates requests, checks assignees, scopes
to the caller's tenant); BudgetService in edrs_task.budget_server, re-exported so every servicer of
the service is found in this module."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from edrs_core import FailedPrecondition, InvalidArgument, NotFound, ServicerContext, validation
from edrs_core.context import identity_var, require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from edrs_task import lifecycle
from edrs_task.budget_server import BudgetServicer
from edrs_task.decomposition import Decomposer
from edrs_task.personas import PersonaDirectory
from edrs_task.store import Limits, NewTask, Task, TaskFilter, TaskStore, TimelineEntry

__all__ = ["BudgetServicer", "TaskServicer"]

DEFAULT_PRIORITY = 3
NOTE_MAX = 2_000
RUN_ID_MAX = 200

STATUS = {
    lifecycle.QUEUED: task_pb2.TASK_STATUS_QUEUED,
    lifecycle.RUNNING: task_pb2.TASK_STATUS_RUNNING,
    lifecycle.WAITING: task_pb2.TASK_STATUS_WAITING_FOR_APPROVAL,
    lifecycle.SUCCEEDED: task_pb2.TASK_STATUS_SUCCEEDED,
    lifecycle.FAILED: task_pb2.TASK_STATUS_FAILED,
    lifecycle.CANCELLED: task_pb2.TASK_STATUS_CANCELLED,
}
_CHOICES: dict[task_pb2.TaskStatus.ValueType, str] = {
    task_pb2.TASK_STATUS_UNSPECIFIED: "",
    **{number: name for name, number in STATUS.items()},
}


def to_proto(t: Task) -> task_pb2.Task:
    task = task_pb2.Task(
        id=str(t.id),
        title=t.title,
        description=t.description,
        assignee_persona_id=str(t.assignee_persona_id) if t.assignee_persona_id else "",
        status=STATUS[t.status],
        priority=t.priority,
        create_time=timestamp(t.created_at),
        update_time=timestamp(t.updated_at),
        budget=task_pb2.TaskBudget(
            max_tokens=t.budget.tokens,
            max_tool_calls=t.budget.tool_calls,
            max_cost_micros=t.budget.cost_micros,
        ),
        workflow_run_id=t.workflow_run_id,
        parent_task_id=str(t.parent_task_id) if t.parent_task_id else "",
        assignment_reason=t.assignment_reason,
        step_type=t.step_type,
        depends_on=[str(d) for d in t.depends_on],
        outcome=t.outcome,
    )
    if t.due_at is not None:
        task.due_time.CopyFrom(timestamp(t.due_at))
    return task


def entry_to_proto(e: TimelineEntry) -> task_pb2.TimelineEntry:
    return task_pb2.TimelineEntry(
        id=str(e.id),
        kind=e.kind,
        from_status=STATUS.get(e.from_status, task_pb2.TASK_STATUS_UNSPECIFIED),
        to_status=STATUS.get(e.to_status, task_pb2.TASK_STATUS_UNSPECIFIED),
        note=e.note,
        actor=e.actor,
        create_time=timestamp(e.created_at),
    )


def status_name(value: task_pb2.TaskStatus.ValueType, field: str) -> str:
    name: str = validation.enum_value(value, field, _CHOICES, task_pb2.TaskStatus)
    if not name:
        raise InvalidArgument(f"{field} is required", field=field)
    return name


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _optional_id(value: str, field: str) -> UUID | None:
    return parse_id(value.strip(), field) if value.strip() else None


def _limit(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {value}", field=field)
    return value


def actor() -> str:
    """Who is acting: the verified caller's subject (a user, an API key, a service)."""
    identity = identity_var.get()
    return identity.subject if identity is not None else "system"


def _requesting_user() -> str:
    identity = identity_var.get()
    return identity.subject if identity is not None and identity.kind == "user" else ""


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(
        self, store: TaskStore, personas: PersonaDirectory, decomposer: Decomposer
    ) -> None:
        self.store = store
        self.personas = personas
        self.decomposer = decomposer

    async def CreateTask(  # noqa: N802 (gRPC method name)
        self, request: task_pb2.CreateTaskRequest, context: ServicerContext
    ) -> task_pb2.Task:
        client_id = require_client_id()
        assignee = _optional_id(request.assignee_persona_id, "assignee_persona_id")
        new = NewTask(
            title=validation.text(request.title, "title", max_length=500),
            description=validation.text(
                request.description, "description", max_length=20_000, required=False
            ),
            assignee_persona_id=assignee,
            priority=(
                validation.int_range(request.priority, "priority", low=1, high=5)
                if request.priority
                else DEFAULT_PRIORITY
            ),
            due_at=_time(request.due_time) if request.HasField("due_time") else None,
            budget=Limits(
                tokens=_limit(request.budget.max_tokens, "budget.max_tokens"),
                tool_calls=_limit(request.budget.max_tool_calls, "budget.max_tool_calls"),
                cost_micros=_limit(request.budget.max_cost_micros, "budget.max_cost_micros"),
            ),
            created_by=_requesting_user(),
        )
        # Checked last, so a request that is invalid anyway costs no call to the persona service.
        if assignee is not None:
            await self.personas.ensure_exists(assignee, "assignee_persona_id")
        return to_proto(await self.store.create(client_id, new, actor()))

    async def GetTask(  # noqa: N802
        self, request: task_pb2.GetTaskRequest, context: ServicerContext
    ) -> task_pb2.Task:
        client_id = require_client_id()
        return to_proto(await self._task(client_id, request.id))

    async def _task(self, client_id: str, task_id: str) -> Task:
        task = await self.store.get(client_id, parse_id(task_id))
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def ListTasks(  # noqa: N802
        self, request: task_pb2.ListTasksRequest, context: ServicerContext
    ) -> task_pb2.ListTasksResponse:
        client_id = require_client_id()
        where = TaskFilter(
            statuses=[status_name(s, f"statuses[{i}]") for i, s in enumerate(request.statuses)],
            assignee_persona_id=_optional_id(request.assignee_persona_id, "assignee_persona_id"),
            priority=(
                validation.int_range(request.priority, "priority", low=1, high=5)
                if request.priority
                else None
            ),
            due_before_time=_time(request.due_before_time)
            if request.HasField("due_before_time")
            else None,
            due_after_time=_time(request.due_after_time)
            if request.HasField("due_after_time")
            else None,
            parent_task_id=_optional_id(request.parent_task_id, "parent_task_id"),
        )
        tasks, token = await self.store.list_tasks(
            client_id, where, request.page.page_token, request.page.page_size
        )
        return task_pb2.ListTasksResponse(
            tasks=[to_proto(t) for t in tasks],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def CancelTask(  # noqa: N802
        self, request: task_pb2.CancelTaskRequest, context: ServicerContext
    ) -> task_pb2.Task:
        client_id = require_client_id()
        reason = validation.text(request.reason, "reason", max_length=NOTE_MAX, required=False)
        task = await self.store.transition(
            client_id,
            parse_id(request.id),
            lifecycle.CANCELLED,
            note=reason or "cancelled",
            actor=actor(),
        )
        return to_proto(task)

    async def TransitionTask(  # noqa: N802
        self, request: task_pb2.TransitionTaskRequest, context: ServicerContext
    ) -> task_pb2.Task:
        client_id = require_client_id()
        task = await self.store.transition(
            client_id,
            parse_id(request.id),
            status_name(request.status, "status"),
            note=validation.text(request.note, "note", max_length=NOTE_MAX, required=False),
            actor=actor(),
            workflow_run_id=validation.text(
                request.workflow_run_id, "workflow_run_id", max_length=RUN_ID_MAX, required=False
            ),
        )
        return to_proto(task)

    async def ListTaskTimeline(  # noqa: N802
        self, request: task_pb2.ListTaskTimelineRequest, context: ServicerContext
    ) -> task_pb2.ListTaskTimelineResponse:
        client_id = require_client_id()
        entries, token = await self.store.timeline(
            client_id, parse_id(request.id), request.page.page_token, request.page.page_size
        )
        return task_pb2.ListTaskTimelineResponse(
            entries=[entry_to_proto(e) for e in entries],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def DecomposeTask(  # noqa: N802
        self, request: task_pb2.DecomposeTaskRequest, context: ServicerContext
    ) -> task_pb2.DecomposeTaskResponse:
        client_id = require_client_id()
        max_subtasks = validation.limit(request.max_subtasks, "max_subtasks", default=8, maximum=20)
        parent = await self._task(client_id, request.id)
        if parent.status in lifecycle.FINAL:
            raise FailedPrecondition(
                f"task {parent.id} is {parent.status}: a finished task is not decomposed"
            )
        plan = await self.decomposer.plan(client_id, parent, max_subtasks)
        subtasks = await self.store.create_subtasks(client_id, parent, plan.subtasks, actor())
        return task_pb2.DecomposeTaskResponse(
            subtasks=[to_proto(t) for t in subtasks], repaired=plan.repaired
        )
