"""Text-to-speech backends behind one interface: Piper on this host, or any server speaking
OpenAI's `POST /audio/speech`. Both speak one sentence at a time and return 16-bit mono PCM;
the servicer splits the text and encodes the audio, so the two share that path."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import httpx
from edrs_core import Unavailable

from edrs_reasoning.voice.audio import wav_stream_pcm
from edrs_reasoning.voice.stt import raise_for_answer


class Synthesizer(Protocol):
    kind: str
    model: str
    voices: list[str]
    """Names a call may ask for; the first is the default."""

    def sample_rate(self, voice: str) -> int | None:
        """The voice's rate, when known before synthesis (None: learnt from the first answer)."""
        ...

    def speak(self, sentence: str, voice: str, speed: float) -> AsyncIterator[tuple[int, bytes]]:
        """(sample rate, 16-bit mono PCM) pieces of one sentence, in order."""
        ...

    async def close(self) -> None: ...


class LocalSynthesizer:
    """Piper (ONNX Runtime) with one voice. Piper's speed knob is `length_scale`, the inverse of
    speed (2.0 is half speed)."""

    kind = "local"

    def __init__(self, voice: Any, name: str) -> None:
        self._voice = voice
        self.model = name
        self.voices = [name]

    @classmethod
    async def load(cls, path: Path, *, device: str) -> LocalSynthesizer:
        def load() -> Any:
            from piper import PiperVoice

            return PiperVoice.load(path, use_cuda=device == "gpu")

        return cls(await asyncio.to_thread(load), path.name.removesuffix(".onnx"))

    def sample_rate(self, voice: str) -> int | None:
        return int(self._voice.config.sample_rate)

    async def speak(
        self, sentence: str, voice: str, speed: float
    ) -> AsyncIterator[tuple[int, bytes]]:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self._voice.config.length_scale / speed)

        def run() -> list[tuple[int, bytes]]:
            return [
                (c.sample_rate, c.audio_int16_bytes)
                for c in self._voice.synthesize(sentence, syn_config=config)
            ]

        for piece in await asyncio.to_thread(run):
            yield piece

    async def close(self) -> None:
        return None


# A WAV header with its optional chunks (LIST, fact) fits in far less; beyond, it is not one.
_MAX_WAV_HEADER = 4096


class OpenAISynthesizer:
    """`POST {base}/audio/speech` with `response_format=wav`, read as it streams: the WAV header
    gives the sample rate, the rest is PCM passed on as it arrives."""

    kind = "openai"

    def __init__(self, client: httpx.AsyncClient, model: str, voices: list[str]) -> None:
        self._client = client
        self.model = model
        self.voices = voices

    def sample_rate(self, voice: str) -> int | None:
        return None

    async def speak(
        self, sentence: str, voice: str, speed: float
    ) -> AsyncIterator[tuple[int, bytes]]:
        body = {
            "model": self.model,
            "input": sentence,
            "voice": voice,
            "response_format": "wav",
            "speed": speed,
        }
        try:
            async with self._client.stream("POST", "/audio/speech", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise_for_answer(response, "speech")
                head, rate, odd = b"", 0, b""
                async for data in response.aiter_bytes():
                    if not rate:
                        head += data
                        try:
                            found = wav_stream_pcm(head)
                        except ValueError as exc:
                            raise Unavailable(
                                f"the speech server sent no usable WAV: {exc}"
                            ) from None
                        if found is None:
                            if len(head) > _MAX_WAV_HEADER:
                                raise Unavailable("the speech server sent no usable WAV header")
                            continue
                        rate, offset = found
                        data = head[offset:]
                    data = odd + data
                    # Whole 16-bit samples only; an odd byte waits for the next piece.
                    cut = len(data) - len(data) % 2
                    data, odd = data[:cut], data[cut:]
                    if data:
                        yield rate, data
        except httpx.HTTPError as exc:
            raise Unavailable(f"the speech server cannot be reached: {exc!r}") from exc

    async def close(self) -> None:
        return None


# A sentence ends at ., ! or ? (with closing quotes or brackets) followed by white space, or at a
# line break. "e.g. this" and "Dr. Smith" split early; that only shortens a chunk, it loses nothing.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'\u201d\u2019)\]])\s+|\n+")


def sentences(text: str) -> list[str]:
    """`text` cut into sentences, white space trimmed, empty pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
