"""Audio in and out of the speech models: any container and codec FFmpeg reads (through PyAV)
decoded to 16 kHz mono for Whisper, and 16-bit PCM encoded, chunk by chunk, to the format asked."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from edrs_core import InvalidArgument
from edrs_core.wav import wav_header
from edrs_proto.reasoning.v1 import reasoning_pb2

# What Whisper reads.
MODEL_SAMPLE_RATE = 16_000

AUDIO_FIELD = "audio"


def _refuse(message: str) -> InvalidArgument:
    return InvalidArgument(message, field=AUDIO_FIELD)


def decode(data: bytes, *, max_seconds: float) -> np.ndarray:
    """The first audio stream of `data` as float32 samples in [-1, 1], 16 kHz mono.

    Refusals name the problem: empty, not audio (FFmpeg finds no container or no audio stream),
    an unsupported codec (a container it reads holding a codec it cannot decode), longer than
    `max_seconds` (checked while decoding, so a long file is not decoded to the end)."""
    if not data:
        raise _refuse("audio is empty: the file has no bytes")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.InvalidDataError:
        raise _refuse("audio is not an audio file: no known container format") from None
    except av.FFmpegError as exc:
        raise _refuse(f"audio cannot be read: {exc.strerror or exc}") from None
    with container:
        if not container.streams.audio:
            raise _refuse("audio is not an audio file: it holds no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None or not _decodable(stream):
            raise _refuse(
                f"audio uses a codec that cannot be decoded here ({stream.codec_context.name})"
                if stream.codec_context is not None
                else "audio uses a codec that cannot be decoded here"
            )
        resampler = av.AudioResampler(format="flt", layout="mono", rate=MODEL_SAMPLE_RATE)
        max_samples = int(max_seconds * MODEL_SAMPLE_RATE)
        parts: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    parts.append(samples)
                    total += samples.size
                if total > max_samples:
                    raise _refuse(
                        f"audio is too long: more than {max_seconds:g} seconds (the limit)"
                    )
            for out in resampler.resample(None):
                samples = out.to_ndarray().reshape(-1)
                parts.append(samples)
                total += samples.size
        except av.FFmpegError as exc:
            if total == 0:
                raise _refuse(f"audio cannot be decoded: {exc.strerror or exc}") from None
            # A truncated file (an upload cut short): keep what decoded, as FFmpeg's CLI does.
    if total == 0:
        raise _refuse("audio is empty: the file holds no samples")
    if total > max_samples:
        raise _refuse(f"audio is too long: more than {max_seconds:g} seconds (the limit)")
    return np.concatenate(parts).astype(np.float32, copy=False)


def _decodable(stream: Any) -> bool:
    try:
        return av.codec.Codec(stream.codec_context.name, "r") is not None
    except Exception:
        return False


def to_int16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM."""
    pcm: bytes = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return pcm


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A complete WAV file (16-bit mono) of float samples."""
    pcm = to_int16(samples)
    return wav_header(sample_rate, len(pcm)) + pcm


def wav_stream_pcm(data: bytes) -> tuple[int, int] | None:
    """(sample rate, offset of the PCM) of a 16-bit mono WAV header at the start of `data`; None
    while the header is incomplete. ValueError when it is not such a header."""
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    offset, rate = 12, 0
    while offset + 8 <= len(data):
        kind, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        if kind == b"fmt ":
            if offset + 24 > len(data):
                return None
            fmt, channels, rate = struct.unpack("<HHI", data[offset + 8 : offset + 16])
            bits = struct.unpack("<H", data[offset + 22 : offset + 24])[0]
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"WAV stream is not 16-bit mono PCM ({fmt}, {channels}, {bits})")
        elif kind == b"data":
            if not rate:
                raise ValueError("WAV stream has no fmt chunk before its data")
            return rate, offset + 8
        offset += 8 + size
    return None


@dataclass(frozen=True)
class Format:
    name: str
    content_type: str
    # PyAV container and codec for compressed formats; None for WAV and raw PCM.
    container: str | None = None
    codec: str | None = None


FORMATS: dict[reasoning_pb2.AudioFormat.ValueType, Format] = {
    reasoning_pb2.AUDIO_FORMAT_WAV: Format("wav", "audio/wav"),
    reasoning_pb2.AUDIO_FORMAT_PCM: Format("pcm", "audio/pcm"),
    reasoning_pb2.AUDIO_FORMAT_MP3: Format("mp3", "audio/mpeg", "mp3", "libmp3lame"),
    reasoning_pb2.AUDIO_FORMAT_OPUS: Format("opus", "audio/ogg", "ogg", "libopus"),
    reasoning_pb2.AUDIO_FORMAT_FLAC: Format("flac", "audio/flac", "flac", "flac"),
}
FORMATS[reasoning_pb2.AUDIO_FORMAT_UNSPECIFIED] = FORMATS[reasoning_pb2.AUDIO_FORMAT_WAV]


class _Sink:
    """A write-only file for FFmpeg's muxer: no seek, so it writes a streamable file front to
    back (a seekable buffer invites muxers to go back and patch headers already sent)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


class Encoder:
    """16-bit mono PCM in, bytes of `fmt` out, as it arrives: `header()` once, `encode(pcm)` per
    chunk, `finish()` at the end. Compressed formats go through FFmpeg's muxer into a buffer that
    is drained after every chunk."""

    def __init__(self, fmt: Format, sample_rate: int) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self._sink = _Sink()
        self._container: Any = None
        self._stream: Any = None
        self._pts = 0
        if fmt.container is not None:
            self._container = av.open(self._sink, mode="w", format=fmt.container)
            # Opus encodes at 48 kHz only; FFmpeg resamples when the stream rate differs.
            rate = 48_000 if fmt.codec == "libopus" else sample_rate
            self._stream = self._container.add_stream(fmt.codec, rate=rate, layout="mono")
            self._resampler = av.AudioResampler(
                format=self._stream.format, layout="mono", rate=rate
            )

    def header(self) -> bytes:
        if self.format.name == "wav":
            return wav_header(self.sample_rate, None)
        return b""

    def encode(self, pcm: bytes) -> bytes:
        if self._container is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += samples.shape[1]
        for out in self._resampler.resample(frame):
            for packet in self._stream.encode(out):
                self._container.mux(packet)
        return self._drain()

    def finish(self) -> bytes:
        if self._container is None:
            return b""
        for out in self._resampler.resample(None):
            for packet in self._stream.encode(out):
                self._container.mux(packet)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._drain()

    def _drain(self) -> bytes:
        return self._sink.take()
