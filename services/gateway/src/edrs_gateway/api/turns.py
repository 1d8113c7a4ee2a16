"""One conversation turn as the public API shows it: the message a client sends, the events of the
persona's Converse stream turned into JSON, and the reply's body. Shared by the HTTP route (JSON
and SSE) and the WebSocket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from edrs_proto.memory.v1 import memory_pb2
from edrs_proto.persona.v1 import persona_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ConfigDict, Field, JsonValue

from edrs_gateway.api.models import MULTI_LINE, ApiModel
from edrs_gateway.api.problems import ApiError
from edrs_gateway.api.routes.personas import persona_stub
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import GatewayContext

PEER = "persona"

# The persona service's limits (ConverseRequest), checked here so a bad message names its field.
TEXT_MAX = 20_000
MAX_TOKENS_MAX = 4096
# A client-chosen conversation id: 1..100 characters of [A-Za-z0-9._:-].
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"

Strategy = Literal["direct", "chain_of_thought", "self_consistency"]

# The name of each Converse event on the wire (SSE `event:`, WebSocket `type`).
EventName = Literal[
    "accepted", "queued", "started", "tool_call", "tool_result", "delta", "completed"
]


def user_id_of(principal: Principal) -> str:
    """Who is talking, as the persona and memory services know them: the user's id for user
    tokens, the API key's id for keys (so a key has its own relationships and memories)."""
    return principal.subject_id


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _time_or_none(message: Any, field: str) -> datetime | None:
    return _time(getattr(message, field)) if message.HasField(field) else None


class TurnOptions(ApiModel):
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS_MAX, description="Most tokens of the reply"
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature")
    strategy: Strategy = Field(
        default="direct",
        description="`direct`, `chain_of_thought` (step by step, then the answer) or "
        "`self_consistency` (several samples, majority answer)",
    )


class SendMessage(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"text": "Summarise yesterday's sales.", "options": {"maxTokens": 200}},
            ]
        }
    )

    text: str = Field(min_length=1, max_length=TEXT_MAX, pattern=MULTI_LINE)
    options: TurnOptions | None = None


def converse_request(
    principal: Principal, persona_id: UUID, conversation_id: str, message: SendMessage
) -> persona_pb2.ConverseRequest:
    options = message.options or TurnOptions()
    request = persona_pb2.ConverseRequest(
        persona_id=str(persona_id),
        conversation_id=conversation_id,
        user_id=user_id_of(principal),
        text=message.text,
        options=persona_pb2.ConverseOptions(
            max_tokens=options.max_tokens or 0, strategy=options.strategy
        ),
    )
    if options.temperature is not None:
        request.options.temperature = options.temperature
    return request


class MemoryOut(ApiModel):
    id: UUID
    conversation_id: str = Field(description="Conversation it came from; empty for notes")
    text: str
    kind: str = Field(description="`message` (a turn), `event` or `note`")
    role: str = Field(description="For messages: `user` or `assistant`")
    importance: float
    created_at: datetime

    @classmethod
    def of(cls, m: memory_pb2.Memory) -> MemoryOut:
        return cls(
            id=UUID(m.id),
            conversation_id=m.conversation_id,
            text=m.text,
            kind=m.kind,
            role=m.role,
            importance=m.importance,
            created_at=_time(m.create_time),
        )


class ScoredMemoryOut(ApiModel):
    memory: MemoryOut
    score: float = Field(description="What memories are ranked by (higher first)")
    recency: float = Field(description="0..1, 1 = just now")
    importance: float = Field(description="0..1")
    relevance: float = Field(description="0..1, similarity to the query")

    @classmethod
    def of(cls, s: memory_pb2.ScoredMemory) -> ScoredMemoryOut:
        return cls(
            memory=MemoryOut.of(s.memory),
            score=s.score,
            recency=s.recency,
            importance=s.importance,
            relevance=s.relevance,
        )


class FactOut(ApiModel):
    id: UUID
    attribute: str = Field(description="e.g. `manager`, `preference`, `like`")
    value: str
    statement: str = Field(description="The words the fact was read from")
    source: str = Field(description="`rule` (read from a message) or `user` (stated directly)")
    valid_from: datetime
    valid_to: datetime | None = Field(description="Set once superseded")
    superseded_by: UUID | None = Field(description="The fact that replaced this one")
    status: Literal["current", "superseded"]

    @classmethod
    def of(cls, f: memory_pb2.Fact) -> FactOut:
        return cls(
            id=UUID(f.id),
            attribute=f.attribute,
            value=f.value,
            statement=f.statement,
            source=f.source,
            valid_from=_time(f.valid_from),
            valid_to=_time_or_none(f, "valid_to"),
            superseded_by=UUID(f.superseded_by) if f.superseded_by else None,
            status="superseded" if f.status == "superseded" else "current",
        )


