"""`/api/v1/traces`: the reasoning traces behind replies (prompt, context, samples, timings).

Who reads what: a caller with `traces:read_all` (admins) reads every trace of the tenant; one with
`traces:read` (members) only traces labelled with their own user id, i.e. the replies to them.
Another user's trace is a 404, as if it did not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.api.problems import ApiError
from edrs_gateway.api.turns import CONVERSATION_ID_PATTERN, user_id_of
from edrs_gateway.auth.dependencies import may, require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(prefix="/traces", tags=["traces"])

read_traces = require(Permission.TRACES_READ)

# The labels the persona service puts on the trace of every turn.
USER_LABEL, PERSONA_LABEL, CONVERSATION_LABEL = "user_id", "persona_id", "conversation_id"


class ChatMessageOut(ApiModel):
    role: str
    content: str


class ContextItemOut(ApiModel):
    id: str
    source: str = Field(description="Where it came from, e.g. `memory.fact`, `memory.episode`")
    text: str
    score: float


class SampleOut(ApiModel):
    text: str
    answer: str
    completion_tokens: int
    generation_ms: float


class TraceTimingsOut(ApiModel):
    queue_ms: float
    first_token_ms: float
    generation_ms: float
    total_ms: float


class GenerationOptionsOut(ApiModel):
    max_tokens: int
    temperature: float | None
    stop: list[str]
    top_p: float | None
    seed: int | None


class TraceOut(ApiModel):
    id: str
    strategy: str = Field(description="`direct`, `chain_of_thought`, `self_consistency`, `verify`")
    model: str
    prompt: str = Field(description="The prompt as the model read it")
    messages: list[ChatMessageOut]
    context: list[ContextItemOut] = Field(description="What was put into the prompt, by source")
    answer: str
    confidence: float
    samples: list[SampleOut]
    unsupported_claims: list[str]
    draft: str
    prompt_tokens: int
    completion_tokens: int
    duration_ms: float
    timings: TraceTimingsOut
    options: GenerationOptionsOut
    labels: dict[str, str] = Field(description="e.g. personaId, conversationId, userId")
    created_at: datetime

    @classmethod
    def of(cls, t: reasoning_pb2.Trace) -> TraceOut:
        o = t.options

        def optional(field: Literal["temperature", "top_p", "seed"]) -> Any:
            return getattr(o, field) if o.HasField(field) else None

        return cls(
            id=t.id,
            strategy=t.strategy,
            model=t.model,
            prompt=t.prompt,
            messages=[ChatMessageOut(role=m.role, content=m.content) for m in t.messages],
            context=[
                ContextItemOut(id=c.id, source=c.source, text=c.text, score=c.score)
                for c in t.context
            ],
            answer=t.answer,
            confidence=t.confidence,
            samples=[
                SampleOut(
                    text=s.text,
                    answer=s.answer,
                    completion_tokens=s.completion_tokens,
                    generation_ms=s.generation_ms,
                )
                for s in t.samples
            ],
            unsupported_claims=list(t.unsupported_claims),
            draft=t.draft,
            prompt_tokens=t.prompt_tokens,
            completion_tokens=t.completion_tokens,
            duration_ms=t.duration_ms,
            timings=TraceTimingsOut(
                queue_ms=t.timings.queue_ms,
                first_token_ms=t.timings.first_token_ms,
                generation_ms=t.timings.generation_ms,
                total_ms=t.timings.total_ms,
            ),
            options=GenerationOptionsOut(
                max_tokens=o.max_tokens,
                temperature=optional("temperature"),
                stop=list(o.stop),
                top_p=optional("top_p"),
                seed=optional("seed"),
            ),
            labels=dict(t.labels),
            created_at=t.create_time.ToDatetime(tzinfo=UTC),
        )


class TracePage(PageOf):
    traces: list[TraceOut]


def _stub(ctx: GatewayContext) -> reasoning_pb2_grpc.ReasoningServiceAsyncStub:
    return ctx.runtime.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub)


_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}


@router.get(
    "",
    response_model=TracePage,
    summary="List reasoning traces",
    description="Newest first. Admins see the tenant's traces, others their own; filter by the "
    "persona, conversation or (admins) user the trace was made for.",
    responses=_ERRORS,
)
async def list_traces(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_traces)],
    persona_id: Annotated[UUID | None, Query(alias="personaId")] = None,
    conversation_id: Annotated[
        str | None, Query(alias="conversationId", pattern=CONVERSATION_ID_PATTERN)
    ] = None,
    user_id: Annotated[
        str | None,
        Query(alias="userId", min_length=1, max_length=200, pattern=SINGLE_LINE),
    ] = None,
) -> TracePage:
    labels: dict[str, str] = {}
    if persona_id is not None:
        labels[PERSONA_LABEL] = str(persona_id)
    if conversation_id is not None:
        labels[CONVERSATION_LABEL] = conversation_id
    if user_id is not None:
        labels[USER_LABEL] = user_id
    if not may(caller, Permission.TRACES_READ_ALL):
        if labels.get(USER_LABEL, user_id_of(caller)) != user_id_of(caller):
            raise ApiError(403, "forbidden", "you may read your own traces only")
        labels[USER_LABEL] = user_id_of(caller)
    request = reasoning_pb2.ListTracesRequest(labels=labels)
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await _stub(ctx).ListTraces(request)
    return TracePage(
        traces=[TraceOut.of(t) for t in reply.traces], next_page_token=reply.page.next_page_token
    )


@router.get(
    "/{traceId}",
    response_model=TraceOut,
    summary="Get a reasoning trace",
    description="The `traceId` of a reply. 404 for a trace that is not yours (admins: not in "
    "the tenant).",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_trace(
    trace_id: Annotated[UUID, Path(alias="traceId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_traces)],
) -> TraceOut:
    trace = await _stub(ctx).GetTrace(reasoning_pb2.GetTraceRequest(id=str(trace_id)))
    if not may(caller, Permission.TRACES_READ_ALL) and (
        trace.labels.get(USER_LABEL) != user_id_of(caller)
    ):
        raise ApiError(404, "not_found", f"trace {trace_id} not found")
    return TraceOut.of(trace)
