"""`POST /api/v1/personas/{personaId}/conversations/{conversationId}/voice-messages` (and the
same with a multipart body to `.../messages`, its alias): a turn by voice over HTTP (api/voice.py),
answered as Server-Sent Events: the transcript, the text as it is written and, sentence by
sentence as each one completes, its audio, so the first sentence plays while the rest is written."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from edrs_core.errors import ServiceError
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import Scope

from edrs_gateway.api.common import AUTHENTICATED, problem_responses, upstream_responses
from edrs_gateway.api.problems import PROBLEM_JSON, ApiError, problem_body, problem_of
from edrs_gateway.api.routes.audio import file_pieces
from edrs_gateway.api.routes.conversations import EVENT_STREAM, ConversationId
from edrs_gateway.api.routes.personas import PersonaId
from edrs_gateway.api.turns import MAX_TOKENS_MAX
from edrs_gateway.api.voice import (
    ReplyFormat,
    SpokenSentence,
    VoiceOptions,
    VoiceTurn,
    start_voice_turn,
)
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx

router = APIRouter(prefix="/personas", tags=["conversations"])

converse = require(Permission.CONVERSE)

_EXAMPLE = (
    'event: transcript\ndata: {"text": "What should I read next?", "language": "en", ...}\n\n'
    'event: accepted\ndata: {"messageId": "..."}\n\n'
    "event: started\ndata: {}\n\n"
    'event: delta\ndata: {"text": "Try"}\n\n'
    'event: audio\ndata: {"index": 0, "text": "Try Middlemarch.", "format": "wav", '
    '"contentType": "audio/wav", "sampleRate": 22050, "data": "UklGR..."}\n\n'
    'event: completed\ndata: {"messageId": "...", "reply": {...}, ...}\n\n'
)


@router.post(
    "/{personaId}/conversations/{conversationId}/voice-messages",
    summary="Talk to a persona by voice",
    description=(
        "Multipart: `file` (a recording: WAV, MP3, OGG/Opus, WebM...), optional `language`, "
        "`maxTokens`, `voice`, `speed` (0.25..4) and `responseFormat` of the spoken reply (`wav` "
        "default, `mp3`, `opus`, `flac`, `pcm`); `voice` and `speed` left out are the persona's. "
        "The same multipart body sent to `.../messages` runs this same turn. The transcript passes the tenant's DLP policy and is "
        "stored as your message. Answered as Server-Sent Events: `transcript` {text, language, "
        "duration}, then the turn's events (`accepted`, `queued`, `started`, `delta`, "
        "`completed`) with `audio` events in between: {index, text, format, contentType, "
        "sampleRate, data}, one per sentence of the reply as soon as it is written, `data` a "
        "whole file of the format (base64). `completed` comes last. Bad audio is refused "
        "before the turn as by `/audio/transcriptions`; speech with no words is 422 `no_speech`."
    ),
    responses={
        200: {
            "description": "The turn as it happens",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}, "example": _EXAMPLE}},
        },
        **problem_responses(*AUTHENTICATED, 404, 413),
        **upstream_responses(),
        409: {
            "description": "The persona is archived, or (reject policy) a turn is running",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    },
)
async def send_voice_message(
    persona_id: PersonaId,
    conversation_id: ConversationId,
    request: Request,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(converse)],
    file: Annotated[UploadFile, File(description="The recording")],
    language: Annotated[
        str, Form(pattern=r"^([a-zA-Z]{2,8})?$", description="ISO-639-1 code; empty: detect")
    ] = "",
    voice: Annotated[
        str, Form(max_length=100, description="Empty: the persona's voice (or the default)")
    ] = "",
    speed: Annotated[
        float | None, Form(ge=0.25, le=4.0, description="Empty: the persona's speed (or 1)")
    ] = None,
    response_format: Annotated[ReplyFormat, Form(alias="responseFormat")] = "wav",
    max_tokens: Annotated[
        int | None, Form(alias="maxTokens", ge=1, le=MAX_TOKENS_MAX, description="Of the reply")
    ] = None,
) -> EventSourceResponse:
    options = VoiceOptions(
        language=language,
        voice=voice,
        speed=speed,
        response_format=response_format,
        max_tokens=max_tokens,
    )
    turn = await start_voice_turn(
        ctx,
        request.app.state.dlp,
        caller,
        persona_id,
        conversation_id,
        file_pieces(file),
        options,
    )
    return EventSourceResponse(_stream(turn), ping=15.0, send_timeout=30.0)


def _event(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data), event=name)


async def _stream(turn: VoiceTurn) -> AsyncIterator[ServerSentEvent]:
    try:
        yield _event("transcript", turn.transcript)
        async for item in turn.events():
            if isinstance(item, SpokenSentence):
                data = base64.b64encode(item.data).decode("ascii")
                yield _event("audio", {**item.describe(), "data": data})
            else:
                yield _event(item.name, item.data)
    except ApiError as error:
        yield _event("error", problem_body(error))
    except ServiceError as error:  # the headers are sent: the handler can no longer answer
        yield _event("error", problem_body(problem_of(error)))
    finally:
        turn.cancel()


class _MultipartOnly(APIRoute):
    """Matches only requests whose body is multipart/form-data, so that the messages route
    takes a recording as well as JSON: a multipart request goes here, any other to the JSON
    route of the same path (conversations.py)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match == Match.NONE:
            return match, child
        content_type = Headers(scope=scope).get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            return Match.NONE, {}
        return match, child


# `POST .../messages` with a multipart body is this same voice turn: the documented alias of
# `.../voice-messages` (the OpenAPI document shows it as a second body of the messages route).
# Included before the JSON route (api/app.py), which would otherwise take every POST there.
messages_alias = APIRouter(prefix="/personas", route_class=_MultipartOnly)
messages_alias.add_api_route(
    "/{personaId}/conversations/{conversationId}/messages",
    send_voice_message,
    methods=["POST"],
    include_in_schema=False,
)