class CitationOut(ApiModel):
    """A passage of the persona's knowledge collections that the model was given."""

    marker: int = Field(description="Its number in the prompt: the reply cites it as `[marker]`")
    cited: bool = Field(description="The reply's text cites it (`[marker]` appears in it)")
    document_id: UUID
    external_id: str | None = Field(description="Your own id of the document, when you gave one")
    collection_id: UUID
    title: str
    page: int | None = Field(description="1-based page of a paged document (PDF)")
    heading_path: list[str] = Field(description="The headings the passage sits under")
    start_offset: int = Field(
        description="`text[startOffset:endOffset]` of the document's stored text is the passage"
    )
    end_offset: int
    text: str = Field(description="The passage, as the model read it")
    score: float
    chunk_id: UUID
    content_hash: str

    @classmethod
    def of(cls, c: persona_pb2.Citation) -> CitationOut:
        return cls(
            marker=c.marker,
            cited=c.cited,
            document_id=UUID(c.document_id),
            external_id=c.external_id or None,
            collection_id=UUID(c.collection_id),
            title=c.title,
            page=c.page or None,
            heading_path=list(c.heading_path),
            start_offset=c.start_offset,
            end_offset=c.end_offset,
            text=c.text,
            score=c.score,
            chunk_id=UUID(c.chunk_id),
            content_hash=c.content_hash,
        )


class ReplyOut(ApiModel):
    message_id: UUID
    text: str
    trace_id: str = Field(description="The reasoning trace behind the reply (`/traces/{id}`)")


class ToolCallOut(ApiModel):
    """A tool call the persona's model asked for in the turn, and what became of it."""

    call_id: str
    round: int = Field(description="1-based round of tool calls")
    tool: str
    arguments: dict[str, JsonValue] = Field(description="Valid for the tool's argument schema")
    impact: str = Field(description="`read`, `write` or `destructive`")
    status: str = Field(
        description="`running` (a `tool_result` follows), `held` (waits for a human's approval; "
        "it did not run) or `refused` (it could not run; `reason` says why)"
    )
    reason: str
    approval_id: str = Field(description="The approval request of a held call, when one exists")

    @classmethod
    def of(cls, c: persona_pb2.ToolCallEvent) -> ToolCallOut:
        arguments = json.loads(c.arguments) if c.arguments else {}
        return cls(
            call_id=c.call_id,
            round=c.round,
            tool=c.tool,
            arguments=arguments if isinstance(arguments, dict) else {},
            impact=c.impact,
            status=c.status,
            reason=c.reason,
            approval_id=c.approval_id,
        )


class ToolResultOut(ApiModel):
    call_id: str
    tool: str
    content: str = Field(description="What the tool answered (given to the model as untrusted)")
    is_error: bool
    duration_ms: float

    @classmethod
    def of(cls, r: persona_pb2.ToolResultEvent) -> ToolResultOut:
        return cls(
            call_id=r.call_id,
            tool=r.tool,
            content=r.content,
            is_error=r.is_error,
            duration_ms=r.duration_ms,
        )


class UsageOut(ApiModel):
    prompt_tokens: int
    completion_tokens: int


class TimingsOut(ApiModel):
    """Milliseconds; `overheadMs` is everything but generation and queueing."""

    queue_ms: float
    recall_ms: float
    prompt_ms: float
    generation_ms: float
    store_ms: float
    total_ms: float
    overhead_ms: float


_TURN_EXAMPLE: dict[str, JsonValue] = {
    "messageId": "0190d6a0-0000-7000-8000-0000000000b1",
    "reply": {
        "messageId": "0190d6a0-0000-7000-8000-0000000000b2",
        "text": "- Sales rose 4% on Monday [1].",
        "traceId": "0190d6a0-0000-7000-8000-0000000000c1",
    },
    "recalled": [],
    "facts": [],
    "learned": [],
    "citations": [
        {
            "marker": 1,
            "cited": True,
            "documentId": "0190d6a0-0000-7000-8000-0000000000d2",
            "externalId": "sales-2025-q1",
            "collectionId": "0190d6a0-0000-7000-8000-0000000000d1",
            "title": "Daily sales report",
            "page": 3,
            "headingPath": ["Monday", "Totals"],
            "startOffset": 5120,
            "endOffset": 5398,
            "text": "Sales rose 4% on Monday, led by the north region.",
            "score": 0.0328,
            "chunkId": "0190d6a0-0000-7000-8000-0000000000d3",
            "contentHash": "20e499bb6964cfcb35dd004bb6da3e45faaee63b19bce2b3106096e801388e05",
        }
    ],
    "usage": {"promptTokens": 312, "completionTokens": 11},
    "timings": {
        "queueMs": 0.0,
        "recallMs": 8.1,
        "promptMs": 0.4,
        "generationMs": 640.2,
        "storeMs": 12.5,
        "totalMs": 664.0,
        "overheadMs": 23.8,
    },
}


