"""`POST /api/v1/personas/{personaId}/conversations/{conversationId}/voice-messages`: a turn by
voice. The recording is transcribed (the reasoning service's Transcribe), the transcript passes
the tenant's DLP policy and goes through the same turn as a typed message (the persona stores it),
and the reply streams back as Server-Sent Events: the text as it is written and, sentence by
sentence as each one completes, its audio, so the first sentence plays while the rest is written."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from edrs_core.errors import ServiceError
from edrs_core.sentences import SentenceBuffer
from edrs_proto.reasoning.v1 import reasoning_pb2
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from sse_starlette import EventSourceResponse, ServerSentEvent

from edrs_gateway.api.common import AUTHENTICATED, problem_responses, upstream_responses
from edrs_gateway.api.problems import PROBLEM_JSON, ApiError, problem_body, problem_of
from edrs_gateway.api.routes.audio import FORMATS, reasoning_stub, transcribe_upload
from edrs_gateway.api.routes.conversations import EVENT_STREAM, ConversationId
from edrs_gateway.api.routes.personas import PersonaId
from edrs_gateway.api.turns import (
    MAX_TOKENS_MAX,
    SendMessage,
    Turn,
    TurnOptions,
    converse_request,
)
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext
from edrs_gateway.edge.dlp import DlpGuard, blocked_problem

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
        "`maxTokens`, `voice`, `speed` (0.25..4) and `responseFormat` of the spoken reply (`wav` default, "
        "`mp3`, `opus`, `flac`, `pcm`). The transcript passes the tenant's DLP policy and is "
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
    voice: Annotated[str, Form(max_length=100, description="Empty: the default voice")] = "",
    speed: Annotated[float, Form(ge=0.25, le=4.0)] = 1.0,
    response_format: Annotated[
        Literal["wav", "mp3", "opus", "flac", "pcm"], Form(alias="responseFormat")
    ] = "wav",
    max_tokens: Annotated[
        int | None, Form(alias="maxTokens", ge=1, le=MAX_TOKENS_MAX, description="Of the reply")
    ] = None,
) -> EventSourceResponse:
    heard = await transcribe_upload(ctx, file, reasoning_pb2.TranscribeConfig(language=language))
    if not heard.text.strip():
        raise ApiError(422, "no_speech", "the recording holds no words that could be recognised")
    dlp: DlpGuard = request.app.state.dlp
    verdict = await dlp.inspect(caller, {"text": heard.text})
    if verdict.blocked:
        detail, errors = blocked_problem(verdict.hits)
        raise ApiError(422, "sensitive_data_blocked", detail, errors=errors)
    transcript = str(verdict.clean["text"])
    message = SendMessage(text=transcript, options=TurnOptions(max_tokens=max_tokens))
    turn = Turn(ctx, converse_request(caller, persona_id, conversation_id, message))
    try:
        await turn.first()
    except BaseException:
        turn.cancel()
        raise
    speech = reasoning_pb2.SynthesizeRequest(
        voice=voice, speed=speed, format=FORMATS[response_format]
    )
    opening = {"text": transcript, "language": heard.language, "duration": heard.duration_seconds}
    return EventSourceResponse(
        _stream(ctx, turn, opening, speech, response_format), ping=15.0, send_timeout=30.0
    )


def _event(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data), event=name)


async def _stream(
    ctx: GatewayContext,
    turn: Turn,
    opening: dict[str, Any],
    speech: reasoning_pb2.SynthesizeRequest,
    format_name: str,
) -> AsyncIterator[ServerSentEvent]:
    """The turn's events and the reply's audio, merged as each is ready. One task runs the turn
    and hands each completed sentence to a second, which speaks them in order; `completed` is held
    until the last sentence has been spoken, so it ends the stream."""
    out: asyncio.Queue[ServerSentEvent | BaseException | None] = asyncio.Queue()
    sentences: asyncio.Queue[str | None] = asyncio.Queue()

    async def run_turn() -> ServerSentEvent | None:
        buffer = SentenceBuffer()
        completed = None
        async for event in turn.events():
            if event.name == "completed":
                completed = _event(event.name, event.data)
                continue
            await out.put(_event(event.name, event.data))
            if event.name == "delta":
                for sentence in buffer.push(event.data["text"]):
                    await sentences.put(sentence)
        for sentence in buffer.flush():
            await sentences.put(sentence)
        await sentences.put(None)
        return completed

    async def speak() -> None:
        index = 0
        while (sentence := await sentences.get()) is not None:
            request = reasoning_pb2.SynthesizeRequest()
            request.CopyFrom(speech)
            request.text = sentence
            info, parts = None, []
            async for response in reasoning_stub(ctx).Synthesize(
                request, timeout=ctx.settings.audio_timeout_seconds
            ):
                if response.HasField("info"):
                    info = response.info
                else:
                    parts.append(response.audio.data)
            if info is None:
                continue
            await out.put(
                _event(
                    "audio",
                    {
                        "index": index,
                        "text": sentence,
                        "format": format_name,
                        "contentType": info.content_type,
                        "sampleRate": info.sample_rate,
                        "data": base64.b64encode(b"".join(parts)).decode("ascii"),
                    },
                )
            )
            index += 1

    async def run() -> None:
        try:
            talking = asyncio.create_task(speak())
            try:
                completed = await run_turn()
                await talking
            finally:
                talking.cancel()
            if completed is not None:
                await out.put(completed)
        except BaseException as error:  # passed to the stream, which reports it
            await out.put(error)
        finally:
            await out.put(None)

    worker = asyncio.create_task(run())
    try:
        yield _event("transcript", opening)
        while (item := await out.get()) is not None:
            if isinstance(item, ApiError):
                yield _event("error", problem_body(item))
                return
            if isinstance(item, ServiceError):
                yield _event("error", problem_body(problem_of(item)))
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        worker.cancel()
        with contextlib.suppress(BaseException):
            await worker
        turn.cancel()  # no-op once the call has ended
