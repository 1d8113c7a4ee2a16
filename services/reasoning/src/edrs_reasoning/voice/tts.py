"""Text-to-speech backends behind one interface: Piper on this host, or any server speaking
OpenAI's `POST /audio/speech` (backends/openai_audio.py). Both speak one sentence at a time and return 16-bit mono PCM;
the servicer splits the text and encodes the audio, so the two share that path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol


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