class TurnOut(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_TURN_EXAMPLE]})

    message_id: UUID = Field(description="Id of the message you sent")
    reply: ReplyOut
    recalled: list[ScoredMemoryOut] = Field(description="Memories given to the model")
    facts: list[FactOut] = Field(description="What is known about you, given to the model")
    learned: list[FactOut] = Field(description="Facts learned from your message")
    tool_calls: list[ToolCallOut] = Field(
        default_factory=list, description="The persona's tool calls in this turn"
    )
    citations: list[CitationOut] = Field(
        description="Passages of the persona's knowledge collections given to the model, by "
        "marker; empty when none is attached or the knowledge service could not be reached"
    )
    usage: UsageOut
    timings: TimingsOut

    @classmethod
    def of(cls, message_id: str, done: persona_pb2.TurnCompleted) -> TurnOut:
        t = done.timings
        return cls(
            message_id=UUID(message_id),
            reply=ReplyOut(
                message_id=UUID(done.message_id), text=done.reply, trace_id=done.trace_id
            ),
            recalled=[ScoredMemoryOut.of(m) for m in done.recalled],
            facts=[FactOut.of(f) for f in done.facts],
            learned=[FactOut.of(f) for f in done.learned],
            tool_calls=[ToolCallOut.of(c) for c in done.tool_calls],
            citations=[CitationOut.of(c) for c in done.citations],
            usage=UsageOut(
                prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens
            ),
            timings=TimingsOut(
                queue_ms=t.queue_ms,
                recall_ms=t.recall_ms,
                prompt_ms=t.prompt_ms,
                generation_ms=t.generation_ms,
                store_ms=t.store_ms,
                total_ms=t.total_ms,
                overhead_ms=t.overhead_ms,
            ),
        )


@dataclass(frozen=True)
class TurnEvent:
    """One step of a turn for the client: its name and its JSON data."""

    name: EventName
    data: dict[str, Any]


class Turn:
    """A running Converse call. `first()` waits for the first event, so that a turn the persona
    service refuses (unknown persona, archived, bad options) is answered with a plain HTTP error
    rather than as an event inside an already started stream; `events()` yields the rest. A
    failure raises the ServiceError edrs_core maps the persona service's status to.

    The client interceptor puts the tenant, request id and trace context on the call when it
    starts, so a Turn is made where the caller's context is bound (`act_as`)."""

    def __init__(self, ctx: GatewayContext, request: persona_pb2.ConverseRequest) -> None:
        self._call = persona_stub(ctx).Converse(request, timeout=ctx.settings.turn_timeout_seconds)
        self._stream = self._call.__aiter__()
        self._message_id = ""
        self._pending: TurnEvent | None = None
        self._completed: TurnOut | None = None

    async def _next(self) -> TurnEvent | None:
        try:
            event: persona_pb2.ConverseEvent = await self._stream.__anext__()
        except StopAsyncIteration:
            return None
        return self._convert(event)

    def _convert(self, event: persona_pb2.ConverseEvent) -> TurnEvent:
        kind = event.WhichOneof("kind")
        if kind == "accepted":
            self._message_id = event.accepted.message_id
            return TurnEvent("accepted", {"messageId": event.accepted.message_id})
        if kind == "queued":
            return TurnEvent("queued", {"ahead": event.queued.ahead})
        if kind == "started":
            return TurnEvent("started", {})
        if kind == "delta":
            return TurnEvent("delta", {"text": event.delta.text})
        if kind == "tool_call":
            call = ToolCallOut.of(event.tool_call)
            return TurnEvent("tool_call", call.model_dump(mode="json", by_alias=True))
        if kind == "tool_result":
            result = ToolResultOut.of(event.tool_result)
            return TurnEvent("tool_result", result.model_dump(mode="json", by_alias=True))
        if kind == "completed":
            self._completed = TurnOut.of(self._message_id, event.completed)
            return TurnEvent("completed", self._completed.model_dump(mode="json", by_alias=True))
        raise ApiError(502, "upstream_error", f"the {PEER} service sent an unknown event")

    async def first(self) -> TurnEvent:
        """The first event; raises ServiceError when the turn was refused."""
        event = await self._next()
        if event is None:
            raise ApiError(502, "upstream_error", f"the {PEER} service ended the turn early")
        self._pending = event
        return event

    async def events(self) -> AsyncIterator[TurnEvent]:
        """Every event, ending with `completed`; raises ServiceError (or ApiError, for a stream
        that ends early) on a failure mid-turn."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            yield pending
            if pending.name == "completed":
                return
        while (event := await self._next()) is not None:
            yield event
            if event.name == "completed":
                return
        raise ApiError(502, "upstream_error", f"the {PEER} service ended the turn early")

    def cancel(self) -> None:
        """The client went away: stop the call (the persona service still stores the turn)."""
        self._call.cancel()

    async def result(self) -> TurnOut:
        """Run the turn to its end and return the body of `completed`."""
        async for _ in self.events():
            pass
        assert self._completed is not None  # events() ends with `completed` or raises
        return self._completed
