"""`/api/v1/tasks`: the caller's tenant's tasks (docs/tasks.md), served by the task service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field, field_validator

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import (
    JSON_INT_MAX,
    MULTI_LINE,
    REQUIRED_LINE,
    ApiModel,
    PageOf,
    Rfc3339,
)
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(prefix="/tasks", tags=["tasks"])

read_tasks = require(Permission.TASKS_READ)
write_tasks = require(Permission.TASKS_WRITE)

# The task service's limits (edrs_task.server), refused here before any call.
TITLE_MAX, DESCRIPTION_MAX, REASON_MAX = 500, 20_000, 2_000

Status = Literal["queued", "running", "waiting_for_approval", "succeeded", "failed", "cancelled"]
_STATUS: dict[task_pb2.TaskStatus.ValueType, Status] = {
    task_pb2.TASK_STATUS_QUEUED: "queued",
    task_pb2.TASK_STATUS_RUNNING: "running",
    task_pb2.TASK_STATUS_WAITING_FOR_APPROVAL: "waiting_for_approval",
    task_pb2.TASK_STATUS_SUCCEEDED: "succeeded",
    task_pb2.TASK_STATUS_FAILED: "failed",
    task_pb2.TASK_STATUS_CANCELLED: "cancelled",
}
_STATUS_NUMBER = {name: number for number, name in _STATUS.items()}
_EXAMPLE_ID = "0190d6a0-0000-7000-8000-0000000000b1"


class Budget(ApiModel):
    """Caps on what the task may spend; 0 means no cap of that kind."""

    # int64 in the task service: a larger number is a 422, not a 500 building the request.
    max_tokens: int = Field(default=0, ge=0, le=JSON_INT_MAX)
    max_tool_calls: int = Field(default=0, ge=0, le=JSON_INT_MAX)
    max_cost_micros: int = Field(
        default=0, ge=0, le=JSON_INT_MAX, description="Millionths of a US dollar"
    )


class CreateTask(ApiModel):
    title: str = Field(min_length=1, max_length=TITLE_MAX, pattern=REQUIRED_LINE)
    description: str = Field(default="", max_length=DESCRIPTION_MAX, pattern=MULTI_LINE)
    assignee_persona_id: UUID | None = None
    priority: int = Field(default=3, ge=1, le=5, description="1 (highest) to 5 (lowest)")
    due_at: Rfc3339 | None = Field(default=None, description="RFC 3339, with a time zone")
    budget: Budget | None = None

    @field_validator("due_at")
    @classmethod
    def _due_in_range(cls, value: datetime | None) -> datetime | None:
        # A time the task service's Timestamp holds: 0001-01-01 to 9999-12-31 in UTC (an offset
        # can carry a date at either end past it, which was a 500 building the request).
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("out of range: from 0001-01-01 to 9999-12-31 in UTC") from None
        return value


class CancelTask(ApiModel):
    reason: str = Field(default="", max_length=REASON_MAX, pattern=MULTI_LINE)


class Decompose(ApiModel):
    max_subtasks: int = Field(default=8, ge=1, le=20)


class TaskOut(ApiModel):
    id: UUID
    title: str
    description: str
    assignee_persona_id: UUID | None
    status: Status
    priority: int
    due_at: datetime | None
    budget: Budget
    workflow_run_id: str = Field(description="The run executing the task; empty before it starts")
    parent_task_id: UUID | None
    assignment_reason: str
    step_type: str
    depends_on: list[UUID]
    outcome: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, t: task_pb2.Task) -> TaskOut:
        return cls(
            id=UUID(t.id),
            title=t.title,
            description=t.description,
            assignee_persona_id=UUID(t.assignee_persona_id) if t.assignee_persona_id else None,
            status=_STATUS[t.status],
            priority=t.priority,
            due_at=_time(t.due_time) if t.HasField("due_time") else None,
            budget=Budget(
                max_tokens=t.budget.max_tokens,
                max_tool_calls=t.budget.max_tool_calls,
                max_cost_micros=t.budget.max_cost_micros,
            ),
            workflow_run_id=t.workflow_run_id,
            parent_task_id=UUID(t.parent_task_id) if t.parent_task_id else None,
            assignment_reason=t.assignment_reason,
            step_type=t.step_type,
            depends_on=[UUID(d) for d in t.depends_on],
            outcome=t.outcome,
            created_at=_time(t.create_time),
            updated_at=_time(t.update_time),
        )


class TaskPage(PageOf):
    tasks: list[TaskOut]


class TimelineEntryOut(ApiModel):
    id: UUID
    kind: str = Field(
        description="created, assigned, status_changed, run_attached, decomposed, cancelled"
    )
    from_status: Status | None
    to_status: Status | None
    note: str
    actor: str
    created_at: datetime


class TimelinePage(PageOf):
    entries: list[TimelineEntryOut]


class Decomposition(ApiModel):
    subtasks: list[TaskOut]
    repaired: bool = Field(description="The first proposal was invalid and its repair accepted")


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def task_stub(ctx: GatewayContext) -> task_pb2_grpc.TaskServiceAsyncStub:
    return ctx.runtime.peers.stub(task_pb2_grpc.TaskServiceStub)


TaskId = Annotated[UUID, Path(alias="taskId", examples=[_EXAMPLE_ID])]
_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}
_STRING = {"schema": {"type": "string"}}


@router.get(
    "",
    response_model=TaskPage,
    summary="List tasks",
    description="The tenant's tasks, oldest first, one page at a time; every filter given must "
    "match (`status` may repeat: any of them).",
    responses=_ERRORS,
)
async def list_tasks(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_tasks)],
    status: Annotated[list[Status] | None, Query(description="Any of these statuses")] = None,
    assignee_persona_id: Annotated[UUID | None, Query(alias="assigneePersonaId")] = None,
    priority: Annotated[int | None, Query(ge=1, le=5)] = None,
    due_before: Annotated[Rfc3339 | None, Query(alias="dueBefore")] = None,
    due_after: Annotated[Rfc3339 | None, Query(alias="dueAfter", description="At or after")] = None,
    parent_task_id: Annotated[UUID | None, Query(alias="parentTaskId")] = None,
) -> TaskPage:
    request = task_pb2.ListTasksRequest(
        statuses=[_STATUS_NUMBER[s] for s in status or []],
        assignee_persona_id=str(assignee_persona_id) if assignee_persona_id else "",
        priority=priority or 0,
        parent_task_id=str(parent_task_id) if parent_task_id else "",
    )
    if due_before is not None:
        request.due_before_time.CopyFrom(_timestamp(due_before))
    if due_after is not None:
        request.due_after_time.CopyFrom(_timestamp(due_after))
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await task_stub(ctx).ListTasks(request)
    return TaskPage(
        tasks=[TaskOut.of(t) for t in reply.tasks], next_page_token=reply.page.next_page_token
    )


@router.post(
    "",
    status_code=201,
    response_model=TaskOut,
    summary="Create a task",
    description="A `queued` task, for a persona of the tenant (409 `failed_precondition` when it "
    "does not exist) or unassigned; `Location` names it.",
    responses={
        201: {"headers": {"Location": {"description": "Path of the new task", **_STRING}}},
        **_ERRORS,
        **problem_responses(409),
    },
)
async def create_task(
    body: CreateTask,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_tasks)],
) -> TaskOut:
    message = task_pb2.CreateTaskRequest(
        title=body.title,
        description=body.description,
        assignee_persona_id=str(body.assignee_persona_id) if body.assignee_persona_id else "",
        priority=body.priority,
    )
    if body.due_at is not None:
        message.due_time.CopyFrom(_timestamp(body.due_at))
    if body.budget is not None:
        message.budget.CopyFrom(
            task_pb2.TaskBudget(
                max_tokens=body.budget.max_tokens,
                max_tool_calls=body.budget.max_tool_calls,
                max_cost_micros=body.budget.max_cost_micros,
            )
        )
    created = TaskOut.of(await task_stub(ctx).CreateTask(message))
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.id}"
    return created


@router.get(
    "/{taskId}",
    response_model=TaskOut,
    summary="Get a task",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_task(
    task_id: TaskId, ctx: Ctx, caller: Annotated[Principal, Depends(read_tasks)]
) -> TaskOut:
    return TaskOut.of(await task_stub(ctx).GetTask(task_pb2.GetTaskRequest(id=str(task_id))))


@router.post(
    "/{taskId}/cancel",
    response_model=TaskOut,
    summary="Cancel a task",
    description="Stops a task that has not finished; cancelling a cancelled task changes nothing; "
    "a succeeded or failed task is 409 `failed_precondition`.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def cancel_task(
    task_id: TaskId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_tasks)],
    body: CancelTask | None = None,
) -> TaskOut:
    reason = body.reason if body is not None else ""
    cancelled = await task_stub(ctx).CancelTask(
        task_pb2.CancelTaskRequest(id=str(task_id), reason=reason)
    )
    return TaskOut.of(cancelled)


@router.get(
    "/{taskId}/timeline",
    response_model=TimelinePage,
    summary="A task's timeline",
    description="What happened to the task, oldest first (append-only).",
    responses={**_ERRORS, **problem_responses(404)},
)
async def task_timeline(
    task_id: TaskId,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_tasks)],
) -> TimelinePage:
    request = task_pb2.ListTaskTimelineRequest(id=str(task_id))
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await task_stub(ctx).ListTaskTimeline(request)
    return TimelinePage(
        entries=[
            TimelineEntryOut(
                id=UUID(e.id),
                kind=e.kind,
                from_status=_STATUS.get(e.from_status),
                to_status=_STATUS.get(e.to_status),
                note=e.note,
                actor=e.actor,
                created_at=_time(e.create_time),
            )
            for e in reply.entries
        ],
        next_page_token=reply.page.next_page_token,
    )


@router.post(
    "/{taskId}/decompose",
    response_model=Decomposition,
    summary="Decompose a task into subtasks",
    description="The model proposes subtasks as a DAG; a valid proposal (or its one repair) "
    "becomes subtasks, each assigned to the persona whose skills fit best (less open work breaks "
    "a tie), with the reason. A proposal still invalid after its repair is 409 "
    "`failed_precondition` with the reasons.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def decompose_task(
    task_id: TaskId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_tasks)],
    body: Decompose | None = None,
) -> Decomposition:
    limit = body.max_subtasks if body is not None else 8
    reply = await task_stub(ctx).DecomposeTask(
        task_pb2.DecomposeTaskRequest(id=str(task_id), max_subtasks=limit),
        # The model writes the proposal (and maybe its repair): as long as a turn may take. The
        # request timeout (EDRS_GATEWAY_REQUEST_TIMEOUT_SECONDS) still bounds the JSON reply.
        timeout=ctx.settings.turn_timeout_seconds,
    )
    return Decomposition(subtasks=[TaskOut.of(t) for t in reply.subtasks], repaired=reply.repaired)
