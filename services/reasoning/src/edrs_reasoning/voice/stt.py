"""Speech-to-text backends behind one interface: faster-whisper on this host, or any server
speaking OpenAI's `POST /audio/transcriptions` (backends/openai_audio.py). Both read the same
decoded 16 kHz samples."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TranscribeOptions:
    language: str = ""
    prompt: str = ""
    word_timestamps: bool = False
    temperature: float = 0.0


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Transcript:
    text: str
    language: str
    duration_seconds: float
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)


class Transcriber(Protocol):
    kind: str
    model: str

    async def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        """`samples`: float32, 16 kHz mono."""
        ...

    async def close(self) -> None: ...


class LocalTranscriber:
    """faster-whisper (CTranslate2). One model object serves one call at a time: the admission
    slots in front of it decide how many calls run, and a call runs in a worker thread."""

    kind = "local"

    def __init__(self, model: Any, name: str, *, vad_filter: bool) -> None:
        self._model = model
        self.model = name
        self._vad_filter = vad_filter

    @classmethod
    async def load(
        cls, path: Path, name: str, *, threads: int, device: str, workers: int, vad_filter: bool
    ) -> LocalTranscriber:
        def load() -> Any:
            from faster_whisper import WhisperModel

            # A local directory, never a model name: a name makes faster-whisper download.
            return WhisperModel(
                str(path),
                device="cuda" if device == "gpu" else "cpu",
                compute_type="default" if device == "gpu" else "int8",
                cpu_threads=threads,
                num_workers=workers,
                local_files_only=True,
            )

        return cls(await asyncio.to_thread(load), name, vad_filter=vad_filter)

    async def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        return await asyncio.to_thread(self._run, samples, options)

    def _run(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        segments, info = self._model.transcribe(
            samples,
            language=options.language or None,
            initial_prompt=options.prompt or None,
            word_timestamps=options.word_timestamps,
            temperature=options.temperature,
            # Greedy decoding: a beam of 5 costs several times the latency for little on clear speech.
            beam_size=1,
            vad_filter=self._vad_filter,
            condition_on_previous_text=False,
        )
        out = Transcript(text="", language=info.language, duration_seconds=info.duration)
        texts: list[str] = []
        for s in segments:  # a generator: decoding happens while iterating
            out.segments.append(Segment(s.start, s.end, s.text.strip()))
            texts.append(s.text.strip())
            for w in s.words or ():
                out.words.append(Word(w.word.strip(), w.start, w.end, w.probability))
        out.text = " ".join(t for t in texts if t)
        return out

    async def close(self) -> None:
        return None
