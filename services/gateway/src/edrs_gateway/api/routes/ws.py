"""`/api/v1/ws`: conversations over one WebSocket, both ways, several at once, with typing frames.

Authentication (browsers cannot set headers on a WebSocket): `Authorization: Bearer <token>`, or
`?access_token=<token>`, or the subprotocol `bearer.<token>` (offer `edrs.v1` beside it and the
server selects that). Without a valid token the socket is closed with 4401, without the
`conversations:write` permission with 4403; when the token expires or is revoked, with 4401
(revocation is checked before each frame is handled and every REVOCATION_CHECK_SECONDS).

Client frames (JSON text): `message` {personaId, conversationId, text, options?, requestId?},
`typing` (the user is typing: accepted, not forwarded), `ping`. Server frames: `accepted`,
`queued`, `typing` (state `started` when the persona starts, `stopped` when its turn ends),
`delta`, `completed` (the same body as the HTTP reply), `error` {problem}, `pong`; each names its
conversationId and requestId. A bad frame gets an `error` frame; the socket stays open.

A turn by voice (api/voice.py): `audio.start` {personaId, conversationId, requestId?, format
(`file`: any container FFmpeg reads; `pcm16`: raw 16-bit little-endian mono at `sampleRate`),
language?, voice?, speed?, responseFormat?, maxTokens?}, then the recording as binary frames, then
`audio.end`. The server answers `transcript` {text, language, duration}, the turn's frames, and
per sentence of the reply an `audio` frame {index, text, format, contentType, sampleRate, size}
followed at once by one binary frame holding that sentence's audio (a whole file of the format).
One recording is open at a time on a socket; its turn runs while the next is recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

from edrs_core.context import request_context
from edrs_core.errors import ServiceError
from edrs_core.wav import wav_header
from fastapi import APIRouter, WebSocket
from opentelemetry import trace
from pydantic import Field, TypeAdapter, ValidationError
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from edrs_gateway.api.models import SINGLE_LINE, ApiModel
from edrs_gateway.api.problems import ApiError, problem_body, problem_of
from edrs_gateway.api.turns import (
    CONVERSATION_ID_PATTERN,
    MAX_TOKENS_MAX,
    SendMessage,
    Turn,
    TurnEvent,
    converse_request,
)
from edrs_gateway.api.voice import ReplyFormat, SpokenSentence, VoiceOptions, start_voice_turn
from edrs_gateway.auth.dependencies import may
from edrs_gateway.auth.middleware import verify_unrevoked
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.auth.tokens import InvalidToken, VerifiedToken
from edrs_gateway.context import GatewayContext
from edrs_gateway.edge import DlpGuard, RateLimiter, blocked_problem

log = logging.getLogger("edrs.gateway.ws")
router = APIRouter(tags=["conversations"])

SUBPROTOCOL = "edrs.v1"
BEARER_SUBPROTOCOL = "bearer."
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
# RFC 6455: a close reason is at most 123 bytes.
_REASON_BYTES = 123
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
# How often an idle socket looks whether its token was revoked (a frame looks at once).
REVOCATION_CHECK_SECONDS = 5.0


class MessageFrame(SendMessage):
    type: Literal["message"]
    persona_id: UUID
    conversation_id: str = Field(pattern=CONVERSATION_ID_PATTERN)
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


class TypingFrame(ApiModel):
    type: Literal["typing"]
    persona_id: UUID | None = None
    conversation_id: str | None = Field(default=None, pattern=CONVERSATION_ID_PATTERN)
    state: str | None = Field(default=None, max_length=20, pattern=SINGLE_LINE)
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


class PingFrame(ApiModel):
    type: Literal["ping"]
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


# A raw PCM recording's sample rates: telephone to studio.
PCM_RATE_MIN, PCM_RATE_MAX = 8_000, 48_000


class AudioStartFrame(ApiModel):
    """Opens a recording; the binary frames that follow are its audio, until `audio.end`."""

    type: Literal["audio.start"]
    persona_id: UUID
    conversation_id: str = Field(pattern=CONVERSATION_ID_PATTERN)
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)
    format: Literal["file", "pcm16"] = "file"
    sample_rate: int | None = Field(default=None, ge=PCM_RATE_MIN, le=PCM_RATE_MAX)
    language: str = Field(default="", pattern=r"^([a-zA-Z]{2,8})?$")
    voice: str = Field(default="", max_length=100, pattern=SINGLE_LINE)
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    response_format: ReplyFormat = "wav"
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_MAX)


class AudioEndFrame(ApiModel):
    """Closes the open recording: it is transcribed and its turn runs."""

    type: Literal["audio.end"]
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


Frame = MessageFrame | TypingFrame | PingFrame | AudioStartFrame | AudioEndFrame
ClientFrame: TypeAdapter[Frame] = TypeAdapter(Annotated[Frame, Field(discriminator="type")])


class _Recording:
    """The audio of an open recording, handed to the Transcribe call as it arrives."""

    def __init__(self, frame: AudioStartFrame, ids: dict[str, Any], max_bytes: int) -> None:
        self.frame = frame
        self.ids = ids
        self.max_bytes = max_bytes
        self.received = 0
        self._pieces: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        if frame.format == "pcm16":
            self._pieces.put_nowait(wav_header(frame.sample_rate or 16_000))

    def add(self, data: bytes) -> bool:
        """Queue a piece; False when it takes the recording over its size limit."""
        self.received += len(data)
        if self.received > self.max_bytes:
            return False
        if data:
            self._pieces.put_nowait(data)
        return True

    def end(self) -> None:
        self._pieces.put_nowait(None)

    async def pieces(self) -> AsyncIterator[bytes]:
        while (piece := await self._pieces.get()) is not None:
            yield piece


def _reason(text: str) -> str:
    encoded = text.encode()[:_REASON_BYTES]
    return encoded.decode(errors="ignore")


def _bearer_token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    query_token = websocket.query_params.get("access_token")
    if query_token is not None:
        return query_token
    for protocol in _offered(websocket):
        if protocol.startswith(BEARER_SUBPROTOCOL):
            return protocol.removeprefix(BEARER_SUBPROTOCOL)
    return None


def _offered(websocket: WebSocket) -> list[str]:
    return [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]


def _selected_subprotocol(websocket: WebSocket) -> str | None:
    """A browser fails the handshake when it offered subprotocols and none is selected: pick
    `edrs.v1` when offered, else echo the bearer one (it goes back only to its sender)."""
    offered = [p for p in _offered(websocket) if p]
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    return next((p for p in offered if p.startswith(BEARER_SUBPROTOCOL)), None)


async def _authenticate(ctx: GatewayContext, token: str | None) -> VerifiedToken:
    """The caller's verified, unrevoked token; InvalidToken otherwise."""
    if not token:
        raise InvalidToken(
            "this socket needs an access token: Authorization: Bearer, ?access_token= or the "
            "subprotocol bearer.<token>"
        )
    return await verify_unrevoked(ctx.tokens, ctx.revocations, token)


