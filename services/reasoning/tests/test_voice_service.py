"""Transcribe and Synthesize over real gRPC with the real local models (Whisper tiny.en through
faster-whisper, Piper's joe voice): speech the service speaks comes back as the same words, every
bad input is refused naming its problem, and syntheses have their own admission limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc
import jiwer
import numpy as np
import pytest
from edrs_core import testing
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning.voice import audio

pytestmark = pytest.mark.integration

SENTENCES = [
    "The meeting starts at nine in the morning.",
    "Please send the report to the finance team by Friday.",
    "We sold twenty five units last week.",
    "The weather today is sunny with a light breeze.",
    "Our office is on the top floor of the old building.",
    "Can you book a table for four people tonight?",
    "The train leaves from platform two at noon.",
    "She has worked here for seven years.",
    "Remember to back up your files every evening.",
    "The new product launches early next spring.",
]


@pytest.fixture
async def stub(
    voice_service: testing.RunningService,
) -> AsyncIterator[reasoning_pb2_grpc.ReasoningServiceStub]:
    # Every call carries a caller's identity (a real token of the test issuer), as in the fleet.
    identity = testing.tenant_metadata("tenant-voice")
    async with testing.channel_with(voice_service.grpc_address, identity) as channel:
        yield reasoning_pb2_grpc.ReasoningServiceStub(channel)


async def synthesize(
    stub, text: str, fmt: int = reasoning_pb2.AUDIO_FORMAT_WAV, **fields: object
) -> tuple[reasoning_pb2.SynthesisInfo, list[reasoning_pb2.AudioChunk]]:
    info, chunks = None, []
    async for response in stub.Synthesize(
        reasoning_pb2.SynthesizeRequest(text=text, format=fmt, **fields)
    ):
        if response.HasField("info"):
            assert info is None and not chunks, "info comes once, first"
            info = response.info
        else:
            chunks.append(response.audio)
    assert info is not None
    return info, chunks


def upload(
    data: bytes, piece: int = 16_384, **config: object
) -> Iterable[reasoning_pb2.TranscribeRequest]:
    yield reasoning_pb2.TranscribeRequest(config=reasoning_pb2.TranscribeConfig(**config))
    for i in range(0, len(data), piece):
        yield reasoning_pb2.TranscribeRequest(audio=data[i : i + piece])


async def test_model_info_names_the_speech_models(stub) -> None:
    info = await stub.GetModelInfo(reasoning_pb2.GetModelInfoRequest())
    assert info.transcription_model == "whisper-tiny.en"
    assert info.speech_model == "en_US-joe-medium"
    assert list(info.voices) == ["en_US-joe-medium"]


async def test_ten_spoken_sentences_come_back_as_the_same_words(stub, normalise) -> None:
    references, hypotheses = [], []
    for sentence in SENTENCES:
        _, chunks = await synthesize(stub, sentence)
        wav = b"".join(c.data for c in chunks)
        result = await stub.Transcribe(upload(wav, language="en"))
        references.append(normalise(sentence))
        hypotheses.append(normalise(result.text))
    error_rate = jiwer.wer(references, hypotheses)
    assert error_rate < 0.05, list(zip(references, hypotheses, strict=True))


async def test_transcript_has_language_duration_segments_and_word_times(stub, normalise) -> None:
    spoken = "Please call me back tomorrow afternoon."
    _, chunks = await synthesize(stub, spoken)
    mp3 = audio.Encoder(audio.FORMATS[reasoning_pb2.AUDIO_FORMAT_MP3], audio.MODEL_SAMPLE_RATE)
    samples = audio.decode(b"".join(c.data for c in chunks), max_seconds=60)
    data = mp3.encode(audio.to_int16(samples)) + mp3.finish()
    result = await stub.Transcribe(upload(data, word_timestamps=True))
    assert result.language == "en"
    assert result.model == "whisper-tiny.en"
    # MP3 adds its encoder delay and frame padding: up to about two frames.
    assert result.duration_seconds == pytest.approx(samples.size / 16_000, abs=0.15)
    assert jiwer.wer(normalise(spoken), normalise(result.text)) < 0.2, result.text
    assert [normalise(w.word) for w in result.words] == normalise(result.text).split()
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert all(w.end >= w.start for w in result.words)
    assert result.words[-1].end <= result.duration_seconds + 0.05
    assert result.segments and result.segments[0].text


async def test_synthesis_streams_a_chunk_per_sentence_in_the_format_asked(stub) -> None:
    text = "First comes this sentence. Then comes a second one!"
    for fmt, content_type in [
        (reasoning_pb2.AUDIO_FORMAT_WAV, "audio/wav"),
        (reasoning_pb2.AUDIO_FORMAT_MP3, "audio/mpeg"),
        (reasoning_pb2.AUDIO_FORMAT_OPUS, "audio/ogg"),
        (reasoning_pb2.AUDIO_FORMAT_FLAC, "audio/flac"),
    ]:
        info, chunks = await synthesize(stub, text, fmt)
        assert (info.content_type, info.sample_rate, info.channels) == (content_type, 22_050, 1)
        assert info.voice == "en_US-joe-medium"
        assert [c.text for c in chunks if c.text] == [
            "First comes this sentence.",
            "Then comes a second one!",
        ]
        samples = audio.decode(b"".join(c.data for c in chunks), max_seconds=60)
        assert samples.size / 16_000 > 2.0, f"{content_type}: two sentences of speech"


async def test_speed_changes_the_length(stub) -> None:
    text = "Speaking at a different speed changes how long this takes."
    lengths = {}
    for speed in (1.0, 2.0):
        info, chunks = await synthesize(stub, text, reasoning_pb2.AUDIO_FORMAT_PCM, speed=speed)
        lengths[speed] = sum(len(c.data) for c in chunks) / 2 / info.sample_rate
    # Piper's length scale stretches the phonemes, not the pauses around them: about 0.65.
    assert lengths[2.0] < 0.75 * lengths[1.0]


async def test_bad_synthesis_requests_name_the_field(stub) -> None:
    cases = [
        (reasoning_pb2.SynthesizeRequest(text="  "), "text is required"),
        (reasoning_pb2.SynthesizeRequest(text="x" * 4097), "text is 4097 characters long"),
        (reasoning_pb2.SynthesizeRequest(text="Hi.", voice="alloy"), "voice 'alloy' is not"),
        (reasoning_pb2.SynthesizeRequest(text="Hi.", speed=9), "speed must be between"),
        (reasoning_pb2.SynthesizeRequest(text="Hi.", format=99), "format must be one of"),
        (reasoning_pb2.SynthesizeRequest(text="..."), "text holds nothing that can be spoken"),
    ]
    for request, detail in cases:
        await testing.expect_rpc_error(
            _drain(stub.Synthesize(request)), grpc.StatusCode.INVALID_ARGUMENT, detail
        )


async def _drain(call) -> None:
    async for _ in call:
        pass


async def test_bad_audio_is_refused_with_its_reason(stub, voice_max_audio_seconds) -> None:
    seconds = voice_max_audio_seconds + 1
    long_wav = audio.wav_bytes(np.zeros(int(seconds * 16_000), np.float32), 16_000)
    cases = [
        (b"", "audio is empty: the file has no bytes"),
        (b"%PDF-1.7 definitely not a recording " * 50, "audio is not an audio file"),
        (long_wav, f"audio is too long: more than {voice_max_audio_seconds:g} seconds"),
    ]
    for data, detail in cases:
        await testing.expect_rpc_error(
            stub.Transcribe(upload(data)), grpc.StatusCode.INVALID_ARGUMENT, detail
        )


async def test_transcribe_needs_its_config_first_and_only_once(stub) -> None:
    def audio_first() -> Iterable[reasoning_pb2.TranscribeRequest]:
        yield reasoning_pb2.TranscribeRequest(audio=b"RIFF")

    await testing.expect_rpc_error(
        stub.Transcribe(audio_first()), grpc.StatusCode.INVALID_ARGUMENT, "config is required"
    )

    def twice() -> Iterable[reasoning_pb2.TranscribeRequest]:
        yield reasoning_pb2.TranscribeRequest(config=reasoning_pb2.TranscribeConfig())
        yield reasoning_pb2.TranscribeRequest(config=reasoning_pb2.TranscribeConfig())

    await testing.expect_rpc_error(
        stub.Transcribe(twice()), grpc.StatusCode.INVALID_ARGUMENT, "config may be sent once"
    )
    await testing.expect_rpc_error(
        stub.Transcribe(upload(b"x", language="english!")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "config.language must be an ISO-639-1 code",
    )


async def test_a_synthesis_beyond_the_queue_is_refused_and_the_slot_comes_back(stub) -> None:
    long_text = " ".join(f"This is sentence number {n} of a long text." for n in range(1, 30))
    running = stub.Synthesize(reasoning_pb2.SynthesizeRequest(text=long_text))
    first = await running.read()
    assert first.HasField("info"), "the long synthesis holds the only slot"
    await testing.expect_rpc_error(
        _drain(stub.Synthesize(reasoning_pb2.SynthesizeRequest(text="Me too."))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "busy",
    )
    running.cancel()

    async def slot_free() -> bool:
        try:
            await _drain(stub.Synthesize(reasoning_pb2.SynthesizeRequest(text="Now me.")))
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
        return True

    await testing.wait_until(slot_free, 60, "the cancelled synthesis to free its slot", 0.2)
