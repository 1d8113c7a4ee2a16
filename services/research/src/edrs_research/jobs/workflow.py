"""The ResearchJob workflow: plan, search, (fetch and score: the web path), draft and verify.

Workflow code is replayed after a crash, so it only sequences; every effect is an activity
(jobs/activities.py), each of which records what it did in the job's step records before it
returns, so a retried or resumed activity never searches or fetches the same thing twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from edrs_research.jobs.messages import RESEARCH_JOB, JobEnd, JobRef

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
BOOKKEEPING_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10))


def _reason(exc: BaseException) -> str:
    while isinstance(exc, ActivityError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, ApplicationError):
        return exc.message
    return str(exc)


@workflow.defn(name=RESEARCH_JOB)
class ResearchJob:
    @workflow.run
    async def run(self, job: JobRef, heartbeat_seconds: float) -> str:
        try:
            for step in ("research.plan", "research.search", "research.fetch", "research.draft"):
                await workflow.execute_activity(
                    step,
                    job,
                    start_to_close_timeout=timedelta(hours=1),
                    heartbeat_timeout=timedelta(seconds=heartbeat_seconds),
                    retry_policy=STEP_RETRY,
                )
        except asyncio.CancelledError:
            await self._end(JobEnd(job.client_id, job.job_id, "cancelled", "cancelled"))
            raise
        except ActivityError as exc:
            await self._end(JobEnd(job.client_id, job.job_id, "failed", _reason(exc)))
            return "failed"
        return "completed"

    async def _end(self, end: JobEnd) -> None:
        # After a cancel the workflow may still run activities: the job records how it ended.
        await workflow.execute_activity(
            "research.end",
            end,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=BOOKKEEPING_RETRY,
        )
