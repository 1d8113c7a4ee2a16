"""gRPC servicers of workflow.proto: definitions and runs, approvals, schedules. Each resolves the
caller's tenant in the store before it touches Temporal, so a tenant never reaches another's
workflows, approvals or schedules."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edrs_core import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServicerContext,
    Unavailable,
    validation,
)
from edrs_core.context import identity_var, remaining_time, require_client_id
from edrs_core.ids import new_id, parse_id
from edrs_core.notifications import Notifications
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.task.v1 import workflow_pb2, workflow_pb2_grpc
from google.protobuf import json_format, struct_pb2
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleSpec,
    ScheduleState,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from edrs_task.definitions import NAME, validate_spec
from edrs_task.durable.messages import (
    APPROVAL_WAIT,
    DECIDE_SIGNAL,
    WORKFLOW_RUN,
    ApprovalAsk,
    Decision,
    RunInput,
    derived_id,
)
from edrs_task.durable.steps import ToolCaller
from edrs_task.store.workflows import (
    APPROVAL_CHANNEL,
    NOTIFY_CHANNEL,
    TERMINAL_RUN,
    Approval,
    Definition,
    Run,
    ScheduleRow,
    Step,
    WorkflowStore,
)

ADMIN_ROLE = "admin"
MAX_APPROVAL_SECONDS = 30 * 24 * 3600

_RUN_STATUS = {
    "running": workflow_pb2.RUN_STATUS_RUNNING,
    "waiting_for_approval": workflow_pb2.RUN_STATUS_WAITING_FOR_APPROVAL,
    "succeeded": workflow_pb2.RUN_STATUS_SUCCEEDED,
    "failed": workflow_pb2.RUN_STATUS_FAILED,
    "cancelled": workflow_pb2.RUN_STATUS_CANCELLED,
}
_STEP_STATUS = {
    "pending": workflow_pb2.STEP_STATUS_PENDING,
    "running": workflow_pb2.STEP_STATUS_RUNNING,
    "waiting_for_approval": workflow_pb2.STEP_STATUS_WAITING_FOR_APPROVAL,
    "succeeded": workflow_pb2.STEP_STATUS_SUCCEEDED,
    "failed": workflow_pb2.STEP_STATUS_FAILED,
    "compensated": workflow_pb2.STEP_STATUS_COMPENSATED,
    "skipped": workflow_pb2.STEP_STATUS_SKIPPED,
}
_APPROVAL_STATUS = {
    "pending": workflow_pb2.APPROVAL_STATUS_PENDING,
    "approved": workflow_pb2.APPROVAL_STATUS_APPROVED,
    "rejected": workflow_pb2.APPROVAL_STATUS_REJECTED,
    "expired": workflow_pb2.APPROVAL_STATUS_EXPIRED,
}
_ON_EXPIRY = {
    "fail": workflow_pb2.ON_EXPIRY_FAIL,
    "approve": workflow_pb2.ON_EXPIRY_APPROVE,
    "reject": workflow_pb2.ON_EXPIRY_REJECT,
}
_ON_EXPIRY_IN = {
    workflow_pb2.ON_EXPIRY_UNSPECIFIED: "fail",
    workflow_pb2.ON_EXPIRY_FAIL: "fail",
    workflow_pb2.ON_EXPIRY_APPROVE: "approve",
    workflow_pb2.ON_EXPIRY_REJECT: "reject",
}


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


def _dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def _definition_pb(d: Definition) -> workflow_pb2.WorkflowDefinition:
    return workflow_pb2.WorkflowDefinition(
        id=str(d.id),
        name=d.name,
        version=d.version,
        description=d.description,
        spec=_struct(d.spec),
        create_time=timestamp(d.created_at),
    )


def step_pb(s: Step) -> workflow_pb2.RunStep:
    return workflow_pb2.RunStep(
        id=s.id,
        type=s.type,
        status=_STEP_STATUS[s.status],
        attempts=s.attempts,
        output=_struct(s.output),
        error=s.error,
        approval_id=str(s.approval_id) if s.approval_id else "",
        update_time=timestamp(s.updated_at),
    )


def run_pb(r: Run) -> workflow_pb2.Run:
    return workflow_pb2.Run(
        id=str(r.id),
        workflow_name=r.workflow_name,
        workflow_version=r.workflow_version,
        status=_RUN_STATUS[r.status],
        input=_struct(r.input),
        output=_struct(r.output),
        error=r.error,
        steps=[step_pb(s) for s in r.steps],
        attempt=r.attempt,
        schedule_id=str(r.schedule_id) if r.schedule_id else "",
        create_time=timestamp(r.created_at),
        update_time=timestamp(r.updated_at),
    )


def approval_pb(a: Approval) -> workflow_pb2.Approval:
    return workflow_pb2.Approval(
        id=str(a.id),
        role=a.role,
        title=a.title,
        details=_struct(a.details),
        status=_APPROVAL_STATUS[a.status],
        on_expiry=_ON_EXPIRY[a.on_expiry],
        expire_time=timestamp(a.expires_at),
        decided_by=a.decided_by,
        comment=a.comment,
        decide_time=timestamp(a.decided_at) if a.decided_at else None,
        run_id=str(a.run_id) if a.run_id else "",
        step_id=a.step_id,
        requested_by=a.requested_by,
        create_time=timestamp(a.created_at),
    )


def _caller() -> tuple[str, str]:
    """(subject, role) of the verified caller."""
    identity = identity_var.get()
    if identity is None:
        return "system", ""
    return identity.subject, identity.role


def _name(value: str, field: str) -> str:
    name = value.strip()
    if not NAME.fullmatch(name):
        raise InvalidArgument(
            f"{field} must be 1-100 letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit), got {value!r}",
            field=field,
        )
    return name


class WorkflowServicer(workflow_pb2_grpc.WorkflowServiceServicer):
    def __init__(
        self,
        store: WorkflowStore,
        temporal: Client,
        notifications: Notifications,
        tools: ToolCaller,
        *,
        task_queue: str,
        heartbeat_seconds: float,
    ) -> None:
        self.store = store
        self.temporal = temporal
        self.notifications = notifications
        self.tools = tools
        self.task_queue = task_queue
        self.heartbeat_seconds = heartbeat_seconds

    async def CreateWorkflowDefinition(  # noqa: N802 (gRPC method name)
        self, request: workflow_pb2.CreateWorkflowDefinitionRequest, context: ServicerContext
    ) -> workflow_pb2.WorkflowDefinition:
        client_id = require_client_id()
        name = _name(request.name, "name")
        description = validation.text(
            request.description, "description", max_length=2000, required=False
        )
        spec = _dict(request.spec)
        validated = validate_spec(spec, tool_unavailable=self.tools.unavailable)
        for step in validated.steps:
            if step.type == "sub_workflow":
                child = str(step.with_.get("workflow"))
                if child != name and not await self.store.get_definition(client_id, child, 0):
                    raise InvalidArgument(
                        f"spec: step {step.id!r} runs workflow {child!r}, which does not exist",
                        field="spec",
                    )
        # Stored normalised: defaults filled in, numbers typed (a Struct's numbers are floats).
        normalised = validated.model_dump(by_alias=True, exclude_none=True)
        stored = await self.store.create_definition(client_id, name, description, normalised)
        return _definition_pb(stored)

    async def GetWorkflowDefinition(  # noqa: N802
        self, request: workflow_pb2.GetWorkflowDefinitionRequest, context: ServicerContext
    ) -> workflow_pb2.WorkflowDefinition:
        client_id = require_client_id()
        name, _, version = request.id.partition("@")
        if version and not version.isdigit():
            raise InvalidArgument(f"id: the version after '@' must be a number, got {version!r}")
        found = await self.store.get_definition(client_id, _name(name, "id"), int(version or 0))
        if found is None:
            raise NotFound(f"workflow definition {request.id} not found")
        return _definition_pb(found)

    async def ListWorkflowDefinitions(  # noqa: N802
        self, request: workflow_pb2.ListWorkflowDefinitionsRequest, context: ServicerContext
    ) -> workflow_pb2.ListWorkflowDefinitionsResponse:
        client_id = require_client_id()
        found, token = await self.store.list_definitions(
            client_id, request.page.page_token, request.page.page_size
        )
        return workflow_pb2.ListWorkflowDefinitionsResponse(
            definitions=[_definition_pb(d) for d in found],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def StartRun(  # noqa: N802
        self, request: workflow_pb2.StartRunRequest, context: ServicerContext
    ) -> workflow_pb2.Run:
        client_id = require_client_id()
        name = _name(request.workflow_name, "workflow_name")
        definition = await self.store.get_definition(client_id, name, request.workflow_version)
        if definition is None:
            version = f" version {request.workflow_version}" if request.workflow_version else ""
            raise NotFound(f"workflow {name!r}{version} not found")
        key = validation.text(
            request.idempotency_key, "idempotency_key", max_length=200, required=False
        )
        run_input = _dict(request.input)
        digest = hashlib.sha256(
            json.dumps([str(definition.id), run_input], sort_keys=True).encode()
        ).hexdigest()
        run_id = new_id()
        workflow_id = f"run-{run_id}-1"
        run, created = await self.store.create_run(
            client_id,
            run_id=run_id,
            definition=definition,
            workflow_id=workflow_id,
            input=run_input,
            steps=[(s["id"], s["type"]) for s in definition.spec["steps"]],
            idempotency_key=key or None,
            request_hash=digest,
        )
        if not created and run.request_hash != digest:
            raise InvalidArgument(
                "idempotency_key was used for another workflow or input", field="idempotency_key"
            )
        if not created and run.status in TERMINAL_RUN:
            return await self._run(client_id, run.id)
        # Also for a repeated key: the first start may have stored the run and died before
        # Temporal took the workflow; starting an existing workflow id changes nothing.
        await self._start(
            run.workflow_id,
            RunInput(
                client_id=client_id,
                run_id=str(run.id),
                workflow_name=definition.name,
                workflow_version=definition.version,
                input=run_input,
                heartbeat_seconds=self.heartbeat_seconds,
            ),
        )
        return await self._run(client_id, run.id)

    async def _start(self, workflow_id: str, run: RunInput) -> None:
        try:
            await self.temporal.start_workflow(
                WORKFLOW_RUN,
                run,
                id=workflow_id,
                task_queue=self.task_queue,
                # A workflow id runs once, even after it closed: a repeated start is no new run.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise Unavailable(f"the workflow engine refused the start: {exc.message}") from exc
        except Exception as exc:  # WorkflowAlreadyStartedError: the same run, started before
            if type(exc).__name__ != "WorkflowAlreadyStartedError":
                raise

    async def _run(self, client_id: str, run_id: UUID) -> workflow_pb2.Run:
        run = await self.store.get_run(client_id, run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run_pb(run)

    async def GetRun(  # noqa: N802
        self, request: workflow_pb2.GetRunRequest, context: ServicerContext
    ) -> workflow_pb2.Run:
        return await self._run(require_client_id(), parse_id(request.id))

    async def ListRuns(  # noqa: N802
        self, request: workflow_pb2.ListRunsRequest, context: ServicerContext
    ) -> workflow_pb2.ListRunsResponse:
        client_id = require_client_id()
        status = ""
        if request.status:
            names = {v: k for k, v in _RUN_STATUS.items()}
            if request.status not in names:
                raise InvalidArgument(f"status: unknown value {request.status}", field="status")
            status = names[request.status]
        runs, token = await self.store.list_runs(
            client_id,
            request.workflow_name.strip(),
            status,
            request.page.page_token,
            request.page.page_size,
        )
        return workflow_pb2.ListRunsResponse(
            runs=[run_pb(r) for r in runs], page=common_pb2.PageInfo(next_page_token=token)
        )

    async def CancelRun(  # noqa: N802
        self, request: workflow_pb2.CancelRunRequest, context: ServicerContext
    ) -> workflow_pb2.Run:
        client_id = require_client_id()
        run = await self.store.get_run(client_id, parse_id(request.id))
        if run is None:
            raise NotFound(f"run {request.id} not found")
        if run.status not in TERMINAL_RUN:
            try:
                await self.temporal.get_workflow_handle(run.workflow_id).cancel()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise Unavailable(f"the workflow engine refused: {exc.message}") from exc
        return run_pb(run)

    async def RetryRun(  # noqa: N802
        self, request: workflow_pb2.RetryRunRequest, context: ServicerContext
    ) -> workflow_pb2.Run:
        client_id = require_client_id()
        run = await self.store.get_run(client_id, parse_id(request.id))
        if run is None:
            raise NotFound(f"run {request.id} not found")
        if run.status != "failed":
            raise FailedPrecondition(f"run {run.id} is {run.status}: only a failed run is retried")
        reuse = {s.id: s.output or {} for s in run.steps if s.status == "succeeded"}
        workflow_id = f"run-{run.id}-{run.attempt + 1}"
        retried = await self.store.start_retry(client_id, run.id, workflow_id)
        if retried is None:
            raise FailedPrecondition(f"run {run.id} is no longer failed")
        await self._start(
            workflow_id,
            RunInput(
                client_id=client_id,
                run_id=str(run.id),
                workflow_name=run.workflow_name,
                workflow_version=run.workflow_version,
                input=run.input,
                attempt=retried.attempt,
                reuse=reuse,
                heartbeat_seconds=self.heartbeat_seconds,
            ),
        )
        return run_pb(retried)

    async def WatchRun(  # noqa: N802
        self, request: workflow_pb2.WatchRunRequest, context: ServicerContext
    ) -> AsyncIterator[workflow_pb2.RunUpdate]:
        client_id = require_client_id()
        run_id = parse_id(request.id)
        seen: dict[str, Any] = {}
        async with self.notifications.subscribe(NOTIFY_CHANNEL, str(run_id)) as changed:
            while True:
                changed.clear()
                run = await self.store.get_run(client_id, run_id)
                if run is None:
                    raise NotFound(f"run {request.id} not found")
                for step in run.steps:
                    state = (step.status, step.attempts, step.updated_at)
                    if seen.get(step.id) != state:
                        seen[step.id] = state
                        yield workflow_pb2.RunUpdate(step=step_pb(step))
                if run.status in TERMINAL_RUN:
                    yield workflow_pb2.RunUpdate(finished=run_pb(run))
                    return
                # A missed notification (a reconnect) costs at most this long.
                await changed.wait_for(30.0)


class ApprovalServicer(workflow_pb2_grpc.ApprovalServiceServicer):
    def __init__(
        self, store: WorkflowStore, temporal: Client, notifications: Notifications, task_queue: str
    ) -> None:
        self.store = store
        self.temporal = temporal
        self.notifications = notifications
        self.task_queue = task_queue

    async def RequestApproval(  # noqa: N802
        self, request: workflow_pb2.RequestApprovalRequest, context: ServicerContext
    ) -> workflow_pb2.Approval:
        client_id = require_client_id()
        key = validation.text(request.idempotency_key, "idempotency_key", max_length=200)
        role = validation.text(request.role, "role", max_length=100)
        title = validation.text(request.title, "title", max_length=500)
        seconds = request.expires_in_seconds or 24 * 3600
        validation.int_range(seconds, "expires_in_seconds", low=1, high=MAX_APPROVAL_SECONDS)
        if request.on_expiry not in _ON_EXPIRY_IN:
            raise InvalidArgument(
                f"on_expiry: unknown value {request.on_expiry}", field="on_expiry"
            )
        details = _dict(request.details)
        if "\\u0000" in json.dumps(details):
            # PostgreSQL's jsonb cannot hold NUL; refused here rather than failing the insert.
            raise InvalidArgument("details: no text may contain NUL (\\u0000)", field="details")
        subject, _ = _caller()
        identity = identity_var.get()
        requested_by = identity.subject if identity and identity.kind == "service" else subject
        approval_id = derived_id(client_id, "approval", key)
        workflow_id = f"approval-{approval_id}"
        expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
        ask = ApprovalAsk(
            client_id=client_id,
            approval_id=approval_id,
            idempotency_key=key,
            role=role,
            title=title,
            details=details,
            on_expiry=_ON_EXPIRY_IN[request.on_expiry],
            expires_at=expires_at.isoformat(),
            requested_by=requested_by,
        )
        approval, _ = await self.store.open_approval(
            client_id,
            approval_id=UUID(approval_id),
            idempotency_key=key,
            role=role,
            title=title,
            details=ask.details,
            on_expiry=ask.on_expiry,
            expires_at=expires_at,
            workflow_id=workflow_id,
            requested_by=requested_by,
        )
        if approval.status == "pending":
            ask.expires_at = approval.expires_at.isoformat()
            try:
                await self.temporal.start_workflow(
                    APPROVAL_WAIT, ask, id=workflow_id, task_queue=self.task_queue
                )
            except Exception as exc:  # a repeated request: the wait is already running
                if type(exc).__name__ != "WorkflowAlreadyStartedError":
                    raise
        return approval_pb(approval)

    async def _get(self, client_id: str, approval_id: str) -> Approval:
        found = await self.store.get_approval(client_id, parse_id(approval_id))
        if found is None:
            raise NotFound(f"approval {approval_id} not found")
        return found

    async def GetApproval(  # noqa: N802
        self, request: workflow_pb2.GetApprovalRequest, context: ServicerContext
    ) -> workflow_pb2.Approval:
        return approval_pb(await self._get(require_client_id(), request.id))

    async def ListApprovals(  # noqa: N802
        self, request: workflow_pb2.ListApprovalsRequest, context: ServicerContext
    ) -> workflow_pb2.ListApprovalsResponse:
        client_id = require_client_id()
        status = ""
        if request.status:
            names = {v: k for k, v in _APPROVAL_STATUS.items()}
            if request.status not in names:
                raise InvalidArgument(f"status: unknown value {request.status}", field="status")
            status = names[request.status]
        role = ""
        if request.for_me:
            _, role = _caller()
            if role == ADMIN_ROLE:
                role = ""
            elif not role:
                raise PermissionDenied("for_me needs a caller with a role")
        found, token = await self.store.list_approvals(
            client_id, status, role, request.page.page_token, request.page.page_size
        )
        return workflow_pb2.ListApprovalsResponse(
            approvals=[approval_pb(a) for a in found],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def DecideApproval(  # noqa: N802
        self, request: workflow_pb2.DecideApprovalRequest, context: ServicerContext
    ) -> workflow_pb2.Approval:
        client_id = require_client_id()
        comment = validation.text(request.comment, "comment", max_length=2000, required=False)
        approval = await self._get(client_id, request.id)
        subject, role = _caller()
        if role not in (approval.role, ADMIN_ROLE):
            raise PermissionDenied(
                f"approval {approval.id} is for role '{approval.role}'; the caller's role is "
                f"'{role or 'none'}'"
            )
        status = "approved" if request.approve else "rejected"
        decided, changed = await self.store.decide_approval(
            client_id, approval.id, status, subject, comment
        )
        assert decided is not None
        if not changed and decided.status != status:
            raise FailedPrecondition(
                f"approval {approval.id} is already {decided.status}"
                + (f" by {decided.decided_by}" if decided.decided_by else "")
            )
        # Also when repeated: the signal of the first call may have been lost.
        if decided.status == status and decided.decided_by == subject:
            await self._signal(decided)
        return approval_pb(decided)

    async def _signal(self, approval: Approval) -> None:
        handle: WorkflowHandle[Any, Any] = self.temporal.get_workflow_handle(approval.workflow_id)
        try:
            await handle.signal(
                DECIDE_SIGNAL,
                Decision(str(approval.id), approval.status, approval.decided_by, approval.comment),
            )
        except RPCError as exc:
            # The workflow ended meanwhile (cancelled, or it expired and read the decision).
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise Unavailable(
                    f"the decision is recorded; telling the waiting work failed ({exc.message}): "
                    "repeat the same decision to retry"
                ) from exc

    async def WaitApproval(  # noqa: N802
        self, request: workflow_pb2.WaitApprovalRequest, context: ServicerContext
    ) -> workflow_pb2.Approval:
        client_id = require_client_id()
        wait = float(request.wait_seconds or 30)
        validation.int_range(int(wait), "wait_seconds", low=1, high=60)
        left = remaining_time()
        if left is not None:
            wait = min(wait, max(0.0, left - 0.5))
        deadline = asyncio.get_running_loop().time() + wait
        async with self.notifications.subscribe(APPROVAL_CHANNEL, request.id) as changed:
            while True:
                changed.clear()
                approval = await self._get(client_id, request.id)
                remaining = deadline - asyncio.get_running_loop().time()
                if approval.status != "pending" or remaining <= 0:
                    return approval_pb(approval)
                await changed.wait_for(remaining)


class ScheduleServicer(workflow_pb2_grpc.ScheduleServiceServicer):
    def __init__(
        self, store: WorkflowStore, temporal: Client, *, task_queue: str, heartbeat_seconds: float
    ) -> None:
        self.store = store
        self.temporal = temporal
        self.task_queue = task_queue
        self.heartbeat_seconds = heartbeat_seconds

    async def CreateSchedule(  # noqa: N802
        self, request: workflow_pb2.CreateScheduleRequest, context: ServicerContext
    ) -> workflow_pb2.Schedule:
        client_id = require_client_id()
        name = _name(request.workflow_name, "workflow_name")
        if await self.store.get_definition(client_id, name, request.workflow_version) is None:
            raise InvalidArgument(
                f"workflow_name: workflow {name!r} not found", field="workflow_name"
            )
        cron = validation.text(request.cron, "cron", max_length=200)
        if len(cron.split()) not in (5, 7) or not re.fullmatch(r"[0-9A-Za-z*/,\- ]+", cron):
            raise InvalidArgument(
                "cron: five fields (minute hour day-of-month month day-of-week), or seven "
                f"(second first, year last), got {cron!r}",
                field="cron",
            )
        zone = request.time_zone.strip() or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(
                f"time_zone: {zone!r} is not an IANA time zone", field="time_zone"
            ) from None
        note = validation.text(request.note, "note", max_length=500, required=False)
        schedule_id = new_id()
        run_input = _dict(request.input)
        try:
            await self.temporal.create_schedule(
                _temporal_id(schedule_id),
                Schedule(
                    action=ScheduleActionStartWorkflow(
                        WORKFLOW_RUN,
                        RunInput(
                            client_id=client_id,
                            run_id="",
                            workflow_name=name,
                            workflow_version=request.workflow_version,
                            input=run_input,
                            schedule_id=str(schedule_id),
                            heartbeat_seconds=self.heartbeat_seconds,
                        ),
                        id=f"schedule-{schedule_id}",
                        task_queue=self.task_queue,
                    ),
                    spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=zone),
                    state=ScheduleState(paused=request.paused, note=note),
                ),
            )
        except ScheduleAlreadyRunningError:  # a fresh UUID: cannot happen
            raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(f"cron: {exc.message}", field="cron") from exc
            raise Unavailable(f"the workflow engine refused the schedule: {exc.message}") from exc
        row = await self.store.create_schedule(
            client_id,
            schedule_id=schedule_id,
            workflow_name=name,
            workflow_version=request.workflow_version,
            cron=cron,
            time_zone=zone,
            input=run_input,
            note=note,
        )
        return await self._describe(row)

    async def _row(self, request_id: str) -> ScheduleRow:
        row = await self.store.get_schedule(require_client_id(), parse_id(request_id))
        if row is None:
            raise NotFound(f"schedule {request_id} not found")
        return row

    async def _describe(self, row: ScheduleRow) -> workflow_pb2.Schedule:
        described = await self.temporal.get_schedule_handle(_temporal_id(row.id)).describe()
        paused = described.schedule.state.paused
        recent = [
            derived_id(a.action.workflow_id)
            for a in described.info.recent_actions
            if hasattr(a.action, "workflow_id")
        ]
        return workflow_pb2.Schedule(
            id=str(row.id),
            workflow_name=row.workflow_name,
            workflow_version=row.workflow_version,
            cron=row.cron,
            time_zone=row.time_zone,
            input=_struct(row.input),
            paused=paused,
            next_run_time=[]
            if paused
            else [timestamp(t) for t in described.info.next_action_times],
            recent_run_ids=recent,
            note=described.schedule.state.note or row.note,
            create_time=timestamp(row.created_at),
        )

    async def GetSchedule(  # noqa: N802
        self, request: workflow_pb2.GetScheduleRequest, context: ServicerContext
    ) -> workflow_pb2.Schedule:
        return await self._describe(await self._row(request.id))

    async def ListSchedules(  # noqa: N802
        self, request: workflow_pb2.ListSchedulesRequest, context: ServicerContext
    ) -> workflow_pb2.ListSchedulesResponse:
        client_id = require_client_id()
        rows, token = await self.store.list_schedules(
            client_id, request.page.page_token, request.page.page_size
        )
        return workflow_pb2.ListSchedulesResponse(
            schedules=[await self._describe(r) for r in rows],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def PauseSchedule(  # noqa: N802
        self, request: workflow_pb2.PauseScheduleRequest, context: ServicerContext
    ) -> workflow_pb2.Schedule:
        row = await self._row(request.id)
        note = validation.text(request.note, "note", max_length=500, required=False)
        await self.temporal.get_schedule_handle(_temporal_id(row.id)).pause(note=note or "paused")
        return await self._describe(row)

    async def ResumeSchedule(  # noqa: N802
        self, request: workflow_pb2.ResumeScheduleRequest, context: ServicerContext
    ) -> workflow_pb2.Schedule:
        row = await self._row(request.id)
        note = validation.text(request.note, "note", max_length=500, required=False)
        await self.temporal.get_schedule_handle(_temporal_id(row.id)).unpause(
            note=note or "resumed"
        )
        return await self._describe(row)

    async def DeleteSchedule(  # noqa: N802
        self, request: workflow_pb2.DeleteScheduleRequest, context: ServicerContext
    ) -> workflow_pb2.DeleteScheduleResponse:
        row = await self._row(request.id)
        try:
            await self.temporal.get_schedule_handle(_temporal_id(row.id)).delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise Unavailable(f"the workflow engine refused: {exc.message}") from exc
        await self.store.delete_schedule(require_client_id(), row.id)
        return workflow_pb2.DeleteScheduleResponse()


def _temporal_id(schedule_id: UUID) -> str:
    return f"edrs-schedule-{schedule_id}"
