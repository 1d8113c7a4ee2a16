"""`/api/v1/audio`: speech to text and text to speech, shaped as OpenAI's audio API
(`/audio/transcriptions`, `/audio/speech`) so its clients work, run by the reasoning service's
Transcribe and Synthesize calls. Nothing is stored: the audio and its text live for the request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import ConfigDict, Field

from edrs_gateway.api.common import AUTHENTICATED, problem_responses, upstream_responses
from edrs_gateway.api.models import MULTI_LINE, SINGLE_LINE, ApiModel
from edrs_gateway.api.problems import ApiError
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(prefix="/audio", tags=["audio"])

# Speaking and listening are part of talking to personas.
converse = require(Permission.CONVERSE)

# The reasoning service's limits (edrs_reasoning.voice.speech), checked here first.
PROMPT_MAX, SPEECH_MAX = 1_000, 4_096
UPLOAD_PIECE = 64 * 1024

FORMATS: dict[str, reasoning_pb2.AudioFormat.ValueType] = {
    "wav": reasoning_pb2.AUDIO_FORMAT_WAV,
    "pcm": reasoning_pb2.AUDIO_FORMAT_PCM,
    "mp3": reasoning_pb2.AUDIO_FORMAT_MP3,
    "opus": reasoning_pb2.AUDIO_FORMAT_OPUS,
    "flac": reasoning_pb2.AUDIO_FORMAT_FLAC,
}


class WordOut(ApiModel):
    word: str
    start: float = Field(description="Seconds from the start of the audio")
    end: float
    probability: float


class SegmentOut(ApiModel):
    id: int
    start: float
    end: float
    text: str


class TranscriptionOut(ApiModel):
    """OpenAI's `json` answer (`text`) plus the language, the duration and, when asked with
    `timestamp_granularities[]=word`, the words; `verbose_json` adds `task` and `segments`."""

    text: str
    language: str = Field(description="ISO-639-1 code, as given or detected")
    duration: float = Field(description="Seconds of audio")
    words: list[WordOut] | None = None
    task: Literal["transcribe"] | None = None
    segments: list[SegmentOut] | None = None


class SpeechIn(ApiModel):
    """OpenAI's speech request; `response_format` is accepted as written by OpenAI's clients."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"input": "Hello! How can I help?", "responseFormat": "mp3", "speed": 1}]
        }
    )

    input: str = Field(min_length=1, max_length=SPEECH_MAX, pattern=MULTI_LINE)
    voice: str = Field(
        default="",
        max_length=100,
        pattern=SINGLE_LINE,
        description="A voice the service offers; empty: its default voice",
    )
    model: str = Field(
        default="",
        max_length=100,
        pattern=SINGLE_LINE,
        description="Accepted for OpenAI compatibility; the service's speech model answers",
    )
    response_format: Literal["mp3", "opus", "wav", "flac", "pcm"] = Field(
        default="mp3", description="`pcm`: raw 16-bit little-endian mono at `X-Sample-Rate`"
    )
    speed: float = Field(default=1.0, ge=0.25, le=4.0)


class VoicesOut(ApiModel):
    voices: list[str] = Field(description="What `voice` may name (speech, a persona's voice)")
    default: str = Field(description="The voice used when none is named; empty: speech is off")
    model: str = Field(description="The speech model behind them")


def reasoning_stub(ctx: GatewayContext) -> reasoning_pb2_grpc.ReasoningServiceAsyncStub:
    return ctx.runtime.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub)


_ERRORS = {**problem_responses(*AUTHENTICATED, 413), **upstream_responses()}


async def file_pieces(file: UploadFile) -> AsyncIterator[bytes]:
    """An uploaded file, read a piece at a time."""
    while piece := await file.read(UPLOAD_PIECE):
        yield piece


async def _requests(
    config: reasoning_pb2.TranscribeConfig, recording: AsyncIterator[bytes]
) -> AsyncIterator[reasoning_pb2.TranscribeRequest]:
    yield reasoning_pb2.TranscribeRequest(config=config)
    async for piece in recording:
        yield reasoning_pb2.TranscribeRequest(audio=piece)


async def transcribe(
    ctx: GatewayContext, recording: AsyncIterator[bytes], config: reasoning_pb2.TranscribeConfig
) -> reasoning_pb2.TranscribeResponse:
    """A recording transcribed by the reasoning service, streamed to it piece by piece as the
    pieces come (an upload being read, or audio frames of the WebSocket)."""
    result: reasoning_pb2.TranscribeResponse = await reasoning_stub(ctx).Transcribe(
        _requests(config, recording), timeout=ctx.settings.audio_timeout_seconds
    )
    return result


