"""`/api/v1/personas/{personaId}/conversations`: talk to a persona (a JSON reply or Server-Sent
Events) and read back the caller's conversations and their messages."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from edrs_proto.persona.v1 import persona_pb2
from fastapi import APIRouter, Depends, Header, Path, Request
from pydantic import Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import ApiModel, PageOf
from edrs_gateway.api.problems import PROBLEM_JSON, ApiError
from edrs_gateway.api.routes.personas import PersonaId, persona_stub
from edrs_gateway.api.turn_journal import TurnJournal, journal_key, turn_not_found
from edrs_gateway.api.turns import (
    CONVERSATION_ID_PATTERN,
    SendMessage,
    Turn,
    TurnOut,
    converse_request,
    user_id_of,
)
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx

router = APIRouter(prefix="/personas", tags=["conversations"])

converse = require(Permission.CONVERSE)
read_conversations = require(Permission.CONVERSATIONS_READ)

ConversationId = Annotated[
    str,
    Path(
        alias="conversationId",
        pattern=CONVERSATION_ID_PATTERN,
        description="Chosen by the client: 1..100 characters of `A-Z a-z 0-9 . _ : -`; "
        "yours alone (another user's conversation of the same id is a different one)",
        examples=["weekly-review"],
    ),
]
EVENT_STREAM = "text/event-stream"
# The id of a journalled event: its Redis stream id.
_EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


async def get_turn_journal(request: Request) -> TurnJournal:
    """FastAPI dependency: the journal of streamed turns, set by create_api."""
    journal: TurnJournal = request.app.state.turn_journal
    return journal


Journal = Annotated[TurnJournal, Depends(get_turn_journal)]


class ConversationOut(ApiModel):
    id: str
    persona_id: UUID
    message_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: persona_pb2.Conversation) -> ConversationOut:
        return cls(
            id=c.id,
            persona_id=UUID(c.persona_id),
            message_count=c.message_count,
            created_at=c.create_time.ToDatetime(tzinfo=UTC),
            updated_at=c.update_time.ToDatetime(tzinfo=UTC),
        )


class ConversationPage(PageOf):
    conversations: list[ConversationOut]


MessageRole = Literal["user", "assistant", "tool"]
_ROLES: dict[str, MessageRole] = {"assistant": "assistant", "tool": "tool"}


class MessageOut(ApiModel):
    id: UUID
    conversation_id: str
    role: MessageRole = Field(
        description="`tool`: the outcome of a tool call held for approval (run once approved, "
        "or rejected or expired without running)"
    )
    text: str = Field(description="As stored: after the gateway's DLP redaction")
    trace_id: str | None = Field(description="For replies: the reasoning trace behind it")
    created_at: datetime

    @classmethod
    def of(cls, m: persona_pb2.Message) -> MessageOut:
        return cls(
            id=UUID(m.id),
            conversation_id=m.conversation_id,
            role=_ROLES.get(m.role, "user"),
            text=m.text,
            trace_id=m.trace_id or None,
            created_at=m.create_time.ToDatetime(tzinfo=UTC),
        )


class MessagePage(PageOf):
    messages: list[MessageOut]


_ERRORS = {**problem_responses(*AUTHENTICATED, 404), **upstream_responses()}

_SSE_EXAMPLE = (
    'event: accepted\ndata: {"messageId": "0190d6a0-0000-7000-8000-0000000000b1"}\n\n'
    "event: started\ndata: {}\n\n"
    'event: delta\ndata: {"text": "- Sales"}\n\n'
    'event: delta\ndata: {"text": " rose 4%"}\n\n'
    'event: completed\ndata: {"messageId": "...", "reply": {...}, ...}\n\n'
)


@router.post(
    "/{personaId}/conversations/{conversationId}/messages",
    response_model=TurnOut,
    summary="Send a message to a persona",
    description=(
        "One turn: your message in, the persona's reply out. By default the reply comes as one "
        "JSON body once generated. With `Accept: text/event-stream` the turn streams as "
        "Server-Sent Events (each with an `id:`; a broken stream resumes with "
        "`GET .../messages/{messageId}/events`): `accepted` {messageId}, `queued` {ahead} when another turn of the "
        "conversation is running, `started` {} (the persona is typing), one `delta` {text} per "
        "piece of the reply as the model writes it, then `completed` with the JSON body; a "
        "failure after the stream began is an `error` event holding a problem. The text passes "
        "the tenant's DLP policy first (redacted or refused)."
    ),
    responses={
        200: {
            "description": "The reply (JSON), or the turn as it happens (SSE)",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}, "example": _SSE_EXAMPLE}},
        },
        **_ERRORS,
        409: {
            "description": "The persona is archived, or (reject policy) a turn is running",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    },
)
async def send_message(
    persona_id: PersonaId,
    conversation_id: ConversationId,
    body: SendMessage,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(converse)],
    journal: Journal,
    accept: Annotated[str, Header(include_in_schema=False)] = "",
) -> Any:
    turn = Turn(ctx, converse_request(caller, persona_id, conversation_id, body))
    try:
        first = await turn.first()
    except BaseException:
        turn.cancel()
        raise
    if EVENT_STREAM not in accept.lower():
        try:
            return await turn.result()
        except BaseException:
            turn.cancel()
            raise
    if first.name != "accepted":
        turn.cancel()
        raise ApiError(502, "upstream_error", "the persona service did not accept the message")
    key = journal_key(caller, persona_id, conversation_id, first.data["messageId"])
    journal.relay(turn, key, first)
    return _journal_response(journal, key, "0")


def _journal_response(journal: TurnJournal, key: str, after: str) -> EventSourceResponse:
    return EventSourceResponse(_stream(journal, key, after), ping=15.0, send_timeout=30.0)


async def _stream(journal: TurnJournal, key: str, after: str) -> AsyncIterator[ServerSentEvent]:
    # The client leaving ends this generator only: the turn's relay goes on (turn_journal.py).
    async for entry in journal.follow(key, after):
        yield ServerSentEvent(data=json.dumps(entry.data), event=entry.name, id=entry.id)


@router.get(
    "/{personaId}/conversations/{conversationId}/messages/{messageId}/events",
    summary="Resume a streamed turn",
    description=(
        "The events of a turn sent with `Accept: text/event-stream`, as Server-Sent Events: from "
        "the start, or after `Last-Event-ID` (the `id:` of the last event you got), until "
        "`completed` or `error`. A client whose stream broke (a page reloaded mid-reply) gets "
        "every event it missed, once, while the turn still runs or up to "
        "`EDRS_GATEWAY_TURN_JOURNAL_SECONDS` (600) after it ended; later, or for a message that "
        "is not yours, 404: read the conversation's messages instead."
    ),
    responses={
        200: {
            "description": "The turn's events",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}, "example": _SSE_EXAMPLE}},
        },
        **_ERRORS,
    },
)
async def resume_turn(
    persona_id: PersonaId,
    conversation_id: ConversationId,
    message_id: Annotated[UUID, Path(alias="messageId", description="`accepted.messageId`")],
    journal: Journal,
    caller: Annotated[Principal, Depends(converse)],
    # A plain optional string (not `str | None`, whose null a client would send as the text
    # "null"); empty means "from the start". Its form is checked below, like a page token: only
    # an id this server issued resumes a stream.
    last_event_id: Annotated[
        str,
        Header(
            alias="Last-Event-ID",
            max_length=41,
            description="`id` of the last event received (`<milliseconds>-<sequence>`); the "
            "stream resumes after it",
        ),
    ] = "",
) -> EventSourceResponse:
    if last_event_id and not _EVENT_ID.fullmatch(last_event_id):
        raise ApiError(
            422,
            "validation_failed",
            "Last-Event-ID: not an event id of this stream (`<milliseconds>-<sequence>`)",
            errors=[{"in": "header", "pointer": "/Last-Event-ID", "detail": "not an event id"}],
        )
    key = journal_key(caller, persona_id, conversation_id, str(message_id))
    if not await journal.exists(key):
        raise turn_not_found(message_id)
    return _journal_response(journal, key, last_event_id or "0")


@router.get(
    "/{personaId}/conversations",
    response_model=ConversationPage,
    summary="List your conversations with a persona",
    description="Yours only, most recent first.",
    responses=_ERRORS,
)
async def list_conversations(
    persona_id: PersonaId,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_conversations)],
) -> ConversationPage:
    request = persona_pb2.ListConversationsRequest(
        persona_id=str(persona_id), user_id=user_id_of(caller)
    )
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await persona_stub(ctx).ListConversations(request)
    return ConversationPage(
        conversations=[ConversationOut.of(c) for c in reply.conversations],
        next_page_token=reply.page.next_page_token,
    )


@router.get(
    "/{personaId}/conversations/{conversationId}/messages",
    response_model=MessagePage,
    summary="Read a conversation",
    description="Its messages, oldest first; none for a conversation you never had.",
    responses=_ERRORS,
)
async def list_messages(
    persona_id: PersonaId,
    conversation_id: ConversationId,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_conversations)],
) -> MessagePage:
    request = persona_pb2.ListMessagesRequest(
        persona_id=str(persona_id), user_id=user_id_of(caller), conversation_id=conversation_id
    )
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await persona_stub(ctx).ListMessages(request)
    return MessagePage(
        messages=[MessageOut.of(m) for m in reply.messages],
        next_page_token=reply.page.next_page_token,
    )
