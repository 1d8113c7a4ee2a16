"""A turn by voice, whatever carries it (multipart and Server-Sent Events over HTTP, or frames of
the WebSocket): the recording is transcribed (the reasoning service's Transcribe), the transcript
passes the tenant's DLP policy and goes through the same turn as a typed message (the persona
stores it), and each sentence of the reply is spoken (Synthesize) in the persona's voice as soon as
the model has written it, while the model writes the next."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from edrs_core.sentences import SentenceBuffer
from edrs_proto.persona.v1 import persona_pb2
from edrs_proto.reasoning.v1 import reasoning_pb2

from edrs_gateway.api.problems import ApiError
from edrs_gateway.api.routes.audio import FORMATS, reasoning_stub, transcribe
from edrs_gateway.api.routes.personas import persona_stub
from edrs_gateway.api.turns import SendMessage, Turn, TurnEvent, TurnOptions, converse_request
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import GatewayContext
from edrs_gateway.edge.dlp import DlpGuard, blocked_problem

ReplyFormat = Literal["wav", "mp3", "opus", "flac", "pcm"]


@dataclass(frozen=True)
class VoiceOptions:
    """How to hear the recording and speak the reply. An empty `voice` and a `speed` of None
    take the persona's (and, when it has none, the service's default voice at speed 1)."""

    language: str = ""
    voice: str = ""
    speed: float | None = None
    response_format: ReplyFormat = "wav"
    max_tokens: int | None = None


@dataclass(frozen=True)
class SpokenSentence:
    """One sentence of the reply and its audio: a whole file of `format`."""

    index: int
    text: str
    format: str
    content_type: str
    sample_rate: int
    data: bytes

    def describe(self) -> dict[str, Any]:
        """Its JSON description, without the audio."""
        return {
            "index": self.index,
            "text": self.text,
            "format": self.format,
            "contentType": self.content_type,
            "sampleRate": self.sample_rate,
        }


async def start_voice_turn(
    ctx: GatewayContext,
    dlp: DlpGuard,
    caller: Principal,
    persona_id: UUID,
    conversation_id: str,
    recording: AsyncIterator[bytes],
    options: VoiceOptions,
) -> VoiceTurn:
    """Transcribe the recording and start the turn; raises (ApiError, ServiceError) before
    anything is streamed: bad audio, no words, a transcript DLP blocks, a turn the persona
    service refuses."""
    heard = await transcribe(
        ctx, recording, reasoning_pb2.TranscribeConfig(language=options.language)
    )
    if not heard.text.strip():
        raise ApiError(422, "no_speech", "the recording holds no words that could be recognised")
    verdict = await dlp.inspect(caller, {"text": heard.text})
    if verdict.blocked:
        detail, errors = blocked_problem(verdict.hits)
        raise ApiError(422, "sensitive_data_blocked", detail, errors=errors)
    text = str(verdict.clean["text"])
    message = SendMessage(text=text, options=TurnOptions(max_tokens=options.max_tokens))
    turn = Turn(ctx, converse_request(caller, persona_id, conversation_id, message))
    try:
        await turn.first()
        speech = await _speech_request(ctx, persona_id, options)
    except BaseException:
        turn.cancel()
        raise
    transcript = {"text": text, "language": heard.language, "duration": heard.duration_seconds}
    return VoiceTurn(ctx, turn, transcript, speech, options.response_format)


async def _speech_request(
    ctx: GatewayContext, persona_id: UUID, options: VoiceOptions
) -> reasoning_pb2.SynthesizeRequest:
    """The reply's voice: the one asked for, else the persona's."""
    voice, speed = options.voice, options.speed
    if not voice or speed is None:
        persona = await persona_stub(ctx).GetPersona(
            persona_pb2.GetPersonaRequest(id=str(persona_id))
        )
        voice = voice or persona.voice.name
        speed = speed if speed is not None else (persona.voice.speed or 1.0)
    return reasoning_pb2.SynthesizeRequest(
        voice=voice, speed=speed, format=FORMATS[options.response_format]
    )


class VoiceTurn:
    """A started voice turn. `transcript` is what was heard ({text, language, duration}, the text
    after DLP); `events()` yields the turn's events with a SpokenSentence after each sentence is
    spoken, `completed` last, after the last audio."""

    def __init__(
        self,
        ctx: GatewayContext,
        turn: Turn,
        transcript: dict[str, Any],
        speech: reasoning_pb2.SynthesizeRequest,
        format_name: str,
    ) -> None:
        self.ctx = ctx
        self.turn = turn
        self.transcript = transcript
        self.speech = speech
        self.format_name = format_name

    def cancel(self) -> None:
        self.turn.cancel()  # no-op once the call has ended

    async def events(self) -> AsyncIterator[TurnEvent | SpokenSentence]:
        """Merged as each is ready: one task runs the turn and hands each completed sentence to a
        second, which speaks them in order. A failure of either raises here (ApiError,
        ServiceError)."""
        out: asyncio.Queue[TurnEvent | SpokenSentence | BaseException | None] = asyncio.Queue()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()

        async def run_turn() -> TurnEvent | None:
            buffer = SentenceBuffer()
            completed = None
            async for event in self.turn.events():
                if event.name == "completed":
                    completed = event
                    continue
                await out.put(event)
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
                spoken = await self._speak(index, sentence)
                if spoken is not None:
                    await out.put(spoken)
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
            except BaseException as error:  # handed to the reader, which raises it
                await out.put(error)
            finally:
                await out.put(None)

        worker = asyncio.create_task(run())
        try:
            while (item := await out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            worker.cancel()
            with contextlib.suppress(BaseException):
                await worker
            self.cancel()

    async def _speak(self, index: int, sentence: str) -> SpokenSentence | None:
        request = reasoning_pb2.SynthesizeRequest()
        request.CopyFrom(self.speech)
        request.text = sentence
        info, parts = None, []
        async for response in reasoning_stub(self.ctx).Synthesize(
            request, timeout=self.ctx.settings.audio_timeout_seconds
        ):
            if response.HasField("info"):
                info = response.info
            else:
                parts.append(response.audio.data)
        if info is None:
            return None
        return SpokenSentence(
            index=index,
            text=sentence,
            format=self.format_name,
            content_type=info.content_type,
            sample_rate=info.sample_rate,
            data=b"".join(parts),
        )