@router.post(
    "/transcriptions",
    response_model=TranscriptionOut,
    response_model_exclude_none=True,
    summary="Transcribe speech",
    description="Multipart, as OpenAI's `/audio/transcriptions`: `file` (WAV, MP3, OGG/Opus, "
    "WebM, FLAC, M4A...), optional `language`, `prompt`, `temperature`, `response_format` (`json`, "
    "`verbose_json`, `text`) and `timestamp_granularities[]` (`word`, `segment`). Audio that is "
    "empty, not audio, in a codec that cannot be decoded, or longer than the service's limit (10 "
    "minutes by default) is refused with 422 naming the problem.",
    responses={
        **_ERRORS,
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
    },
)
async def create_transcription(
    ctx: Ctx,
    caller: Annotated[Principal, Depends(converse)],
    file: Annotated[UploadFile, File(description="The audio file")],
    model: Annotated[str, Form(max_length=100, description="Accepted, not used")] = "",
    language: Annotated[
        str, Form(pattern=r"^([a-zA-Z]{2,8})?$", description="ISO-639-1 code; empty: detect")
    ] = "",
    prompt: Annotated[str, Form(max_length=PROMPT_MAX, description="Words to expect")] = "",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    response_format: Annotated[Literal["json", "verbose_json", "text"], Form()] = "json",
    timestamp_granularities: Annotated[
        list[Literal["word", "segment"]] | None, Form(alias="timestamp_granularities[]")
    ] = None,
) -> Any:
    granularities = set(timestamp_granularities or ())
    config = reasoning_pb2.TranscribeConfig(
        language=language,
        prompt=prompt,
        temperature=temperature,
        word_timestamps="word" in granularities,
    )
    result = await transcribe(ctx, file_pieces(file), config)
    if response_format == "text":
        return PlainTextResponse(result.text)
    verbose = response_format == "verbose_json"
    return TranscriptionOut(
        text=result.text,
        language=result.language,
        duration=result.duration_seconds,
        words=[
            WordOut(word=w.word, start=w.start, end=w.end, probability=w.probability)
            for w in result.words
        ]
        if "word" in granularities
        else None,
        task="transcribe" if verbose else None,
        segments=[
            SegmentOut(id=s.id, start=s.start, end=s.end, text=s.text) for s in result.segments
        ]
        if verbose
        else None,
    )


@router.get(
    "/voices",
    response_model=VoicesOut,
    summary="List the voices",
    description="The voices speech can be given in (the reasoning service's), the first the "
    "default: what `/audio/speech`, a voice turn and a persona's `voice.name` may name.",
    responses={**problem_responses(*AUTHENTICATED), **upstream_responses()},
)
async def list_voices(ctx: Ctx, caller: Annotated[Principal, Depends(converse)]) -> VoicesOut:
    info = await reasoning_stub(ctx).GetModelInfo(reasoning_pb2.GetModelInfoRequest())
    voices = list(info.voices)
    return VoicesOut(voices=voices, default=voices[0] if voices else "", model=info.speech_model)


@router.post(
    "/speech",
    response_class=StreamingResponse,
    summary="Speak a text",
    description="As OpenAI's `/audio/speech`: the audio streams as it is synthesised, sentence by "
    "sentence, so playback can start before the whole text is spoken. `X-Sample-Rate` and "
    "`X-Voice` headers describe it.",
    responses={
        **_ERRORS,
        200: {
            "description": "The audio, in the format asked",
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in ("audio/mpeg", "audio/ogg", "audio/wav", "audio/flac", "audio/pcm")
            },
        },
    },
)
async def create_speech(
    body: SpeechIn, ctx: Ctx, caller: Annotated[Principal, Depends(converse)]
) -> StreamingResponse:
    call = reasoning_stub(ctx).Synthesize(
        reasoning_pb2.SynthesizeRequest(
            text=body.input,
            voice=body.voice,
            format=FORMATS[body.response_format],
            speed=body.speed,
        ),
        timeout=ctx.settings.audio_timeout_seconds,
    )
    responses = aiter(call)
    # The first message is read before answering, so a refusal (a bad voice, a full queue) is a
    # problem+json response rather than a broken audio stream.
    first = await anext(responses, None)
    if first is None or not first.HasField("info"):
        raise ApiError(502, "upstream_error", "the reasoning service sent no audio description")
    info = first.info

    async def audio() -> AsyncIterator[bytes]:
        async for response in responses:
            if response.audio.data:
                yield response.audio.data

    return StreamingResponse(
        audio(),
        media_type=info.content_type,
        headers={"X-Sample-Rate": str(info.sample_rate), "X-Voice": info.voice},
    )
