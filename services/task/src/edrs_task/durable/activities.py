"""The activities of the run and approval workflows: everything that touches the world.

Idempotent by construction: a side effect's key is the Temporal workflow id + activity id, and its
result is recorded in the effects ledger in the same transaction that marks its step done, so a
retried activity (a worker killed after the effect, a lost completion) returns the recorded
result instead of acting again; the key also travels to the tool, for tools that deduplicate.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

from edrs_core import ServiceError
from edrs_core.context import request_context
from edrs_core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from temporalio import activity
from temporalio.exceptions import ApplicationError

from edrs_task.definitions import validate_spec
from edrs_task.durable.charges import StepBudgets, step_key
from edrs_task.durable.messages import (
    ApprovalAsk,
    Decision,
    Prepared,
    RunInput,
    RunReport,
    StepCall,
    StepReport,
    derived_id,
)
from edrs_task.durable.steps import StepExecutors, StepRefused, ToolFailed
from edrs_task.store.workflows import WorkflowStore

# Errors a retry cannot fix: the run's step fails at once.
PERMANENT = (StepRefused, InvalidArgument, FailedPrecondition, NotFound, PermissionDenied)


class WorkflowActivities:
    def __init__(
        self, store: WorkflowStore, executors: StepExecutors, budgets: StepBudgets
    ) -> None:
        self.store = store
        self.executors = executors
        self.budgets = budgets

    @activity.defn(name="edrs.prepare_run")
    async def prepare_run(self, run: RunInput) -> Prepared:
        """The run's row (created here for scheduled and child runs) and its definition's steps."""
        definition = await self.store.get_definition(
            run.client_id, run.workflow_name, run.workflow_version
        )
        if definition is None:
            version = f" version {run.workflow_version}" if run.workflow_version else ""
            raise ApplicationError(
                f"workflow {run.workflow_name!r}{version} does not exist", non_retryable=True
            )
        spec = validate_spec(definition.spec)
        run_id = run.run_id or derived_id(activity.info().workflow_id or "")
        await self.store.create_run(
            run.client_id,
            run_id=UUID(run_id),
            definition=definition,
            workflow_id=activity.info().workflow_id or "",
            input=run.input,
            steps=[(s.id, s.type) for s in spec.steps],
            schedule_id=UUID(run.schedule_id) if run.schedule_id else None,
            parent_run_id=UUID(run.parent_run_id) if run.parent_run_id else None,
        )
        return Prepared(run_id=run_id, spec=spec.model_dump(by_alias=True, exclude_none=True))

    @activity.defn(name="edrs.execute_step")
    async def execute_step(self, call: StepCall) -> dict[str, Any]:
        info = activity.info()
        key = f"{info.workflow_id}/{info.activity_id}"
        done = await self.store.effect(key)
        if done is not None:
            return done
        run_id = UUID(call.run_id)
        if call.kind == "step":
            await self.store.set_step(call.client_id, run_id, call.step_id, "running", started=True)
        with request_context(call.client_id, None):
            try:
                output = await self._charged(
                    call,
                    key,
                    step_key(info.workflow_id or "", info.activity_id),
                    info.heartbeat_timeout,
                )
            except PERMANENT as exc:
                raise ApplicationError(_message(exc), non_retryable=True) from None
            except ServiceError as exc:
                raise ApplicationError(_message(exc)) from None
        return await self.store.record_effect(
            key, call.client_id, run_id, call.step_id, call.kind, output
        )

    async def _charged(
        self, call: StepCall, key: str, budget_key: str, heartbeat: Any
    ) -> dict[str, Any]:
        """The step run within the budgets that apply: reserved before, settled after (a tool
        that answered with an error counts its call). A failed attempt keeps its hold for the
        next attempt (same key); the workflow releases it when the step has failed for good
        (report_step)."""
        charge = await self.budgets.charge(call.type, call.params)
        if charge is not None:
            await self.budgets.reserve(call.client_id, budget_key, call.run_id, charge)
        try:
            output = await _heartbeating(self.executors.run(call.type, call.params, key), heartbeat)
        except ToolFailed:
            if charge is not None:
                await self.budgets.settle(call.client_id, budget_key, call.type, {})
            raise
        if charge is not None:
            await self.budgets.settle(call.client_id, budget_key, call.type, output)
        return output

    @activity.defn(name="edrs.report_step")
    async def report_step(self, report: StepReport) -> None:
        if report.status == "failed":
            # The step (or its compensation) failed for good: what its attempts still hold is
            # released. Same workflow, so the same keys as its activities'.
            workflow_id = activity.info().workflow_id or ""
            for activity_id in (f"step-{report.step_id}", f"compensate-{report.step_id}"):
                await self.budgets.release(report.client_id, step_key(workflow_id, activity_id))
        await self.store.set_step(
            report.client_id,
            UUID(report.run_id),
            report.step_id,
            report.status,
            output=report.output,
            error=report.error,
            started=report.started,
        )

    @activity.defn(name="edrs.report_run")
    async def report_run(self, report: RunReport) -> None:
        await self.store.set_run_status(
            report.client_id,
            UUID(report.run_id),
            report.status,
            output=report.output,
            error=report.error,
        )

    @activity.defn(name="edrs.open_approval")
    async def open_approval(self, ask: ApprovalAsk) -> None:
        await self.store.open_approval(
            ask.client_id,
            approval_id=UUID(ask.approval_id),
            idempotency_key=ask.idempotency_key,
            role=ask.role,
            title=ask.title,
            details=ask.details,
            on_expiry=ask.on_expiry,
            expires_at=datetime.fromisoformat(ask.expires_at),
            workflow_id=activity.info().workflow_id or "",
            requested_by=ask.requested_by,
            run_id=UUID(ask.run_id) if ask.run_id else None,
            step_id=ask.step_id,
        )

    @activity.defn(name="edrs.expire_approval")
    async def expire_approval(self, ask: ApprovalAsk) -> Decision:
        """The approval's outcome at expiry: its on_expiry, or the decision made meanwhile (whose
        signal may not have reached the workflow)."""
        approval = await self.store.expire_approval(ask.client_id, UUID(ask.approval_id))
        return Decision(
            approval_id=ask.approval_id,
            status=approval.status,
            decided_by=approval.decided_by,
            comment=approval.comment,
        )

    def all(self) -> list[Any]:
        return [
            self.prepare_run,
            self.execute_step,
            self.report_step,
            self.report_run,
            self.open_approval,
            self.expire_approval,
        ]


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


async def _heartbeating(work: Any, heartbeat_timeout: Any) -> dict[str, Any]:
    """Awaits `work`, heartbeating meanwhile: a worker that dies mid-step is noticed within the
    heartbeat timeout (not the step's whole timeout) and the step is retried elsewhere."""
    task: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(work)
    interval = heartbeat_timeout.total_seconds() / 3 if heartbeat_timeout else None
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():
            task.cancel()
