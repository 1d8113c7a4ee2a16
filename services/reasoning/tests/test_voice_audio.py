"""Audio decoding and encoding (PyAV): every container the API accepts decodes to 16 kHz mono,
every bad file is refused naming its problem, and every output format plays back at its length."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
from edrs_core import InvalidArgument
from edrs_core.sentences import SentenceBuffer, sentences
from edrs_proto.reasoning.v1 import reasoning_pb2
from edrs_reasoning.voice import audio

RATE = 22_050


def tone(seconds: float, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encoded(samples: np.ndarray, fmt: int, rate: int = RATE, pieces: int = 4) -> bytes:
    """`samples` encoded by the service's streaming encoder, fed in `pieces` chunks."""
    encoder = audio.Encoder(audio.FORMATS[fmt], rate)
    out = [encoder.header()]
    for part in np.array_split(samples, pieces):
        out.append(encoder.encode(audio.to_int16(part)))
    out.append(encoder.finish())
    return b"".join(out)


def webm_opus(samples: np.ndarray, rate: int = RATE) -> bytes:
    """A WebM/Opus file as browsers' MediaRecorder writes one."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48_000, layout="mono")
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=48_000)
        frame = av.AudioFrame.from_ndarray(
            (samples * 32767).astype("<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for out in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt",
    [
        reasoning_pb2.AUDIO_FORMAT_WAV,
        reasoning_pb2.AUDIO_FORMAT_MP3,
        reasoning_pb2.AUDIO_FORMAT_OPUS,
        reasoning_pb2.AUDIO_FORMAT_FLAC,
    ],
)
def test_each_streamed_format_decodes_back_to_its_length(fmt: int) -> None:
    samples = audio.decode(encoded(tone(2.0), fmt), max_seconds=60)
    # Codec padding (MP3, Opus) adds a few tens of milliseconds at most.
    assert samples.size / audio.MODEL_SAMPLE_RATE == pytest.approx(2.0, abs=0.08)
    assert samples.dtype == np.float32
    assert 0.3 < float(np.abs(samples).max()) <= 1.0


def test_webm_opus_decodes() -> None:
    samples = audio.decode(webm_opus(tone(1.5)), max_seconds=60)
    assert samples.size / audio.MODEL_SAMPLE_RATE == pytest.approx(1.5, abs=0.08)


def test_pcm_is_the_samples_themselves() -> None:
    samples = tone(0.5)
    assert encoded(samples, reasoning_pb2.AUDIO_FORMAT_PCM) == audio.to_int16(samples)


def test_streamed_wav_header_says_length_unknown_and_parses() -> None:
    data = encoded(tone(0.5), reasoning_pb2.AUDIO_FORMAT_WAV)
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert audio.wav_stream_pcm(data) == (RATE, 44)
    assert len(data) - 44 == int(0.5 * RATE) * 2
    # A header read in pieces is "not yet" until its data chunk starts; then the same answer.
    assert [audio.wav_stream_pcm(data[:n]) for n in (4, 20, 43)] == [None, None, None]
    with pytest.raises(ValueError, match="not a WAV stream"):
        audio.wav_stream_pcm(b"ID3\x04" + data[4:])


def refusal(data: bytes, max_seconds: float = 60) -> str:
    with pytest.raises(InvalidArgument) as caught:
        audio.decode(data, max_seconds=max_seconds)
    assert caught.value.field == "audio"
    return caught.value.message


def test_empty_file_is_refused() -> None:
    assert refusal(b"") == "audio is empty: the file has no bytes"


def test_text_is_not_audio() -> None:
    assert "not an audio file" in refusal(b"hello, this is a text file, not a recording\n" * 20)


def test_an_image_is_not_audio() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), dtype=np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    assert "not an audio file" in refusal(buffer.getvalue())


def test_a_file_without_samples_is_empty() -> None:
    assert refusal(audio.wav_bytes(np.zeros(0, dtype=np.float32), 16_000)) == (
        "audio is empty: the file holds no samples"
    )


def test_an_unsupported_codec_is_named() -> None:
    # A WAV whose format tag (0x4242) no decoder knows.
    pcm = audio.to_int16(tone(0.5))
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 0x4242, 1, RATE, RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", len(pcm))
    )
    assert "codec that cannot be decoded" in refusal(header + pcm)


def test_too_long_is_refused_with_the_limit() -> None:
    data = encoded(tone(3.0), reasoning_pb2.AUDIO_FORMAT_WAV)
    assert refusal(data, max_seconds=2) == "audio is too long: more than 2 seconds (the limit)"
    assert audio.decode(data, max_seconds=4).size > 0


def test_sentences_split_at_ends_and_lines() -> None:
    text = 'Hello there. "Is it?" she asked! Fine\nNext line…  And more'
    assert sentences(text) == [
        "Hello there.",
        '"Is it?"',
        "she asked!",
        "Fine",
        "Next line…",
        "And more",
    ]
    assert sentences("  \n ") == []


def test_streamed_text_comes_out_as_whole_sentences() -> None:
    buffer = SentenceBuffer()
    pieces = ["Hel", "lo there", ". How", " are you?", " I am", " fine"]
    out = [buffer.push(p) for p in pieces]
    assert out == [[], [], ["Hello there."], [], ["How are you?"], []]
    assert buffer.flush() == ["I am fine"]
    assert buffer.flush() == []
