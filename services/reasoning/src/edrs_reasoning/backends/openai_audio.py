"""The OpenAI-compatible speech backends: any server speaking `POST /audio/transcriptions` and
`POST /audio/speech` (a faster-whisper or vLLM server on the GPU pool, OpenAI itself). The server
is the one the operator configures (EDRS_REASONING_AUDIO_OPENAI_BASE_URL), never a URL from a
request, so these calls do not go through edrs_core.outbound (as backends/openai.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
from edrs_core import InvalidArgument, Unavailable

from edrs_reasoning.voice.audio import MODEL_SAMPLE_RATE, wav_bytes, wav_stream_pcm
from edrs_reasoning.voice.stt import Segment, TranscribeOptions, Transcript, Word


def open_client(base_url: str, api_key: str | None, timeout_seconds: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_seconds
    )


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
