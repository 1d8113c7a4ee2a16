"""The Transcribe and Synthesize calls: checks, admission, decoding and encoding around whichever
backends are configured (local or OpenAI-compatible: the same path for both)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from edrs_core import FailedPrecondition, InvalidArgument, validation
from edrs_core.sentences import sentences
from edrs_proto.reasoning.v1 import reasoning_pb2

from edrs_reasoning.slots import GenerationSlots
from edrs_reasoning.voice import audio
from edrs_reasoning.voice.stt import TranscribeOptions, Transcriber, Transcript
from edrs_reasoning.voice.tts import Synthesizer

MAX_PROMPT_CHARS = 1_000
MAX_LANGUAGE_CHARS = 8
MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True)
class SpeechLimits:
    max_audio_seconds: float
    max_audio_bytes: int
    max_speech_chars: int


class Speech:
    def __init__(
        self,
        transcriber: Transcriber | None,
        synthesizer: Synthesizer | None,
        transcription_slots: GenerationSlots,
        synthesis_slots: GenerationSlots,
        limits: SpeechLimits,
    ) -> None:
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self._transcription_slots = transcription_slots
        self._synthesis_slots = synthesis_slots
        self.limits = limits

    async def transcribe(
        self, requests: AsyncIterator[reasoning_pb2.TranscribeRequest]
    ) -> reasoning_pb2.TranscribeResponse:
        if self.transcriber is None:
            raise FailedPrecondition(
                "speech-to-text is off on this service (EDRS_REASONING_STT_BACKEND=off)"
            )
        options, data = await self._read_upload(requests)
        start = time.perf_counter()
        samples = await asyncio.to_thread(
            audio.decode, data, max_seconds=self.limits.max_audio_seconds
        )
        async with self._transcription_slots.acquire() as queue_ms:
            transcript = await self.transcriber.transcribe(samples, options)
        processing_ms = (time.perf_counter() - start) * 1e3 - queue_ms
        return _transcript_proto(transcript, self.transcriber.model, processing_ms, queue_ms)

    async def _read_upload(
        self, requests: AsyncIterator[reasoning_pb2.TranscribeRequest]
    ) -> tuple[TranscribeOptions, bytes]:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("part") != "config":
            raise InvalidArgument(
                "config is required: the first message of Transcribe carries it", field="config"
            )
        options = transcribe_options(first.config)
        parts: list[bytes] = []
        size = 0
        async for request in requests:
            if request.WhichOneof("part") != "audio":
                raise InvalidArgument(
                    "config may be sent once, in the first message", field="config"
                )
            size += len(request.audio)
            if size > self.limits.max_audio_bytes:
                raise InvalidArgument(
                    f"audio is too large: more than {self.limits.max_audio_bytes} bytes "
                    "(the limit)",
                    field=audio.AUDIO_FIELD,
                )
            parts.append(request.audio)
        return options, b"".join(parts)

    async def synthesize(
        self, request: reasoning_pb2.SynthesizeRequest
    ) -> AsyncGenerator[reasoning_pb2.SynthesizeResponse, None]:
        synthesizer = self.synthesizer
        if synthesizer is None:
            raise FailedPrecondition(
                "text-to-speech is off on this service (EDRS_REASONING_TTS_BACKEND=off)"
            )
        text = validation.text(request.text, "text", max_length=self.limits.max_speech_chars)
        voice = request.voice or synthesizer.voices[0]
        if voice not in synthesizer.voices:
            raise InvalidArgument(
                f"voice {voice!r} is not available; choose one of {', '.join(synthesizer.voices)}",
                field="voice",
            )
        speed = request.speed or 1.0
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidArgument(
                f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed:g}", field="speed"
            )
        fmt = validation.enum_value(
            request.format, "format", audio.FORMATS, reasoning_pb2.AudioFormat
        )
        pieces = sentences(text)
        async with self._synthesis_slots.acquire():
            encoder: audio.Encoder | None = None
            for sentence in pieces:
                label = sentence
                async for rate, pcm in synthesizer.speak(sentence, voice, speed):
                    if encoder is None:
                        encoder = audio.Encoder(fmt, rate)
                        yield _info(encoder, voice, synthesizer.model)
                        head = encoder.header()
                        if head:
                            yield _chunk(head, "")
                    data = encoder.encode(pcm)
                    if data or label:
                        yield _chunk(data, label)
                        label = ""
            if encoder is None:
                # Nothing the voice can say ("...", a lone symbol): refused, not an empty stream.
                raise InvalidArgument(
                    f"text holds nothing that can be spoken: {text[:40]!r}", field="text"
                )
            if tail := encoder.finish():
                yield _chunk(tail, "")


def transcribe_options(config: reasoning_pb2.TranscribeConfig) -> TranscribeOptions:
    language = config.language.strip().lower()
    if language and not (language.isalpha() and 2 <= len(language) <= MAX_LANGUAGE_CHARS):
        raise InvalidArgument(
            f"config.language must be an ISO-639-1 code such as en, got {config.language!r}",
            field="config.language",
        )
    if len(config.prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument(
            f"config.prompt is {len(config.prompt)} characters long; the limit is "
            f"{MAX_PROMPT_CHARS}",
            field="config.prompt",
        )
    validation.float_range(config.temperature, "config.temperature", low=0.0, high=1.0)
    return TranscribeOptions(
        language=language,
        prompt=config.prompt,
        word_timestamps=config.word_timestamps,
        temperature=config.temperature,
    )


def _transcript_proto(
    t: Transcript, model: str, processing_ms: float, queue_ms: float
) -> reasoning_pb2.TranscribeResponse:
    return reasoning_pb2.TranscribeResponse(
        text=t.text,
        language=t.language,
        duration_seconds=t.duration_seconds,
        segments=[
            reasoning_pb2.TranscriptSegment(id=i, start=s.start, end=s.end, text=s.text)
            for i, s in enumerate(t.segments)
        ],
        words=[
            reasoning_pb2.TranscribedWord(
                word=w.word, start=w.start, end=w.end, probability=w.probability
            )
            for w in t.words
        ],
        model=model,
        processing_ms=processing_ms,
        queue_ms=queue_ms,
    )


def _info(encoder: audio.Encoder, voice: str, model: str) -> reasoning_pb2.SynthesizeResponse:
    return reasoning_pb2.SynthesizeResponse(
        info=reasoning_pb2.SynthesisInfo(
            format=_FORMAT_ENUM[encoder.format.name],
            content_type=encoder.format.content_type,
            sample_rate=encoder.sample_rate,
            channels=1,
            voice=voice,
            model=model,
        )
    )


def _chunk(data: bytes, text: str) -> reasoning_pb2.SynthesizeResponse:
    return reasoning_pb2.SynthesizeResponse(audio=reasoning_pb2.AudioChunk(data=data, text=text))


_FORMAT_ENUM = {f.name: number for number, f in audio.FORMATS.items() if number != 0}