@router.websocket("/ws", name="conversation_socket")
async def conversation_socket(websocket: WebSocket) -> None:
    ctx: GatewayContext = websocket.app.state.ctx
    # Accepted first in every case: a close code and reason only reach a browser over an open
    # socket (a refused handshake is a bare HTTP 403 to it).
    await websocket.accept(subprotocol=_selected_subprotocol(websocket))
    try:
        verified = await _authenticate(ctx, _bearer_token(websocket))
    except InvalidToken as exc:
        await websocket.close(CLOSE_UNAUTHENTICATED, _reason(str(exc)))
        return
    principal = verified.principal
    if not may(principal, Permission.CONVERSE):
        await websocket.close(
            CLOSE_FORBIDDEN,
            _reason(f"the role {principal.role!r} does not allow {Permission.CONVERSE.value!r}"),
        )
        return
    await _Session(websocket, ctx, verified).run()


class _Session:
    """One authenticated socket: reads frames, runs each message's turn in its own task."""

    def __init__(self, websocket: WebSocket, ctx: GatewayContext, token: VerifiedToken) -> None:
        self.websocket = websocket
        self.ctx = ctx
        self.token = token
        self.principal: Principal = token.principal
        self.expires_at = float(token.expires_at)
        self.dlp: DlpGuard = websocket.app.state.dlp
        self.limiter: RateLimiter | None = websocket.app.state.rate_limiter
        self._send_lock = asyncio.Lock()
        self._turns: set[asyncio.Task[None]] = set()
        self._recording: _Recording | None = None

    async def send(self, frame: dict[str, Any]) -> None:
        # Turns of several conversations write to the one socket: one frame at a time.
        async with self._send_lock:
            if self.websocket.application_state == WebSocketState.CONNECTED:
                await self.websocket.send_text(json.dumps(frame))

    async def send_audio(self, frame: dict[str, Any], data: bytes) -> None:
        """A JSON frame and the binary frame it describes, with nothing between them."""
        async with self._send_lock:
            if self.websocket.application_state == WebSocketState.CONNECTED:
                await self.websocket.send_text(json.dumps({**frame, "size": len(data)}))
                await self.websocket.send_bytes(data)

    async def run(self) -> None:
        watch = asyncio.create_task(self._watch_token())
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if await self._closed_for_revocation():
                    return
                text = message.get("text")
                if text is None:
                    await self._audio(message.get("bytes") or b"")
                    continue
                await self._handle(text)
        except WebSocketDisconnect:
            return
        finally:
            watch.cancel()
            for task in self._turns:
                task.cancel()
            if self._turns:
                await asyncio.gather(*self._turns, return_exceptions=True)

    async def _watch_token(self) -> None:
        """Close the socket when its token expires, or when it is revoked while the socket idles."""
        while True:
            left = self.expires_at - time.time()
            if left <= 0:
                await self._close_unauthenticated("the access token has expired")
                return
            await asyncio.sleep(min(left, REVOCATION_CHECK_SECONDS))
            if await self._closed_for_revocation():
                return

    async def _closed_for_revocation(self) -> bool:
        """Close the socket if its token has been revoked since it was opened; True if so."""
        try:
            revoked = await self.ctx.revocations.is_revoked(self.token)
        except RedisError:
            # As at the HTTP edge, verification needs Redis; the next check tries again.
            log.warning("revocation check failed", exc_info=True)
            return False
        if revoked:
            await self._close_unauthenticated("the access token has been revoked")
        return revoked

    async def _close_unauthenticated(self, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            async with self._send_lock:
                await self.websocket.close(CLOSE_UNAUTHENTICATED, reason)

    async def _error(self, error: ApiError, **ids: Any) -> None:
        await self.send({"type": "error", **ids, "problem": problem_body(error, "/api/v1/ws")})

    async def _handle(self, text: str) -> None:
        try:
            document = json.loads(text)
        except ValueError:
            await self._error(ApiError(400, "invalid_frame", "the frame is not valid JSON"))
            return
        ids = _ids_of(document)
        if isinstance(document, dict) and document.get("type") == "message":
            verdict = await self.dlp.inspect(self.principal, document)
            if verdict.blocked:
                detail, errors = blocked_problem(verdict.hits)
                await self._error(
                    ApiError(422, "sensitive_data_blocked", detail, errors=errors), **ids
                )
                return
            document = verdict.clean
        try:
            frame = ClientFrame.validate_python(document)
        except ValidationError as exc:
            await self._error(_invalid(exc), **ids)
            return
        if isinstance(frame, PingFrame):
            await self.send({"type": "pong", "requestId": frame.request_id})
        elif isinstance(frame, MessageFrame):
            await self._start_turn(frame)
        elif isinstance(frame, AudioStartFrame):
            await self._start_recording(frame)
        elif isinstance(frame, AudioEndFrame):
            await self._end_recording(frame)
        # A typing frame is accepted and goes no further: nothing behind the gateway uses it.

    def _ids(self, frame: MessageFrame | AudioStartFrame) -> dict[str, Any]:
        return {
            "personaId": str(frame.persona_id),
            "conversationId": frame.conversation_id,
            "requestId": frame.request_id or uuid.uuid4().hex,
        }

    async def _admitted(self, ids: dict[str, Any]) -> bool:
        """Take the tenant's rate-limit slot for a turn (released by _finish); an error frame and
        False when the tenant is over its limit."""
        if self.limiter is None:
            return True
        try:
            decision = await self.limiter.acquire(
                self._subject, self.principal.tier, ids["requestId"]
            )
        except RedisError:
            # As the HTTP middleware does: an unreachable limiter lets the message through.
            log.warning("rate limiter unavailable; message let through", exc_info=True)
            return True
        if not decision.allowed:
            await self._error(ApiError(429, "rate_limited", decision.refusal()), **ids)
            return False
        return True

    @property
    def _subject(self) -> str:
        return f"tenant:{self.principal.tenant_id}"

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._turns.add(task)
        task.add_done_callback(self._turns.discard)
        return task

    async def _start_turn(self, frame: MessageFrame) -> None:
        ids = self._ids(frame)
        if not await self._admitted(ids):
            return

        async def run() -> None:
            request = converse_request(
                self.principal, frame.persona_id, frame.conversation_id, frame
            )
            turn = Turn(self.ctx, request)
            try:
                async for event in turn.events():
                    await self._send_event(event, ids)
            finally:
                turn.cancel()

        self._spawn(self._turn("gateway.ws.message", ids, run))

    async def _send_event(self, event: TurnEvent, ids: dict[str, Any]) -> None:
        if event.name == "started":
            await self.send({"type": "typing", **ids, "state": "started"})
        else:
            await self.send({"type": event.name, **ids, **event.data})

    # -- voice ------------------------------------------------------------------------------

    async def _start_recording(self, frame: AudioStartFrame) -> None:
        ids = self._ids(frame)
        if self._recording is not None:
            await self._error(
                ApiError(
                    409,
                    "recording_open",
                    f"recording {self._recording.ids['requestId']} is still open: send "
                    "audio.end before starting another",
                ),
                **ids,
            )
            return
        if frame.format == "pcm16" and frame.sample_rate is None:
            await self._error(
                ApiError(
                    422,
                    "validation_failed",
                    "/sampleRate: required when format is pcm16",
                    errors=[{"in": "frame", "pointer": "/sampleRate", "detail": "Field required"}],
                ),
                **ids,
            )
            return
        if not await self._admitted(ids):
            return
        recording = _Recording(frame, ids, self.ctx.settings.audio_max_upload_bytes)
        self._recording = recording

        async def run() -> None:
            options = VoiceOptions(
                language=frame.language,
                voice=frame.voice,
                speed=frame.speed,
                response_format=frame.response_format,
                max_tokens=frame.max_tokens,
            )
            try:
                voice = await start_voice_turn(
                    self.ctx,
                    self.dlp,
                    self.principal,
                    frame.persona_id,
                    frame.conversation_id,
                    recording.pieces(),
                    options,
                )
            finally:
                # Refused before audio.end (audio the service cannot read): no longer open.
                if self._recording is recording:
                    self._recording = None
            try:
                await self.send({"type": "transcript", **ids, **voice.transcript})
                async for item in voice.events():
                    if isinstance(item, SpokenSentence):
                        await self.send_audio(
                            {"type": "audio", **ids, **item.describe()}, item.data
                        )
                    else:
                        await self._send_event(item, ids)
            finally:
                voice.cancel()

        recording.task = self._spawn(self._turn("gateway.ws.voice", ids, run))

    async def _audio(self, data: bytes) -> None:
        recording = self._recording
        if recording is None:
            await self._error(
                ApiError(
                    400,
                    "invalid_frame",
                    "binary frames are the audio of a recording: send audio.start first",
                )
            )
            return
        if not recording.add(data):
            self._recording = None
            await self._error(
                ApiError(
                    413,
                    "payload_too_large",
                    f"the recording is larger than {recording.max_bytes} bytes",
                ),
                **recording.ids,
            )
            if recording.task is not None:  # its end (`typing` stopped) follows the error
                recording.task.cancel()

    async def _end_recording(self, frame: AudioEndFrame) -> None:
        recording = self._recording
        if recording is None or frame.request_id not in (None, recording.ids["requestId"]):
            await self._error(
                ApiError(409, "no_recording", "no recording of this request is open"),
                **({"requestId": frame.request_id} if frame.request_id else {}),
            )
            return
        self._recording = None
        recording.end()

    async def _turn(
        self, span: str, ids: dict[str, Any], run: Callable[[], Awaitable[None]]
    ) -> None:
        """Run one turn (`run`) as the caller, reporting its failure as an error frame."""
        tracer = trace.get_tracer("edrs_gateway.ws")
        try:
            identity = await self.ctx.fleet_tokens.for_principal(self.principal)
            with (
                request_context(self.principal.tenant_id, uuid.uuid4().hex, identity),
                tracer.start_as_current_span(span, kind=trace.SpanKind.SERVER),
            ):
                await run()
        except ApiError as error:
            await self._error(error, **ids)
        except ServiceError as error:
            await self._error(problem_of(error), **ids)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("turn %s failed", ids["requestId"])
            await self._error(
                ApiError(500, "internal_error", "internal error; quote the request id"), **ids
            )
        finally:
            await asyncio.shield(self._finish(ids, self._subject))

    async def _finish(self, ids: dict[str, Any], subject: str) -> None:
        try:
            await self.send({"type": "typing", **ids, "state": "stopped"})
        except Exception:  # the socket is gone: nothing left to tell
            log.debug("socket closed before the end of turn %s", ids["requestId"])
        if self.limiter is not None:
            try:
                await self.limiter.release(subject, ids["requestId"])
            except Exception:
                log.warning("rate limiter release failed", exc_info=True)


def _ids_of(document: Any) -> dict[str, Any]:
    """The ids a client put in a frame, echoed in an error frame so it can tell which failed."""
    if not isinstance(document, dict):
        return {}
    keys = ("personaId", "conversationId", "requestId")
    return {k: document[k] for k in keys if isinstance(document.get(k), str)}


def _invalid(exc: ValidationError) -> ApiError:
    errors = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["type"]
        elif loc and loc[0] in ("message", "typing", "ping", "audio.start", "audio.end"):
            loc = loc[1:]  # the discriminator's branch, not a field of the frame
        errors.append({"in": "frame", "pointer": "/" + "/".join(loc), "detail": e["msg"]})
    first = errors[0]
    return ApiError(
        422, "validation_failed", f"{first['pointer']}: {first['detail']}", errors=errors
    )
