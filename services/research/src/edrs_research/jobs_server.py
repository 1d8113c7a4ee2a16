"""The job RPCs of ResearchService (StartJob, GetJob, ListJobs, CancelJob, WatchJob, GetReport,
ExportReport), as a mixin the research servicer composes: `self.jobs` is the JobRuntime (None
when the service has no Temporal: every job RPC then answers FAILED_PRECONDITION)."""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from edrs_core import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServicerContext,
    Unavailable,
    validation,
)
from edrs_core.context import require_client_id
from edrs_core.ids import new_id, parse_id
from edrs_core.notifications import Notifications
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.research.v1 import research_pb2
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf import json_format
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError

from edrs_research.jobs import store as states
from edrs_research.jobs.messages import RESEARCH_JOB, JobRef, workflow_id
from edrs_research.jobs.store import UPDATES_CHANNEL, JobRow, JobStore

STATES: dict[str, int] = {
    states.QUEUED: research_pb2.JOB_STATE_QUEUED,
    states.PLANNING: research_pb2.JOB_STATE_PLANNING,
    states.SEARCHING: research_pb2.JOB_STATE_SEARCHING,
    states.FETCHING: research_pb2.JOB_STATE_FETCHING,
    states.SCORING: research_pb2.JOB_STATE_SCORING,
    states.DRAFTING: research_pb2.JOB_STATE_DRAFTING,
    states.COMPLETED: research_pb2.JOB_STATE_COMPLETED,
    states.FAILED: research_pb2.JOB_STATE_FAILED,
    states.CANCELLED: research_pb2.JOB_STATE_CANCELLED,
}
QUESTION_MIN, QUESTION_MAX = 3, 2000
MAX_COLLECTIONS, MAX_DOMAINS = 100, 100
_HOST = re.compile(
    r"^(\*\.)?([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
WATCH_FALLBACK_SECONDS = 10.0


@dataclass
class JobRuntime:
    store: JobStore
    temporal: Client
    task_queue: str
    heartbeat_seconds: float
    # The task service (persona jobs' tasks); None without a `task` peer.
    tasks: task_pb2_grpc.TaskServiceAsyncStub | None
    # Wakes WatchJob when a job's update is committed (UPDATES_CHANNEL).
    notifications: Notifications
    # A web search provider is configured (EDRS_RESEARCH_SEARCH_PROVIDER).
    web: bool = False


def job_to_proto(job: JobRow) -> research_pb2.Job:
    out = research_pb2.Job(
        id=str(job.id),
        question=job.question,
        state=STATES[job.state],  # type: ignore[arg-type]
        plan=[
            research_pb2.PlanStep(sub_question=s["sub_question"], queries=s["queries"])
            for s in job.plan
        ],
        planner=job.planner,
        progress=research_pb2.JobProgress(**{k: int(v) for k, v in job.progress.items()}),
        error=job.error,
        persona_id=job.persona_id,
        task_id=job.task_id,
        create_time=timestamp(job.created_at),
        update_time=timestamp(job.updated_at),
    )
    json_format.ParseDict(job.scope, out.scope)
    if job.ended_at is not None:
        out.end_time.CopyFrom(timestamp(job.ended_at))
    return out


def _domains(values: Any, field: str) -> list[str]:
    out = []
    for i, value in enumerate(
        validation.text_list(values, field, max_items=MAX_DOMAINS, max_length=253)
    ):
        host = value.lower()
        if not _HOST.match(host):
            raise InvalidArgument(
                f"{field}[{i}] must be a host name or *.suffix, got {value!r}",
                field=f"{field}[{i}]",
            )
        out.append(host)
    return out


def validate_scope(scope: research_pb2.ResearchScope) -> research_pb2.ResearchScope:
    """The scope with its defaults filled in; INVALID_ARGUMENT naming the field otherwise."""
    collections = validation.text_list(
        scope.collections, "scope.collections", max_items=MAX_COLLECTIONS, max_length=200
    )
    if not collections and not scope.web:
        raise InvalidArgument(
            "scope has nothing to search: name collections or turn web on", field="scope"
        )
    allowed = _domains(scope.allowed_domains, "scope.allowed_domains")
    denied = _domains(scope.denied_domains, "scope.denied_domains")
    if both := sorted(set(allowed) & set(denied)):
        raise InvalidArgument(
            f"scope.allowed_domains and scope.denied_domains both name {both[0]}",
            field="scope.denied_domains",
        )
    validation.int_range(scope.recency_days, "scope.recency_days", low=0, high=36_500)
    validation.int_range(scope.depth, "scope.depth", low=0, high=3)
    validation.int_range(scope.max_sources, "scope.max_sources", low=0, high=50)
    validation.int_range(scope.max_tokens, "scope.max_tokens", low=0, high=1_000_000)
    return research_pb2.ResearchScope(
        collections=list(dict.fromkeys(collections)),
        web=scope.web,
        allowed_domains=allowed,
        denied_domains=denied,
        recency_days=scope.recency_days,
        depth=scope.depth or 1,
        max_sources=scope.max_sources or 10,
        max_tokens=scope.max_tokens or 4000,
    )


class JobRpcs:
    jobs: JobRuntime | None

    def _runtime(self) -> JobRuntime:
        if self.jobs is None:
            raise FailedPrecondition(
                "research jobs are not available: the research service has no Temporal "
                "(EDRS_RESEARCH_TEMPORAL_ADDRESS)"
            )
        return self.jobs

    async def _get_job(self, rt: JobRuntime, client_id: str, raw_id: str, field: str) -> JobRow:
        job_id = parse_id(raw_id, field)
        job = await rt.store.get(client_id, job_id)
        if job is None:
            raise NotFound(f"research job {job_id} does not exist", field=field)
        return job

    async def StartJob(  # noqa: N802 (gRPC method name)
        self, request: research_pb2.StartJobRequest, context: ServicerContext
    ) -> research_pb2.Job:
        client_id = require_client_id()
        rt = self._runtime()
        question = validation.text(request.question, "question", max_length=QUESTION_MAX)
        if len(question) < QUESTION_MIN:
            raise InvalidArgument(
                f"question is {len(question)} characters long; at least {QUESTION_MIN}",
                field="question",
            )
        if "\x00" in question:
            raise InvalidArgument("question must not contain NUL characters", field="question")
        scope = validate_scope(request.scope)
        if scope.web and not rt.web:
            raise FailedPrecondition(
                "scope.web needs a web search provider: the research service has none "
                "(EDRS_RESEARCH_SEARCH_PROVIDER)",
                field="scope.web",
            )
        persona_id = ""
        if request.persona_id:
            persona_id = str(parse_id(request.persona_id, "persona_id"))
            if rt.tasks is None:
                raise FailedPrecondition(
                    "a job with a persona needs the task service (EDRS_RESEARCH_PEERS has no "
                    "'task')",
                    field="persona_id",
                )
        job_id = new_id()
        task_id = ""
        if persona_id:
            assert rt.tasks is not None
            task = await rt.tasks.CreateTask(
                task_pb2.CreateTaskRequest(
                    title=f"Research: {question[:150]}",
                    description=f"Research job {job_id}: {question}",
                    assignee_persona_id=persona_id,
                    budget=task_pb2.TaskBudget(max_tokens=scope.max_tokens),
                )
            )
            task_id = task.id
        scope_json = json_format.MessageToDict(scope)
        job = await rt.store.create(client_id, job_id, question, scope_json, persona_id)
        if task_id:
            await rt.store.set_task(client_id, job_id, task_id)
            job = await rt.store.get(client_id, job_id) or job
        try:
            await rt.temporal.start_workflow(
                RESEARCH_JOB,
                args=[JobRef(client_id, str(job_id)), rt.heartbeat_seconds],
                id=workflow_id(str(job_id)),
                task_queue=rt.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except RPCError as exc:
            await rt.store.end(
                client_id, job_id, states.FAILED, "could not start", error=f"not started: {exc}"
            )
            raise Unavailable(f"research job {job_id} could not be started: {exc}") from None
        return job_to_proto(job)

    async def GetJob(  # noqa: N802
        self, request: research_pb2.GetJobRequest, context: ServicerContext
    ) -> research_pb2.Job:
        client_id = require_client_id()
        rt = self._runtime()
        return job_to_proto(await self._get_job(rt, client_id, request.id, "id"))

    async def ListJobs(  # noqa: N802
        self, request: research_pb2.ListJobsRequest, context: ServicerContext
    ) -> research_pb2.ListJobsResponse:
        client_id = require_client_id()
        rt = self._runtime()
        state = ""
        if request.state:
            names = {v: k for k, v in STATES.items()}
            if request.state not in names:
                raise InvalidArgument(f"state {request.state} is not a job state", field="state")
            state = names[request.state]
        jobs, token = await rt.store.list_jobs(
            client_id, state, request.page.page_token, request.page.page_size
        )
        return research_pb2.ListJobsResponse(
            jobs=[job_to_proto(j) for j in jobs], page=common_pb2.PageInfo(next_page_token=token)
        )

    async def CancelJob(  # noqa: N802
        self, request: research_pb2.CancelJobRequest, context: ServicerContext
    ) -> research_pb2.Job:
        client_id = require_client_id()
        rt = self._runtime()
        job = await self._get_job(rt, client_id, request.id, "id")
        if job.ended:
            raise FailedPrecondition(f"research job {job.id} has already ended ({job.state})")
        # The job ends CANCELLED now; the workflow's cancellation stops its running step, and
        # its late writes are dropped (an ended job takes no more updates).
        ended = await rt.store.end(client_id, job.id, states.CANCELLED, "cancelled by CancelJob")
        with contextlib.suppress(RPCError):  # it had already finished
            await rt.temporal.get_workflow_handle(workflow_id(str(job.id))).cancel()
        if ended is None:
            ended = await self._get_job(rt, client_id, request.id, "id")
            if ended.state != states.CANCELLED:
                raise FailedPrecondition(f"research job {job.id} has already ended ({ended.state})")
        return job_to_proto(ended)

    async def WatchJob(  # noqa: N802
        self, request: research_pb2.WatchJobRequest, context: ServicerContext
    ) -> AsyncIterator[research_pb2.JobUpdate]:
        client_id = require_client_id()
        rt = self._runtime()
        job = await self._get_job(rt, client_id, request.id, "id")
        yield research_pb2.JobUpdate(
            job=job_to_proto(job),
            kind="state",
            detail=job.state,
            event_time=timestamp(job.updated_at),
        )
        seq = 0
        async with rt.notifications.subscribe(UPDATES_CHANNEL, str(job.id)) as changed:
            while True:
                changed.clear()
                updates = await rt.store.updates_after(client_id, job.id, seq)
                if updates:
                    job = await rt.store.get(client_id, job.id) or job
                    current = job_to_proto(job)
                    for u in updates:
                        seq = u.seq
                        yield research_pb2.JobUpdate(
                            job=current,
                            kind=u.kind,
                            detail=u.detail,
                            url=u.url,
                            event_time=timestamp(u.created_at),
                        )
                        if u.kind == "ended":
                            return
                # Woken by the update's notification; a missed one costs at most this long.
                await changed.wait_for(WATCH_FALLBACK_SECONDS)

    async def GetReport(  # noqa: N802
        self, request: research_pb2.GetReportRequest, context: ServicerContext
    ) -> research_pb2.Report:
        client_id = require_client_id()
        return await self._report(client_id, request.job_id)

    async def _report(self, client_id: str, raw_id: str) -> research_pb2.Report:
        rt = self._runtime()
        job = await self._get_job(rt, client_id, raw_id, "job_id")
        data = await rt.store.report(client_id, job.id)
        if data is None:
            raise FailedPrecondition(
                f"research job {job.id} has no report: it is {job.state}", field="job_id"
            )
        report = research_pb2.Report.FromString(data)
        report.create_time.CopyFrom(timestamp(job.ended_at or job.updated_at))
        return report

    async def ExportReport(  # noqa: N802
        self, request: research_pb2.ExportReportRequest, context: ServicerContext
    ) -> research_pb2.ExportedReport:
        client_id = require_client_id()
        fmt = request.format or research_pb2.REPORT_FORMAT_MARKDOWN
        if fmt not in research_pb2.ReportFormat.values():
            raise InvalidArgument(f"format {fmt} is not a report format", field="format")
        report = await self._report(client_id, request.job_id)
        try:
            # Rendering is research-edges' edrs_research.export.
            export = importlib.import_module("edrs_research.export")
        except ImportError:
            raise FailedPrecondition(
                "report export is not available in this build (edrs_research.export)"
            ) from None
        content_type, filename, content = export.render(report, int(fmt))
        return research_pb2.ExportedReport(
            content_type=content_type, filename=filename, content=content
        )
