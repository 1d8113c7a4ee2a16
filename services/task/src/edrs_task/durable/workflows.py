"""The workflows: one generic interpreter that runs any definition as a DAG (a saga: a failed step
compensates the completed ones in reverse order), and the wait for one approval.

Workflow code is replayed after a crash, so it only decides; every effect and every read of the
world is an activity (durable/activities.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from edrs_task.definitions import ACTIVITY_TYPES, resolve
    from edrs_task.durable.messages import (
        APPROVAL_WAIT,
        DECIDE_SIGNAL,
        WORKFLOW_RUN,
        ApprovalAsk,
        Decision,
        Prepared,
        RunInput,
        RunReport,
        StepCall,
        StepReport,
        derived_id,
    )

# Bookkeeping activities (reports to the task service's database) retry until they succeed.
BOOKKEEPING_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10))
COMPENSATION_RETRY = RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=60))


async def _bookkeeping(name: str, arg: Any, result_type: type | None = None) -> Any:
    return await workflow.execute_activity(
        name,
        arg,
        result_type=result_type,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=BOOKKEEPING_RETRY,
    )


class StepFailed(Exception):
    def __init__(self, step_id: str, reason: str) -> None:
        super().__init__(f"step {step_id!r} failed: {reason}")
        self.step_id = step_id
        self.reason = reason


def _reason(exc: BaseException) -> str:
    """The root cause's message of an activity or child workflow failure."""
    while isinstance(exc, ActivityError | ChildWorkflowError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, ApplicationError):
        return exc.message
    return str(exc) or type(exc).__name__


class _Decisions:
    """Decisions received by signal, first one per approval wins."""

    def __init__(self) -> None:
        self.by_id: dict[str, Decision] = {}

    def add(self, decision: Decision) -> None:
        self.by_id.setdefault(decision.approval_id, decision)

    async def wait(self, ask: ApprovalAsk, expires_in: timedelta) -> Decision:
        await _bookkeeping("edrs.open_approval", ask)
        try:
            await workflow.wait_condition(lambda: ask.approval_id in self.by_id, timeout=expires_in)
        except TimeoutError:
            decided: Decision = await _bookkeeping("edrs.expire_approval", ask, Decision)
            self.add(decided)
        return self.by_id[ask.approval_id]


