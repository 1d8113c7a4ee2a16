"""`/api/v1/workflows`, `/runs`, `/approvals`, `/schedules`: durable workflows of the caller's
tenant (docs/tasks.md), served by the task service's WorkflowService, ApprovalService and
ScheduleService."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from edrs_core import ServiceError
from edrs_proto.task.v1 import workflow_pb2, workflow_pb2_grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field, StrictBool
from sse_starlette import EventSourceResponse, ServerSentEvent

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    sse_error,
    sse_response,
    upstream_responses,
)
from edrs_gateway.api.models import MULTI_LINE, REQUIRED_LINE, SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

workflows = APIRouter(prefix="/workflows", tags=["workflows"])
runs = APIRouter(prefix="/runs", tags=["workflows"])
approvals = APIRouter(prefix="/approvals", tags=["workflows"])
schedules = APIRouter(prefix="/schedules", tags=["workflows"])

# Reading is for every role; starting, cancelling and scheduling for those who write tasks. Who
# decides an approval is the task service's call: the approval's role, or an admin.
read = require(Permission.TASKS_READ)
write = require(Permission.TASKS_WRITE)

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# Printable ASCII without spaces (as the gateway's Idempotency-Key), within the task service's 200
# characters.
IDEMPOTENCY_KEY = r"^[!-~]{1,200}$"
# Versions are int32 in the task service's contract.
MAX_VERSION = 2**31 - 1
# A watch ends after this long; the client reconnects (the stream starts with every step).
WATCH_SECONDS = 3600.0

RunStatus = Literal["running", "waiting_for_approval", "succeeded", "failed", "cancelled"]
StepStatus = Literal[
    "pending", "running", "waiting_for_approval", "succeeded", "failed", "compensated", "skipped"
]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]
OnExpiry = Literal["fail", "approve", "reject"]

_RUN_STATUS: dict[int, RunStatus] = {
    workflow_pb2.RUN_STATUS_RUNNING: "running",
    workflow_pb2.RUN_STATUS_WAITING_FOR_APPROVAL: "waiting_for_approval",
    workflow_pb2.RUN_STATUS_SUCCEEDED: "succeeded",
    workflow_pb2.RUN_STATUS_FAILED: "failed",
    workflow_pb2.RUN_STATUS_CANCELLED: "cancelled",
}
_STEP_STATUS: dict[int, StepStatus] = {
    workflow_pb2.STEP_STATUS_PENDING: "pending",
    workflow_pb2.STEP_STATUS_RUNNING: "running",
    workflow_pb2.STEP_STATUS_WAITING_FOR_APPROVAL: "waiting_for_approval",
    workflow_pb2.STEP_STATUS_SUCCEEDED: "succeeded",
    workflow_pb2.STEP_STATUS_FAILED: "failed",
    workflow_pb2.STEP_STATUS_COMPENSATED: "compensated",
    workflow_pb2.STEP_STATUS_SKIPPED: "skipped",
}
_APPROVAL_STATUS: dict[int, ApprovalStatus] = {
    workflow_pb2.APPROVAL_STATUS_PENDING: "pending",
    workflow_pb2.APPROVAL_STATUS_APPROVED: "approved",
    workflow_pb2.APPROVAL_STATUS_REJECTED: "rejected",
    workflow_pb2.APPROVAL_STATUS_EXPIRED: "expired",
}
_ON_EXPIRY: dict[int, OnExpiry] = {
    workflow_pb2.ON_EXPIRY_UNSPECIFIED: "fail",
    workflow_pb2.ON_EXPIRY_FAIL: "fail",
    workflow_pb2.ON_EXPIRY_APPROVE: "approve",
    workflow_pb2.ON_EXPIRY_REJECT: "reject",
}
_ON_EXPIRY_NUMBER = {
    "fail": workflow_pb2.ON_EXPIRY_FAIL,
    "approve": workflow_pb2.ON_EXPIRY_APPROVE,
    "reject": workflow_pb2.ON_EXPIRY_REJECT,
}


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def workflow_stub(ctx: GatewayContext) -> workflow_pb2_grpc.WorkflowServiceAsyncStub:
    return ctx.runtime.peers.stub(workflow_pb2_grpc.WorkflowServiceStub)


def _approval_stub(ctx: GatewayContext) -> workflow_pb2_grpc.ApprovalServiceAsyncStub:
    return ctx.runtime.peers.stub(workflow_pb2_grpc.ApprovalServiceStub)


def _schedule_stub(ctx: GatewayContext) -> workflow_pb2_grpc.ScheduleServiceAsyncStub:
    return ctx.runtime.peers.stub(workflow_pb2_grpc.ScheduleServiceStub)


_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}
_EXAMPLE_ID = "0190d6a0-0000-7000-8000-0000000000c1"
RunId = Annotated[UUID, Path(alias="runId", examples=[_EXAMPLE_ID])]
ApprovalId = Annotated[UUID, Path(alias="approvalId", examples=[_EXAMPLE_ID])]
ScheduleId = Annotated[UUID, Path(alias="scheduleId", examples=[_EXAMPLE_ID])]
WorkflowName = Annotated[str, Path(alias="name", pattern=NAME, examples=["publish-summary"])]


# -- workflow definitions -------------------------------------------------------------------


class CreateWorkflow(ApiModel):
    name: str = Field(pattern=NAME, description="A new name is version 1; else the next version")
    description: str = Field(default="", max_length=2000, pattern=MULTI_LINE)
    spec: dict[str, Any] = Field(
        description='{"steps": [{"id", "type", "dependsOn", "with", "retry", "timeoutSeconds", '
        '"compensation"}]}: docs/tasks.md, "Workflow definitions"'
    )


class WorkflowOut(ApiModel):
    id: UUID
    name: str
    version: int
    description: str
    spec: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, d: workflow_pb2.WorkflowDefinition) -> WorkflowOut:
        return cls(
            id=UUID(d.id),
            name=d.name,
            version=d.version,
            description=d.description,
            spec=_dict(d.spec),
            created_at=_time(d.create_time),
        )


class WorkflowPage(PageOf):
    workflows: list[WorkflowOut]


@workflows.get("", response_model=WorkflowPage, summary="List workflows", responses=_ERRORS)
async def list_workflows(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read)],
) -> WorkflowPage:
    request = workflow_pb2.ListWorkflowDefinitionsRequest()
    request.page.page_size, request.page.page_token = page.page_size, page.page_token
    reply = await workflow_stub(ctx).ListWorkflowDefinitions(request)
    return WorkflowPage(
        workflows=[WorkflowOut.of(d) for d in reply.definitions],
        next_page_token=reply.page.next_page_token,
    )


@workflows.post(
    "",
    status_code=201,
    response_model=WorkflowOut,
    summary="Register a workflow (version)",
    description="Validated as a DAG: 422 names the step and the reason (unknown type, a "
    "`dependsOn` naming no step, a cycle, more than 100 steps...); 409 `failed_precondition` for "
    "tool calls while no tool service is reachable.",
    responses={**_ERRORS, **problem_responses(409)},
)
async def create_workflow(
    body: CreateWorkflow, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> WorkflowOut:
    created = await workflow_stub(ctx).CreateWorkflowDefinition(
        workflow_pb2.CreateWorkflowDefinitionRequest(
            name=body.name, description=body.description, spec=_struct(body.spec)
        )
    )
    return WorkflowOut.of(created)


@workflows.get(
    "/{name}",
    response_model=WorkflowOut,
    summary="Get a workflow",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_workflow(
    name: WorkflowName,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read)],
    version: Annotated[int, Query(ge=0, le=MAX_VERSION, description="0: the latest")] = 0,
) -> WorkflowOut:
    wanted = f"{name}@{version}" if version else name
    found = await workflow_stub(ctx).GetWorkflowDefinition(
        workflow_pb2.GetWorkflowDefinitionRequest(id=wanted)
    )
    return WorkflowOut.of(found)


# -- runs -----------------------------------------------------------------------------------


class StartRun(ApiModel):
    workflow_name: str = Field(pattern=NAME)
    workflow_version: int = Field(default=0, ge=0, le=MAX_VERSION, description="0: the latest")
    input: dict[str, Any] = Field(default_factory=dict)


class StepOut(ApiModel):
    id: str
    type: str
    status: StepStatus
    attempts: int
    output: dict[str, Any]
    error: str
    approval_id: UUID | None
    updated_at: datetime

    @classmethod
    def of(cls, s: workflow_pb2.RunStep) -> StepOut:
        return cls(
            id=s.id,
            type=s.type,
            status=_STEP_STATUS[s.status],
            attempts=s.attempts,
            output=_dict(s.output),
            error=s.error,
            approval_id=UUID(s.approval_id) if s.approval_id else None,
            updated_at=_time(s.update_time),
        )


class RunOut(ApiModel):
    id: UUID
    workflow_name: str
    workflow_version: int
    status: RunStatus
    input: dict[str, Any]
    output: dict[str, Any] = Field(description="The outputs of the steps, by step id")
    error: str
    steps: list[StepOut]
    attempt: int
    schedule_id: UUID | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: workflow_pb2.Run) -> RunOut:
        return cls(
            id=UUID(r.id),
            workflow_name=r.workflow_name,
            workflow_version=r.workflow_version,
            status=_RUN_STATUS[r.status],
            input=_dict(r.input),
            output=_dict(r.output),
            error=r.error,
            steps=[StepOut.of(s) for s in r.steps],
            attempt=r.attempt,
            schedule_id=UUID(r.schedule_id) if r.schedule_id else None,
            created_at=_time(r.create_time),
            updated_at=_time(r.update_time),
        )


class RunPage(PageOf):
    runs: list[RunOut]


@runs.get("", response_model=RunPage, summary="List runs", responses=_ERRORS)
async def list_runs(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read)],
    workflow_name: Annotated[str, Query(alias="workflowName", max_length=100)] = "",
    status: RunStatus | None = None,
) -> RunPage:
    numbers = {v: k for k, v in _RUN_STATUS.items()}
    request = workflow_pb2.ListRunsRequest(
        workflow_name=workflow_name,
        status=numbers[status] if status else 0,  # type: ignore[arg-type]
    )
    request.page.page_size, request.page.page_token = page.page_size, page.page_token
    reply = await workflow_stub(ctx).ListRuns(request)
    return RunPage(
        runs=[RunOut.of(r) for r in reply.runs], next_page_token=reply.page.next_page_token
    )


@runs.post(
    "",
    status_code=201,
    response_model=RunOut,
    summary="Start a run",
    description="With `Idempotency-Key`, a repeated start returns the first run, also after the "
    "gateway's replay window (the task service keeps the key); the same key with another "
    "workflow or input is 422.",
    responses={
        201: {
            "headers": {
                "Location": {"description": "Path of the run", "schema": {"type": "string"}}
            }
        },
        **_ERRORS,
        **problem_responses(404),
    },
)
async def start_run(
    body: StartRun,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write)],
) -> RunOut:
    # Read here rather than declared: the gateway's idempotency middleware owns the header (and
    # answers a malformed or reused key before any route); the task service keeps it for good.
    idempotency_key = request.headers.get("Idempotency-Key", "")
    started = await workflow_stub(ctx).StartRun(
        workflow_pb2.StartRunRequest(
            workflow_name=body.workflow_name,
            workflow_version=body.workflow_version,
            input=_struct(body.input),
            idempotency_key=idempotency_key,
        )
    )
    run = RunOut.of(started)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{run.id}"
    return run


@runs.get(
    "/{runId}",
    response_model=RunOut,
    summary="Get a run with its steps",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_run(run_id: RunId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]) -> RunOut:
    return RunOut.of(await workflow_stub(ctx).GetRun(workflow_pb2.GetRunRequest(id=str(run_id))))


@runs.post(
    "/{runId}/cancel",
    response_model=RunOut,
    summary="Cancel a run",
    description="Running steps stop, completed steps are compensated in reverse order, the run "
    "ends `cancelled`; a finished run is returned as it is.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def cancel_run(
    run_id: RunId, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> RunOut:
    return RunOut.of(
        await workflow_stub(ctx).CancelRun(workflow_pb2.CancelRunRequest(id=str(run_id)))
    )


@runs.post(
    "/{runId}/retry",
    response_model=RunOut,
    summary="Retry a failed run from its failed step",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def retry_run(
    run_id: RunId, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> RunOut:
    return RunOut.of(
        await workflow_stub(ctx).RetryRun(workflow_pb2.RetryRunRequest(id=str(run_id)))
    )


@runs.get(
    "/{runId}/events",
    summary="Watch a run's steps live (SSE)",
    description="Server-sent events: `step` (a step as it is now: every step first, then each "
    "change), then `finished` (the run) when it ends; an `error` event (problem+json) if the "
    "watch fails.",
    response_class=EventSourceResponse,
    responses={
        **sse_response(
            ("step", "finished"),
            "A Step (`step`), the Run (`finished`) or a problem (`error`), as JSON",
        ),
        **_ERRORS,
        **problem_responses(404),
    },
)
async def watch_run(
    run_id: RunId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]
) -> EventSourceResponse:
    stub = workflow_stub(ctx)
    # Found first, so an unknown run is a 404 rather than an event stream with an error.
    await stub.GetRun(workflow_pb2.GetRunRequest(id=str(run_id)))
    stream = stub.WatchRun(workflow_pb2.WatchRunRequest(id=str(run_id)), timeout=WATCH_SECONDS)
    return EventSourceResponse(_watch(stream), ping=15.0, send_timeout=30.0)


async def _watch(stream: AsyncIterable[workflow_pb2.RunUpdate]) -> AsyncIterator[ServerSentEvent]:
    try:
        async for update in stream:
            if update.HasField("step"):
                body = StepOut.of(update.step).model_dump(mode="json", by_alias=True)
                yield ServerSentEvent(data=json.dumps(body), event="step")
            else:
                body = RunOut.of(update.finished).model_dump(mode="json", by_alias=True)
                yield ServerSentEvent(data=json.dumps(body), event="finished")
    except ServiceError as exc:
        yield sse_error(exc)


# -- approvals ------------------------------------------------------------------------------


class ApprovalOut(ApiModel):
    id: UUID
    role: str
    title: str
    details: dict[str, Any]
    status: ApprovalStatus
    on_expiry: OnExpiry
    expires_at: datetime
    decided_by: str
    comment: str
    decided_at: datetime | None
    run_id: UUID | None
    step_id: str
    requested_by: str
    created_at: datetime

    @classmethod
    def of(cls, a: workflow_pb2.Approval) -> ApprovalOut:
        return cls(
            id=UUID(a.id),
            role=a.role,
            title=a.title,
            details=_dict(a.details),
            status=_APPROVAL_STATUS[a.status],
            on_expiry=_ON_EXPIRY[a.on_expiry],
            expires_at=_time(a.expire_time),
            decided_by=a.decided_by,
            comment=a.comment,
            decided_at=_time(a.decide_time) if a.HasField("decide_time") else None,
            run_id=UUID(a.run_id) if a.run_id else None,
            step_id=a.step_id,
            requested_by=a.requested_by,
            created_at=_time(a.create_time),
        )


class ApprovalPage(PageOf):
    approvals: list[ApprovalOut]


class Decision(ApiModel):
    approve: bool = Field(strict=True, description="true approves, false rejects")
    comment: str = Field(default="", max_length=2000, pattern=MULTI_LINE)


class RequestApproval(ApiModel):
    idempotency_key: str = Field(
        pattern=IDEMPOTENCY_KEY,
        description="What makes a repeated request return the same approval (e.g. the id of "
        "the action it holds)",
    )
    title: str = Field(min_length=1, max_length=500, pattern=REQUIRED_LINE)
    role: str = Field(min_length=1, max_length=100, pattern=REQUIRED_LINE)
    details: dict[str, Any] = Field(default_factory=dict)
    expires_in_seconds: int = Field(default=86400, ge=1, le=30 * 86400)
    on_expiry: OnExpiry = "fail"


@approvals.get(
    "",
    response_model=ApprovalPage,
    summary="List approvals",
    description="`forMe=true`: those the caller's role may decide (an admin: all).",
    responses=_ERRORS,
)
async def list_approvals(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read)],
    status: ApprovalStatus | None = None,
    for_me: Annotated[bool, Query(alias="forMe")] = False,
) -> ApprovalPage:
    numbers = {v: k for k, v in _APPROVAL_STATUS.items()}
    request = workflow_pb2.ListApprovalsRequest(
        status=numbers[status] if status else 0,  # type: ignore[arg-type]
        for_me=for_me,
    )
    request.page.page_size, request.page.page_token = page.page_size, page.page_token
    reply = await _approval_stub(ctx).ListApprovals(request)
    return ApprovalPage(
        approvals=[ApprovalOut.of(a) for a in reply.approvals],
        next_page_token=reply.page.next_page_token,
    )


@approvals.post(
    "",
    status_code=201,
    response_model=ApprovalOut,
    summary="Ask for an approval",
    description="An integrator's script holding an action for a person's decision; a repeated "
    "request with the same `idempotencyKey` returns the same approval.",
    responses={**_ERRORS},
)
async def request_approval(
    body: RequestApproval,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write)],
) -> ApprovalOut:
    asked = await _approval_stub(ctx).RequestApproval(
        workflow_pb2.RequestApprovalRequest(
            idempotency_key=body.idempotency_key,
            role=body.role,
            title=body.title,
            details=_struct(body.details),
            expires_in_seconds=body.expires_in_seconds,
            on_expiry=_ON_EXPIRY_NUMBER[body.on_expiry],
        )
    )
    return ApprovalOut.of(asked)


@approvals.get(
    "/{approvalId}",
    response_model=ApprovalOut,
    summary="Get an approval",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_approval(
    approval_id: ApprovalId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]
) -> ApprovalOut:
    found = await _approval_stub(ctx).GetApproval(
        workflow_pb2.GetApprovalRequest(id=str(approval_id))
    )
    return ApprovalOut.of(found)


@approvals.post(
    "/{approvalId}/decision",
    response_model=ApprovalOut,
    summary="Approve or reject",
    description="By a caller whose role is the approval's, or an admin (403 otherwise); decided "
    "once: another decision is 409, the same one again returns the approval unchanged.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def decide_approval(
    approval_id: ApprovalId,
    body: Decision,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read)],
) -> ApprovalOut:
    decided = await _approval_stub(ctx).DecideApproval(
        workflow_pb2.DecideApprovalRequest(
            id=str(approval_id), approve=body.approve, comment=body.comment
        )
    )
    return ApprovalOut.of(decided)


# -- schedules ------------------------------------------------------------------------------


class CreateSchedule(ApiModel):
    workflow_name: str = Field(pattern=NAME)
    workflow_version: int = Field(
        default=0, ge=0, le=MAX_VERSION, description="0: the latest at each start"
    )
    cron: str = Field(
        min_length=9,
        max_length=200,
        pattern=r"^[0-9A-Za-z*/,\- ]+$",
        description="Five fields (minute hour day-of-month month day-of-week), or seven (second "
        "first, year last)",
        examples=["0 9 * * 1-5"],
    )
    time_zone: str = Field(default="UTC", max_length=64, examples=["Europe/Berlin"])
    input: dict[str, Any] = Field(default_factory=dict)
    paused: StrictBool = False
    note: str = Field(default="", max_length=500, pattern=SINGLE_LINE)


class Note(ApiModel):
    note: str = Field(default="", max_length=500, pattern=SINGLE_LINE)


class ScheduleOut(ApiModel):
    id: UUID
    workflow_name: str
    workflow_version: int
    cron: str
    time_zone: str
    input: dict[str, Any]
    paused: bool
    next_run_times: list[datetime] = Field(description="Soonest first, up to 10; none if paused")
    recent_run_ids: list[UUID]
    note: str
    created_at: datetime

    @classmethod
    def of(cls, s: workflow_pb2.Schedule) -> ScheduleOut:
        return cls(
            id=UUID(s.id),
            workflow_name=s.workflow_name,
            workflow_version=s.workflow_version,
            cron=s.cron,
            time_zone=s.time_zone,
            input=_dict(s.input),
            paused=s.paused,
            next_run_times=[_time(t) for t in s.next_run_time],
            recent_run_ids=[UUID(r) for r in s.recent_run_ids],
            note=s.note,
            created_at=_time(s.create_time),
        )


class SchedulePage(PageOf):
    schedules: list[ScheduleOut]


@schedules.get("", response_model=SchedulePage, summary="List schedules", responses=_ERRORS)
async def list_schedules(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read)],
) -> SchedulePage:
    request = workflow_pb2.ListSchedulesRequest()
    request.page.page_size, request.page.page_token = page.page_size, page.page_token
    reply = await _schedule_stub(ctx).ListSchedules(request)
    return SchedulePage(
        schedules=[ScheduleOut.of(s) for s in reply.schedules],
        next_page_token=reply.page.next_page_token,
    )


@schedules.post(
    "",
    status_code=201,
    response_model=ScheduleOut,
    summary="Schedule a workflow",
    description="Runs at each time of `cron` in `timeZone` (IANA); a local time skipped by a DST "
    "change does not fire, one that occurs twice fires once. 422 for a cron or zone that does "
    "not parse, or an unknown workflow.",
    responses=_ERRORS,
)
async def create_schedule(
    body: CreateSchedule, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> ScheduleOut:
    created = await _schedule_stub(ctx).CreateSchedule(
        workflow_pb2.CreateScheduleRequest(
            workflow_name=body.workflow_name,
            workflow_version=body.workflow_version,
            cron=body.cron,
            time_zone=body.time_zone,
            input=_struct(body.input),
            paused=body.paused,
            note=body.note,
        )
    )
    return ScheduleOut.of(created)


@schedules.get(
    "/{scheduleId}",
    response_model=ScheduleOut,
    summary="Get a schedule with its next run times",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_schedule(
    schedule_id: ScheduleId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]
) -> ScheduleOut:
    found = await _schedule_stub(ctx).GetSchedule(
        workflow_pb2.GetScheduleRequest(id=str(schedule_id))
    )
    return ScheduleOut.of(found)


@schedules.post(
    "/{scheduleId}/pause",
    response_model=ScheduleOut,
    summary="Pause a schedule",
    responses={**_ERRORS, **problem_responses(404)},
)
async def pause_schedule(
    schedule_id: ScheduleId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write)],
    body: Note | None = None,
) -> ScheduleOut:
    paused = await _schedule_stub(ctx).PauseSchedule(
        workflow_pb2.PauseScheduleRequest(id=str(schedule_id), note=body.note if body else "")
    )
    return ScheduleOut.of(paused)


@schedules.post(
    "/{scheduleId}/resume",
    response_model=ScheduleOut,
    summary="Resume a schedule",
    responses={**_ERRORS, **problem_responses(404)},
)
async def resume_schedule(
    schedule_id: ScheduleId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write)],
    body: Note | None = None,
) -> ScheduleOut:
    resumed = await _schedule_stub(ctx).ResumeSchedule(
        workflow_pb2.ResumeScheduleRequest(id=str(schedule_id), note=body.note if body else "")
    )
    return ScheduleOut.of(resumed)


@schedules.delete(
    "/{scheduleId}",
    status_code=204,
    summary="Delete a schedule",
    responses={**_ERRORS, **problem_responses(404)},
)
async def delete_schedule(
    schedule_id: ScheduleId, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> Response:
    await _schedule_stub(ctx).DeleteSchedule(
        workflow_pb2.DeleteScheduleRequest(id=str(schedule_id))
    )
    return Response(status_code=204)
