"""A small OpenAI-compatible audio server for the tests of the OpenAI-compatible speech backends:
`POST /v1/audio/transcriptions` and `POST /v1/audio/speech` served by the same local models the
service runs (faster-whisper, Piper), as a GPU pool's faster-whisper or vLLM server would.

    python openai_audio_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from edrs_core import InvalidArgument
from edrs_proto.reasoning.v1 import reasoning_pb2
from edrs_reasoning import model_files
from edrs_reasoning.voice import audio
from edrs_reasoning.voice.stt import LocalTranscriber, TranscribeOptions
from edrs_reasoning.voice.tts import LocalSynthesizer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

# The names this server answers to, as an OpenAI deployment names its models and voices.
STT_MODEL, TTS_MODEL, VOICE = "whisper-served", "piper-served", "alloy"
_LANGUAGES = {"en": "english"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status)


async def build() -> FastAPI:
    transcriber = await LocalTranscriber.load(
        model_files.transcription_model_path(None),
        STT_MODEL,
        threads=1,
        device="cpu",
        workers=1,
        vad_filter=True,
    )
    synthesizer = await LocalSynthesizer.load(model_files.speech_voice_path(None), device="cpu")
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": STT_MODEL}, {"id": TTS_MODEL}]}

    @app.post("/v1/audio/transcriptions", response_model=None)
    async def transcriptions(request: Request) -> Any:
        form = await request.form()
        if form.get("model") != STT_MODEL:
            return _error(404, f"model {form.get('model')!r} not found")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(400, "file is required")
        try:
            samples = audio.decode(await upload.read(), max_seconds=600)
        except InvalidArgument as exc:
            return _error(400, exc.message)
        granularities = form.getlist("timestamp_granularities[]")
        t = await transcriber.transcribe(
            samples,
            TranscribeOptions(
                language=str(form.get("language") or ""),
                prompt=str(form.get("prompt") or ""),
                word_timestamps="word" in granularities,
                temperature=float(str(form.get("temperature") or 0)),
            ),
        )
        body: dict[str, Any] = {
            "task": "transcribe",
            "language": _LANGUAGES.get(t.language, t.language),
            "duration": t.duration_seconds,
            "text": t.text,
            "segments": [
                {"id": i, "start": s.start, "end": s.end, "text": s.text}
                for i, s in enumerate(t.segments)
            ],
        }
        if "word" in granularities:
            body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in t.words]
        return body

    @app.post("/v1/audio/speech", response_model=None)
    async def speech(request: Request) -> Any:
        body = await request.json()
        if body.get("model") != TTS_MODEL:
            return _error(404, f"model {body.get('model')!r} not found")
        if body.get("voice") != VOICE:
            return _error(400, f"voice {body.get('voice')!r} is not supported")
        if body.get("response_format", "mp3") != "wav":
            return _error(400, "this server speaks wav only")
        text, speed = str(body.get("input") or ""), float(body.get("speed") or 1.0)
        if not text.strip():
            return _error(400, "input is required")

        async def stream() -> AsyncIterator[bytes]:
            rate = synthesizer.sample_rate(synthesizer.voices[0])
            assert rate is not None
            wav = audio.Encoder(audio.FORMATS[reasoning_pb2.AUDIO_FORMAT_WAV], rate)
            yield wav.header()
            async for _, pcm in synthesizer.speak(text, synthesizer.voices[0], speed):
                yield pcm

        return StreamingResponse(stream(), media_type="audio/wav")

    return app


async def main(port: int) -> None:
    app = await build()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