@workflow.defn(name=WORKFLOW_RUN)
class WorkflowRun:
    def __init__(self) -> None:
        self.decisions = _Decisions()

    @workflow.signal(name=DECIDE_SIGNAL)
    def decide(self, decision: Decision) -> None:
        self.decisions.add(decision)

    @workflow.run
    async def run(self, run: RunInput) -> dict[str, Any]:
        prepared: Prepared = await _bookkeeping("edrs.prepare_run", run, Prepared)
        self.client_id, self.run_id, self.input = run.client_id, prepared.run_id, run
        steps = {s["id"]: s for s in prepared.spec["steps"]}
        outputs: dict[str, Any] = {k: v for k, v in run.reuse.items() if k in steps}
        # Completed steps in completion order: compensated in reverse if the run fails.
        completed: list[str] = [sid for sid in steps if sid in outputs]
        pending = [sid for sid in steps if sid not in outputs]
        running: dict[asyncio.Task[dict[str, Any]], str] = {}
        failure: StepFailed | None = None
        cancelled = False
        try:
            while pending or running:
                for sid in [
                    s for s in pending if set(steps[s].get("dependsOn", [])) <= set(outputs)
                ]:
                    pending.remove(sid)
                    running[asyncio.ensure_future(self._step(steps[sid], outputs))] = sid
                if not running:
                    break
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    sid = running.pop(task)
                    try:
                        outputs[sid] = task.result()
                        completed.append(sid)
                    except StepFailed as exc:
                        failure = failure or exc
                if failure is not None:
                    break
        except asyncio.CancelledError:
            cancelled = True
        if failure is None and not cancelled:
            await self._report_run("succeeded", output=outputs)
            return outputs
        # Stop what still runs; a step that finishes while being stopped counts as completed.
        for task in running:
            task.cancel()
        for task, sid in running.items():
            try:
                outputs[sid] = await task
                completed.append(sid)
            except (StepFailed, asyncio.CancelledError, ActivityError, ChildWorkflowError):
                await self._report_step(sid, "failed", error="stopped: the run ended")
        for sid in reversed(completed):
            await self._compensate(steps[sid], outputs)
        if cancelled:
            await self._report_run("cancelled", error="cancelled")
            raise asyncio.CancelledError
        assert failure is not None
        await self._report_run("failed", error=str(failure))
        raise ApplicationError(str(failure), non_retryable=True)

    async def _step(self, step: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        sid, stype = step["id"], step["type"]
        scope = {"input": self.input.input, "steps": {k: {"output": v} for k, v in outputs.items()}}
        params = resolve(step.get("with", {}), scope)
        try:
            if stype in ACTIVITY_TYPES:
                retry = step.get("retry", {})
                result: dict[str, Any] = await workflow.execute_activity(
                    "edrs.execute_step",
                    StepCall(self.client_id, self.run_id, sid, stype, params),
                    result_type=dict,
                    activity_id=f"step-{sid}",
                    start_to_close_timeout=timedelta(seconds=step.get("timeoutSeconds", 300)),
                    heartbeat_timeout=timedelta(seconds=self.input.heartbeat_seconds),
                    retry_policy=RetryPolicy(
                        maximum_attempts=retry.get("maxAttempts", 3),
                        initial_interval=timedelta(
                            seconds=retry.get("initialIntervalSeconds", 1.0)
                        ),
                        backoff_coefficient=retry.get("backoffCoefficient", 2.0),
                        maximum_interval=timedelta(seconds=retry.get("maxIntervalSeconds", 60.0)),
                    ),
                )
                return result
            await self._report_step(sid, "running", started=True)
            if stype == "wait":
                await workflow.sleep(timedelta(seconds=float(params["seconds"])))
                output: dict[str, Any] = {"waitedSeconds": params["seconds"]}
            elif stype == "approval":
                output = await self._approval(sid, params)
            else:  # sub_workflow
                output = await workflow.execute_child_workflow(
                    WorkflowRun.run,
                    RunInput(
                        client_id=self.client_id,
                        run_id="",
                        workflow_name=params["workflow"],
                        workflow_version=int(params.get("version", 0)),
                        input=params.get("input", {}),
                        parent_run_id=self.run_id,
                        heartbeat_seconds=self.input.heartbeat_seconds,
                    ),
                    id=f"{workflow.info().workflow_id}.{sid}",
                )
            await self._report_step(sid, "succeeded", output=output)
            return output
        except (ActivityError, ChildWorkflowError) as exc:
            reason = _reason(exc)
            await self._report_step(sid, "failed", error=reason)
            raise StepFailed(sid, reason) from None
        except StepFailed as exc:
            await self._report_step(sid, "failed", error=exc.reason)
            raise

    async def _approval(self, sid: str, params: dict[str, Any]) -> dict[str, Any]:
        wid = workflow.info().workflow_id
        expires_in = timedelta(seconds=int(params.get("expiresInSeconds", 86400)))
        ask = ApprovalAsk(
            client_id=self.client_id,
            approval_id=derived_id(self.client_id, wid, sid),
            idempotency_key=f"{wid}/{sid}",
            role=params["role"],
            title=params["title"],
            details=params.get("details", {}),
            on_expiry=params.get("onExpiry", "fail"),
            expires_at=(workflow.now() + expires_in).isoformat(),
            requested_by="task",
            run_id=self.run_id,
            step_id=sid,
        )
        decision = await self.decisions.wait(ask, expires_in)
        await self._report_run("running")
        if decision.status != "approved":
            how = (
                "expired" if decision.status == "expired" else f"rejected by {decision.decided_by}"
            )
            raise StepFailed(
                sid, f"approval {how}{': ' + decision.comment if decision.comment else ''}"
            )
        return {
            "approvalId": ask.approval_id,
            "decision": decision.status,
            "decidedBy": decision.decided_by,
            "comment": decision.comment,
        }

    async def _compensate(self, step: dict[str, Any], outputs: dict[str, Any]) -> None:
        compensation = step.get("compensation")
        if not compensation:
            return
        sid = step["id"]
        scope = {"input": self.input.input, "steps": {k: {"output": v} for k, v in outputs.items()}}
        try:
            await workflow.execute_activity(
                "edrs.execute_step",
                StepCall(
                    self.client_id,
                    self.run_id,
                    sid,
                    compensation["type"],
                    resolve(compensation.get("with", {}), scope),
                    kind="compensation",
                ),
                result_type=dict,
                activity_id=f"compensate-{sid}",
                start_to_close_timeout=timedelta(seconds=compensation.get("timeoutSeconds", 300)),
                heartbeat_timeout=timedelta(seconds=self.input.heartbeat_seconds),
                retry_policy=COMPENSATION_RETRY,
            )
        except ActivityError as exc:
            await self._report_step(sid, "failed", error=f"compensation failed: {_reason(exc)}")

    async def _report_step(self, sid: str, status: str, **fields: Any) -> None:
        report = StepReport(self.client_id, self.run_id, sid, status, **fields)
        await _bookkeeping("edrs.report_step", report)

    async def _report_run(self, status: str, **fields: Any) -> None:
        report = RunReport(self.client_id, self.run_id, status, **fields)
        await _bookkeeping("edrs.report_run", report)


@workflow.defn(name=APPROVAL_WAIT)
class ApprovalWait:
    """An approval another service asked for (ApprovalService.RequestApproval): waits for the
    decision or the expiry, durably, and returns it."""

    def __init__(self) -> None:
        self.decisions = _Decisions()

    @workflow.signal(name=DECIDE_SIGNAL)
    def decide(self, decision: Decision) -> None:
        self.decisions.add(decision)

    @workflow.run
    async def run(self, ask: ApprovalAsk) -> Decision:
        expires_in = max(timedelta(0), datetime.fromisoformat(ask.expires_at) - workflow.now())
        return await self.decisions.wait(ask, expires_in)
