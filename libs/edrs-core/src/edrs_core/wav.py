"""WAV (RIFF, 16-bit PCM, mono) headers: one home for the reasoning service's encoder, the
gateway's raw-PCM recordings, the CLI's saved replies, benchmarks and tests."""

from __future__ import annotations

import struct

# A streamed file's length is not known up front: 0xFFFFFFFF in both size fields is the
# convention players and FFmpeg accept for "read to the end".
_UNKNOWN = 0xFFFFFFFF


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """The 44-byte header of `data_bytes` bytes of 16-bit mono PCM; None: of unknown length."""
    riff = _UNKNOWN if data_bytes is None else 36 + data_bytes
    data = _UNKNOWN if data_bytes is None else data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def wav(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM as a whole WAV file."""
    return wav_header(sample_rate, len(pcm)) + pcm
