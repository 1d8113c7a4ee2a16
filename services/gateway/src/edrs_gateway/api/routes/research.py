"""`/api/v1/research`: research jobs (a question answered with a sourced, checked report), their
live progress (SSE), their reports (JSON, or exported as Markdown, HTML or PDF), and the tenant's
sources with their credibility, served by the research service over gRPC (docs/research.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_core.errors import ServiceError
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from google.protobuf import field_mask_pb2
from pydantic import ConfigDict, Field, StrictBool, model_validator
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
from edrs_gateway.api.knowledge import time_of, time_or_none
from edrs_gateway.api.models import MULTI_LINE, SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.api.problems import ApiError
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(prefix="/research", tags=["research"])

read = require(Permission.RESEARCH_READ)
write = require(Permission.RESEARCH_WRITE)

# The research service's limits (research.proto), checked here so a bad body names its field.
URL_MAX, TITLE_MAX, QUESTION_MIN, QUESTION_MAX = 2048, 500, 3, 2000
DOMAIN_MAX, DOMAINS_MAX, COLLECTIONS_MAX = 253, 100, 50
DEPTH_MAX, MAX_SOURCES_MAX, MAX_TOKENS_MAX, RECENCY_DAYS_MAX = 3, 50, 1_000_000, 36_500
# A job's watch ends when the job does; this bounds a watcher left open on a stuck job.
WATCH_SECONDS = 3600.0

EXAMPLE_JOB_ID = "0190d6a0-0000-7000-8000-0000000000f1"
EXAMPLE_SOURCE_ID = "0190d6a0-0000-7000-8000-0000000000f2"

JobId = Annotated[UUID, Path(alias="jobId", examples=[EXAMPLE_JOB_ID])]
SourceId = Annotated[UUID, Path(alias="sourceId", examples=[EXAMPLE_SOURCE_ID])]

# A domain in a scope: an exact host or "*.suffix" (lower case, no port, no scheme).
DOMAIN_PATTERN = r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
Domain = Annotated[str, Field(min_length=1, max_length=DOMAIN_MAX, pattern=DOMAIN_PATTERN)]

_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}
_STRING = {"schema": {"type": "string"}}


def research_stub(ctx: GatewayContext) -> research_pb2_grpc.ResearchServiceAsyncStub:
    return ctx.runtime.peers.stub(research_pb2_grpc.ResearchServiceStub)


class ReasonOut(ApiModel):
    signal: str = Field(
        description="`domain_tier`, `https`, `author`, `date`, `agreement`, `cited_by`, "
        "`pinned`, `blocked` (docs/research.md lists them with their weights)"
    )
    weight: float = Field(description="What it added to the score (negative: took away)")
    detail: str

    @classmethod
    def of(cls, r: research_pb2.CredibilityReason) -> ReasonOut:
        return cls(signal=r.signal, weight=r.weight, detail=r.detail)


# -- sources ----------------------------------------------------------------------------------

SourceState = Literal["pending", "fetched", "failed"]
SOURCE_STATES: dict[int, SourceState] = {
    research_pb2.SOURCE_STATE_PENDING: "pending",
    research_pb2.SOURCE_STATE_FETCHED: "fetched",
    research_pb2.SOURCE_STATE_FAILED: "failed",
}


class SourceOut(ApiModel):
    id: UUID
    url: str = Field(description="The normalised URL")
    title: str
    domain: str = Field(description="The URL's host: the unit of domain tiers, pins and blocks")
    state: SourceState = Field(
        description="`pending` (not fetched yet), `fetched`, or `failed` (`fetchError` says why)"
    )
    fetch_error: str = Field(description="Why the last fetch failed; empty unless `failed`")
    credibility: float = Field(description="0..1, made up of `reasons`")
    reasons: list[ReasonOut]
    author: str
    published_at: datetime | None
    language: str = Field(description="ISO 639-1, e.g. `en`; empty when unknown")
    fetched_at: datetime | None
    content_hash: str = Field(description="SHA-256 (hex) of the extracted text")
    truncated: bool = Field(description="The page was over the size limit: its start was read")
    pinned: bool
    blocked: bool
    document_id: str = Field(
        description="The knowledge document holding the text (in the `research` collection)"
    )
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, s: research_pb2.Source) -> SourceOut:
        return cls(
            id=UUID(s.id),
            url=s.url,
            title=s.title,
            domain=s.domain,
            state=SOURCE_STATES.get(s.state, "pending"),
            fetch_error=s.fetch_error,
            credibility=s.credibility,
            reasons=[ReasonOut.of(r) for r in s.reasons],
            author=s.author,
            published_at=time_or_none(s, "published_time"),
            language=s.language,
            fetched_at=time_or_none(s, "fetch_time"),
            content_hash=s.content_hash,
            truncated=s.truncated,
            pinned=s.pinned,
            blocked=s.blocked,
            document_id=s.document_id,
            created_at=time_of(s.create_time),
            updated_at=time_or_none(s, "update_time"),
        )


def _not_both(pinned: bool | None, blocked: bool | None) -> None:
    if pinned and blocked:
        raise ValueError("a source cannot be both pinned and blocked")


class RegisterSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"url": "https://en.wikipedia.org/wiki/Tide", "pinned": True}]
        }
    )

    url: str = Field(
        min_length=1,
        max_length=URL_MAX,
        pattern=SINGLE_LINE,
        description="http or https; the outbound policy decides whether it may be fetched",
    )
    title: str = Field(
        default="", max_length=TITLE_MAX, pattern=SINGLE_LINE, description="Empty: the page's"
    )
    pinned: StrictBool = Field(default=False, description="Trusted: raises its credibility")
    blocked: StrictBool = Field(
        default=False, description="Never fetched or cited by research jobs"
    )

    @model_validator(mode="after")
    def _pinned_or_blocked(self) -> RegisterSource:
        _not_both(self.pinned, self.blocked)
        return self


class UpdateSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"pinned": True}, {"title": "Tides (Wikipedia)"}]}
    )

    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX, pattern=SINGLE_LINE)
    pinned: StrictBool | None = None
    blocked: StrictBool | None = None

    @model_validator(mode="after")
    def _something_valid(self) -> UpdateSource:
        if not self.model_fields_set:
            raise ValueError("name at least one of title, pinned, blocked")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        _not_both(self.pinned, self.blocked)
        return self


class SourcePage(PageOf):
    sources: list[SourceOut]


@router.post(
    "/sources",
    status_code=201,
    response_model=SourceOut,
    summary="Register a source",
    description="Fetches the page at once (robots.txt, the outbound policy and the size limit "
    "apply), extracts its text into your `research` knowledge collection and scores its "
    "credibility. A page that cannot be fetched is still registered: `state` is `failed` and "
    "`fetchError` says why. 409 `already_exists` when the (normalised) URL is registered; 422 "
    "for a URL that is not http(s).",
    responses={
        201: {"headers": {"Location": {"description": "Path of the source", **_STRING}}},
        **_ERRORS,
        **problem_responses(409),
    },
)
async def register_source(
    body: RegisterSource,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write)],
) -> SourceOut:
    created = await research_stub(ctx).RegisterSource(
        research_pb2.RegisterSourceRequest(
            url=body.url, title=body.title, pinned=body.pinned, blocked=body.blocked
        )
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.id}"
    return SourceOut.of(created)


@router.get(
    "/sources",
    response_model=SourcePage,
    summary="List sources",
    description="Newest first; of one domain, or only pinned or only blocked ones.",
    responses=_ERRORS,
)
async def list_sources(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read)],
    domain: Annotated[
        str, Query(max_length=DOMAIN_MAX, pattern=SINGLE_LINE, description="Exact host")
    ] = "",
    pinned: Annotated[bool, Query(description="Only pinned sources")] = False,
    blocked: Annotated[bool, Query(description="Only blocked sources")] = False,
) -> SourcePage:
    request = research_pb2.ListSourcesRequest(
        domain=domain, pinned_only=pinned, blocked_only=blocked
    )
    request.page.page_size, request.page.page_token = page.page_size, page.page_token
    reply = await research_stub(ctx).ListSources(request)
    return SourcePage(
        sources=[SourceOut.of(s) for s in reply.sources],
        next_page_token=reply.page.next_page_token,
    )


@router.get(
    "/sources/{sourceId}",
    response_model=SourceOut,
    summary="Get a source",
    description="With its state, metadata and the reasons of its credibility.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_source(
    source_id: SourceId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]
) -> SourceOut:
    found = await research_stub(ctx).GetSource(research_pb2.GetSourceRequest(id=str(source_id)))
    return SourceOut.of(found)


@router.patch(
    "/sources/{sourceId}",
    response_model=SourceOut,
    summary="Rename, pin or block a source",
    description="Only the fields sent change (`title`, `pinned`, `blocked`); a source cannot be "
    "both pinned and blocked (422). Its credibility is scored again. Research jobs never fetch "
    "or cite a blocked source.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def update_source(
    source_id: SourceId,
    body: UpdateSource,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write)],
) -> SourceOut:
    fields = sorted(body.model_fields_set)
    source = research_pb2.Source(id=str(source_id))
    if body.title is not None:
        source.title = body.title
    if body.pinned is not None:
        source.pinned = body.pinned
    if body.blocked is not None:
        source.blocked = body.blocked
    updated = await research_stub(ctx).UpdateSource(
        research_pb2.UpdateSourceRequest(
            source=source, update_mask=field_mask_pb2.FieldMask(paths=fields)
        )
    )
    return SourceOut.of(updated)


@router.delete(
    "/sources/{sourceId}",
    status_code=204,
    summary="Delete a source",
    description="With its text in the `research` collection. Reports that cited it keep their "
    "copy of the cited passages.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def delete_source(
    source_id: SourceId, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> Response:
    await research_stub(ctx).DeleteSource(research_pb2.DeleteSourceRequest(id=str(source_id)))
    return Response(status_code=204)


@router.post(
    "/sources/{sourceId}/refetch",
    response_model=SourceOut,
    summary="Fetch a source again",
    description="Now: its text, metadata and score are replaced when the page changed. 409 "
    "`failed_precondition` for a blocked source, which is never fetched.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def refetch_source(
    source_id: SourceId, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> SourceOut:
    found = await research_stub(ctx).RefetchSource(
        research_pb2.RefetchSourceRequest(id=str(source_id))
    )
    return SourceOut.of(found)


# -- jobs -------------------------------------------------------------------------------------

JobState = Literal[
    "queued", "planning", "searching", "fetching", "scoring", "drafting", "completed", "failed",
    "cancelled",
]  # fmt: skip
JOB_STATES: dict[int, JobState] = {
    research_pb2.JOB_STATE_QUEUED: "queued",
    research_pb2.JOB_STATE_PLANNING: "planning",
    research_pb2.JOB_STATE_SEARCHING: "searching",
    research_pb2.JOB_STATE_FETCHING: "fetching",
    research_pb2.JOB_STATE_SCORING: "scoring",
    research_pb2.JOB_STATE_DRAFTING: "drafting",
    research_pb2.JOB_STATE_COMPLETED: "completed",
    research_pb2.JOB_STATE_FAILED: "failed",
    research_pb2.JOB_STATE_CANCELLED: "cancelled",
}
JOB_STATE_VALUES: dict[JobState, research_pb2.JobState.ValueType] = {
    name: research_pb2.JobState.Value(f"JOB_STATE_{name.upper()}") for name in JOB_STATES.values()
}


class Scope(ApiModel):
    """What a job may read and spend."""

    collections: list[Annotated[str, Field(min_length=1, max_length=100, pattern=SINGLE_LINE)]] = (
        Field(
            default_factory=list,
            max_length=COLLECTIONS_MAX,
            description="Knowledge collections (ids or names) to search; empty: none",
        )
    )
    web: StrictBool = Field(default=False, description="Search the web (the configured provider)")
    allowed_domains: list[Domain] = Field(
        default_factory=list,
        max_length=DOMAINS_MAX,
        description="Only these domains (exact host, or `*.suffix`); empty: any the outbound "
        "policy allows",
    )
    denied_domains: list[Domain] = Field(
        default_factory=list,
        max_length=DOMAINS_MAX,
        description="Never these domains (exact host, or `*.suffix`)",
    )
    recency_days: int = Field(
        default=0,
        ge=0,
        le=RECENCY_DAYS_MAX,
        description="Only pages of the last N days (undated pages are kept, weighed less); 0: any",
    )
    depth: int = Field(default=0, ge=0, le=DEPTH_MAX, description="Rounds of sub-questions; 0: 1")
    max_sources: int = Field(
        default=0, ge=0, le=MAX_SOURCES_MAX, description="Most sources to read; 0: 10"
    )
    max_tokens: int = Field(
        default=0,
        ge=0,
        le=MAX_TOKENS_MAX,
        description="Most model tokens to spend (also bounded by your budgets); 0: 4,000",
    )

    def message(self) -> research_pb2.ResearchScope:
        return research_pb2.ResearchScope(
            collections=self.collections,
            web=self.web,
            allowed_domains=self.allowed_domains,
            denied_domains=self.denied_domains,
            recency_days=self.recency_days,
            depth=self.depth,
            max_sources=self.max_sources,
            max_tokens=self.max_tokens,
        )

    @classmethod
    def of(cls, s: research_pb2.ResearchScope) -> Scope:
        return cls.model_construct(
            collections=list(s.collections),
            web=s.web,
            allowed_domains=list(s.allowed_domains),
            denied_domains=list(s.denied_domains),
            recency_days=s.recency_days,
            depth=s.depth,
            max_sources=s.max_sources,
            max_tokens=s.max_tokens,
        )


class StartJob(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "question": "Why are there two high tides a day?",
                    "scope": {
                        "collections": ["handbook"],
                        "web": True,
                        "deniedDomains": ["*.example.com"],
                        "depth": 1,
                        "maxSources": 8,
                    },
                }
            ]
        }
    )

    question: str = Field(
        min_length=QUESTION_MIN,
        max_length=QUESTION_MAX,
        pattern=MULTI_LINE,
        description="3-2,000 characters; passes your tenant's DLP policy first",
    )
    scope: Scope = Field(default_factory=Scope)
    persona_id: UUID | None = Field(
        default=None,
        description="The persona doing the research: its budgets apply and the job's task is "
        "assigned to it",
    )

    @model_validator(mode="after")
    def _question_has_words(self) -> StartJob:
        if len(self.question.strip()) < QUESTION_MIN:
            raise ValueError(f"question must hold at least {QUESTION_MIN} non-blank characters")
        return self


class PlanStepOut(ApiModel):
    sub_question: str
    queries: list[str]


class ProgressOut(ApiModel):
    sub_questions: int
    queries: int
    sources_found: int = Field(description="Candidate pages and passages (de-duplicated)")
    sources_fetched: int
    sources_refused: int = Field(description="Not read; each reason is in the job's events")
    sources_duplicate: int = Field(description="Dropped as near-duplicates of another source")
    sources_scored: int
    claims: int
    claims_supported: int
    tokens_used: int


class JobOut(ApiModel):
    id: UUID
    question: str
    scope: Scope
    state: JobState
    plan: list[PlanStepOut] = Field(description="Empty until the plan is made")
    planner: str = Field(description="`model` or `fallback` (the deterministic planner)")
    progress: ProgressOut
    error: str = Field(description="Why it failed; empty unless `failed`")
    persona_id: str = Field(description="Empty when started without a persona")
    task_id: str = Field(description="The task that stands for the job; empty without a persona")
    created_at: datetime
    updated_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def of(cls, j: research_pb2.Job) -> JobOut:
        p = j.progress
        return cls(
            id=UUID(j.id),
            question=j.question,
            scope=Scope.of(j.scope),
            state=JOB_STATES.get(j.state, "queued"),
            plan=[
                PlanStepOut(sub_question=s.sub_question, queries=list(s.queries)) for s in j.plan
            ],
            planner=j.planner,
            progress=ProgressOut(
                sub_questions=p.sub_questions,
                queries=p.queries,
                sources_found=p.sources_found,
                sources_fetched=p.sources_fetched,
                sources_refused=p.sources_refused,
                sources_duplicate=p.sources_duplicate,
                sources_scored=p.sources_scored,
                claims=p.claims,
                claims_supported=p.claims_supported,
                tokens_used=p.tokens_used,
            ),
            error=j.error,
            persona_id=j.persona_id,
            task_id=j.task_id,
            created_at=time_of(j.create_time),
            updated_at=time_or_none(j, "update_time"),
            ended_at=time_or_none(j, "end_time"),
        )


class JobPage(PageOf):
    jobs: list[JobOut]


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    summary="Start a research job",
    description="Returns the job at once (`queued`); it runs as a durable workflow that survives "
    "a restart of the research service. Follow it live at `…/events` (SSE) or poll `Location`; "
    "when it is `completed`, read `…/report` or download `…/export`. The question passes your "
    "tenant's DLP policy first. 409 `failed_precondition` when jobs cannot run as asked (no "
    "Temporal, a persona the task service does not know).",
    responses={
        201: {"headers": {"Location": {"description": "Path of the job", **_STRING}}},
        **_ERRORS,
        **problem_responses(404, 409),
    },
)
async def start_job(
    body: StartJob,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write)],
) -> JobOut:
    started = await research_stub(ctx).StartJob(
        research_pb2.StartJobRequest(
            question=body.question,
            scope=body.scope.message(),
            persona_id=str(body.persona_id) if body.persona_id else "",
        )
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{started.id}"
    return JobOut.of(started)


@router.get(
    "/jobs",
    response_model=JobPage,
    summary="List research jobs",
    description="Newest first; optionally in one state.",
    responses=_ERRORS,
)
async def list_jobs(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read)],
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
) -> JobPage:
    request = research_pb2.ListJobsRequest(
        state=JOB_STATE_VALUES[state] if state else research_pb2.JOB_STATE_UNSPECIFIED
    )
    request.page.page_size, request.page.page_token = page.page_size, page.page_token
    reply = await research_stub(ctx).ListJobs(request)
    return JobPage(
        jobs=[JobOut.of(j) for j in reply.jobs], next_page_token=reply.page.next_page_token
    )


@router.get(
    "/jobs/{jobId}",
    response_model=JobOut,
    summary="Get a research job",
    description="With its plan and progress.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_job(job_id: JobId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]) -> JobOut:
    return JobOut.of(await research_stub(ctx).GetJob(research_pb2.GetJobRequest(id=str(job_id))))


@router.post(
    "/jobs/{jobId}/cancel",
    response_model=JobOut,
    summary="Cancel a research job",
    description="The job ends `cancelled`. 409 `failed_precondition` for a job that has ended.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def cancel_job(
    job_id: JobId, ctx: Ctx, caller: Annotated[Principal, Depends(write)]
) -> JobOut:
    return JobOut.of(
        await research_stub(ctx).CancelJob(research_pb2.CancelJobRequest(id=str(job_id)))
    )


# One server-sent event of a job's watch (OpenAPI 3.1: the media type's schema is one event's).
class JobEventOut(ApiModel):
    kind: str = Field(
        description="`state`, `plan`, `query`, `source_found`, `fetched`, `refused`, "
        "`duplicate`, `scored`, `claim`, `ended`"
    )
    detail: str = Field(description="In words, e.g. `fetched https://example.org/a (12,345 "
                        "characters)`")  # fmt: skip
    url: str = Field(description="The URL the step is about; empty when none")
    time: datetime | None
    job: JobOut = Field(description="The job as it is after this step")

    @classmethod
    def of(cls, u: research_pb2.JobUpdate) -> JobEventOut:
        return cls(
            kind=u.kind,
            detail=u.detail,
            url=u.url,
            time=time_or_none(u, "event_time"),
            job=JobOut.of(u.job),
        )


@router.get(
    "/jobs/{jobId}/events",
    summary="Watch a research job live (SSE)",
    description="Server-sent events: `update` (the job as it is now first, then one per step: "
    "plan made, query run, source found, fetched, refused, scored, drafting, verifying; `data` is "
    "a JobEvent: `kind`, `detail`, `url`, `time`, `job`), then `ended` (the same shape, the "
    "ended job) as the last event; an `error` event (problem+json) if the watch fails.",
    response_class=EventSourceResponse,
    responses={
        **sse_response(
            ("update", "ended"), "A JobEvent (`update`, `ended`) or a problem (`error`), as JSON"
        ),
        **_ERRORS,
        **problem_responses(404),
    },
)
async def watch_job(
    job_id: JobId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]
) -> EventSourceResponse:
    stub = research_stub(ctx)
    # Found first, so an unknown job is a 404 rather than an event stream with an error.
    await stub.GetJob(research_pb2.GetJobRequest(id=str(job_id)))
    stream = stub.WatchJob(research_pb2.WatchJobRequest(id=str(job_id)), timeout=WATCH_SECONDS)
    return EventSourceResponse(_watch(stream), ping=15.0, send_timeout=30.0)


async def _watch(stream: AsyncIterable[research_pb2.JobUpdate]) -> AsyncIterator[ServerSentEvent]:
    try:
        async for update in stream:
            body = JobEventOut.of(update).model_dump(mode="json", by_alias=True)
            event = "ended" if update.kind == "ended" else "update"
            yield ServerSentEvent(data=json.dumps(body), event=event)
    except ServiceError as exc:
        yield sse_error(exc)


# -- reports ----------------------------------------------------------------------------------


class ClaimOut(ApiModel):
    text: str
    citations: list[int] = Field(description="Numbers of the citations that support it")
    supported: bool = Field(
        description="Verification found a cited passage that supports it; an unsupported claim "
        "is flagged in the text, never stated as fact"
    )
    support: float = Field(description="The verification's support score, 0..1")
    note: str = Field(description="Why it is flagged; empty when supported")


class SectionOut(ApiModel):
    heading: str
    text: str = Field(description='With citation markers ("[1]") and flagged claims marked '
                      '"(unverified)"')  # fmt: skip
    claims: list[ClaimOut]


class ReportCitationOut(ApiModel):
    number: int = Field(description='1-based, as in the text ("[1]")')
    source_id: str
    url: str
    title: str
    document_id: str = Field(description="The knowledge document of the cited passage")
    chunk_id: str
    document_version: int
    start: int = Field(description="Offsets of the passage in the document's stored text "
                       "(characters)")  # fmt: skip
    end: int
    passage: str
    content_hash: str = Field(description="SHA-256 (hex) of the passage")
    fetched_at: datetime | None


class ReportSourceOut(ApiModel):
    source_id: str
    url: str
    title: str
    credibility: float
    reasons: list[ReasonOut]
    fetched_at: datetime | None
    content_hash: str
    cited: bool = Field(description="Whether the report cites it")


class ReportOut(ApiModel):
    job_id: UUID
    question: str
    title: str
    summary: str = Field(description="A short answer, with citation markers")
    sections: list[SectionOut]
    citations: list[ReportCitationOut]
    sources: list[ReportSourceOut] = Field(description="Most credible first")
    created_at: datetime | None

    @classmethod
    def of(cls, r: research_pb2.Report) -> ReportOut:
        return cls(
            job_id=UUID(r.job_id),
            question=r.question,
            title=r.title,
            summary=r.summary,
            sections=[
                SectionOut(
                    heading=s.heading,
                    text=s.text,
                    claims=[
                        ClaimOut(
                            text=c.text,
                            citations=list(c.citations),
                            supported=c.supported,
                            support=c.support,
                            note=c.note,
                        )
                        for c in s.claims
                    ],
                )
                for s in r.sections
            ],
            citations=[
                ReportCitationOut(
                    number=c.number,
                    source_id=c.source_id,
                    url=c.url,
                    title=c.title,
                    document_id=c.document_id,
                    chunk_id=c.chunk_id,
                    document_version=c.document_version,
                    start=c.start,
                    end=c.end,
                    passage=c.passage,
                    content_hash=c.content_hash,
                    fetched_at=time_or_none(c, "fetch_time"),
                )
                for c in r.citations
            ],
            sources=[
                ReportSourceOut(
                    source_id=s.source_id,
                    url=s.url,
                    title=s.title,
                    credibility=s.credibility,
                    reasons=[ReasonOut.of(x) for x in s.reasons],
                    fetched_at=time_or_none(s, "fetch_time"),
                    content_hash=s.content_hash,
                    cited=s.cited,
                )
                for s in r.sources
            ],
            created_at=time_or_none(r, "create_time"),
        )


@router.get(
    "/jobs/{jobId}/report",
    response_model=ReportOut,
    summary="Get a job's report",
    description="Sections of claims, each with the numbers of the citations that support it and "
    "whether verification found it supported; citations locate their passage in the knowledge "
    "service (document, version, offsets, hash); sources carry their credibility and its "
    "reasons. 409 `failed_precondition` while the job has not completed.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def get_report(
    job_id: JobId, ctx: Ctx, caller: Annotated[Principal, Depends(read)]
) -> ReportOut:
    found = await research_stub(ctx).GetReport(research_pb2.GetReportRequest(job_id=str(job_id)))
    return ReportOut.of(found)


ExportFormat = Literal["markdown", "html", "pdf"]
EXPORT_FORMATS: dict[ExportFormat, research_pb2.ReportFormat.ValueType] = {
    "markdown": research_pb2.REPORT_FORMAT_MARKDOWN,
    "html": research_pb2.REPORT_FORMAT_HTML,
    "pdf": research_pb2.REPORT_FORMAT_PDF,
}
# What the research service may answer (ExportedReport.content_type); anything else is its bug.
_EXPORT_TYPES = {"text/markdown", "text/html", "application/pdf"}


def _disposition(filename: str) -> str:
    # The research service names it "research-<job id>.<ext>"; kept to safe characters anyway.
    safe = "".join(ch for ch in filename if ch.isalnum() or ch in "-_.") or "research-report"
    return f'attachment; filename="{safe}"'


@router.get(
    "/jobs/{jobId}/export",
    summary="Download a job's report",
    description="As Markdown, a self-contained HTML page (every text escaped, citations linked "
    "to the source list, unverified claims marked) or a PDF, as an attachment. 409 "
    "`failed_precondition` while the job has not completed.",
    response_class=Response,
    responses={
        200: {
            "description": "The report file",
            "content": {
                "text/markdown": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            },
            "headers": {"Content-Disposition": {"description": "The file name", **_STRING}},
        },
        **_ERRORS,
        **problem_responses(404, 409),
    },
)
async def export_report(
    job_id: JobId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read)],
    output_format: Annotated[
        ExportFormat, Query(alias="format", description="`markdown`, `html` or `pdf`")
    ] = "markdown",
) -> Response:
    exported = await research_stub(ctx).ExportReport(
        research_pb2.ExportReportRequest(job_id=str(job_id), format=EXPORT_FORMATS[output_format])
    )
    if exported.content_type.split(";", 1)[0].strip() not in _EXPORT_TYPES:
        raise ApiError(
            502, "upstream_error", f"the research service exported {exported.content_type!r}"
        )
    return Response(
        content=exported.content,
        media_type=exported.content_type,
        headers={"Content-Disposition": _disposition(exported.filename)},
    )
