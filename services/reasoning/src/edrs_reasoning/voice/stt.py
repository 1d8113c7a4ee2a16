"""Speech-to-text backends behind one interface: faster-whisper on this host, or any server
speaking OpenAI's `POST /audio/transcriptions`. Both read the same decoded 16 kHz samples."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
from edrs_core import InvalidArgument, Unavailable

from edrs_reasoning.voice.audio import MODEL_SAMPLE_RATE, wav_bytes


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


class OpenAITranscriber:
    """`POST {base}/audio/transcriptions` with the decoded audio re-encoded as 16 kHz WAV (so the
    server gets what the local model would, whatever the client sent), `verbose_json` answers."""

    kind = "openai"

    def __init__(self, client: httpx.AsyncClient, model: str) -> None:
        self._client = client
        self.model = model

    async def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        data: dict[str, str | list[str]] = {
            "model": self.model,
            "response_format": "verbose_json",
            "temperature": str(options.temperature),
            "timestamp_granularities[]": ["segment", "word"]
            if options.word_timestamps
            else ["segment"],
        }
        if options.language:
            data["language"] = options.language
        if options.prompt:
            data["prompt"] = options.prompt
        audio = wav_bytes(samples, MODEL_SAMPLE_RATE)
        try:
            response = await self._client.post(
                "/audio/transcriptions",
                data=data,
                files={"file": ("audio.wav", audio, "audio/wav")},
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"the transcription server cannot be reached: {exc!r}") from exc
        if response.status_code != 200:
            raise_for_answer(response, "transcription")
        body = response.json()
        return Transcript(
            text=str(body.get("text", "")).strip(),
            language=_language_code(str(body.get("language") or options.language)),
            duration_seconds=float(body.get("duration") or samples.size / MODEL_SAMPLE_RATE),
            segments=[
                Segment(float(s["start"]), float(s["end"]), str(s["text"]).strip())
                for s in body.get("segments") or []
            ],
            words=[
                Word(
                    str(w["word"]).strip(),
                    float(w["start"]),
                    float(w["end"]),
                    float(w.get("probability", 0.0)),
                )
                for w in body.get("words") or []
            ]
            if options.word_timestamps
            else [],
        )

    async def close(self) -> None:
        return None


# OpenAI answers the language's English name in verbose_json; the RPC reports ISO-639-1 codes.
_LANGUAGE_CODES = {
    "english": "en",
    "german": "de",
    "french": "fr",
    "spanish": "es",
    "italian": "it",
    "portuguese": "pt",
    "dutch": "nl",
    "japanese": "ja",
    "chinese": "zh",
}


def _language_code(value: str) -> str:
    return _LANGUAGE_CODES.get(value.lower(), value.lower())


def raise_for_answer(response: httpx.Response, what: str) -> None:
    detail = response.text[:300]
    if 400 <= response.status_code < 500 and response.status_code != 429:
        raise InvalidArgument(f"the {what} server refused the request: {detail}")
    raise Unavailable(f"the {what} server answered {response.status_code}: {detail}")


def elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
