"""Wires the reasoning service: models (loaded off the event loop), store, events, gRPC servicer."""

from __future__ import annotations

import os
from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_reasoning import model_files
from edrs_reasoning.backends.base import ChatBackend
from edrs_reasoning.config import ReasoningSettings
from edrs_reasoning.embeddings import Embedder
from edrs_reasoning.reasoner import Reasoner
from edrs_reasoning.server import ReasoningServicer
from edrs_reasoning.slots import GenerationSlots
from edrs_reasoning.store.postgres import PostgresTraceStore
from edrs_reasoning.voice.speech import Speech, SpeechLimits
from edrs_reasoning.voice.stt import Transcriber
from edrs_reasoning.voice.tts import Synthesizer

DEFAULT_EMBEDDING_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_TRANSCRIPTION_MODEL_NAME = "whisper-tiny.en"


async def load_backend(settings: ReasoningSettings) -> ChatBackend:
    if settings.backend == "openai":
        from edrs_reasoning.backends.openai import OpenAIBackend

        assert settings.openai_base_url and settings.openai_model  # checked by the settings
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIBackend(
            settings.openai_base_url,
            settings.openai_model,
            api_key=key,
            timeout_seconds=settings.openai_timeout_seconds,
            context_window=settings.context_window,
            json_schema_format=settings.openai_json_schema_format,
        )
    from edrs_reasoning.backends.local import LocalBackend

    return await LocalBackend.load(
        model_files.chat_model_path(settings.chat_model_path),
        context_window=settings.context_window,
        threads=settings.threads,
        device=settings.device,
        instances=settings.max_concurrent_generations,
    )


async def load_embedder(settings: ReasoningSettings) -> Embedder:
    path = model_files.embedding_model_path(settings.embedding_model)
    return await Embedder.load(
        path,
        name=DEFAULT_EMBEDDING_MODEL_NAME if settings.embedding_model is None else path.name,
        dimensions=settings.embedding_dimensions,
        device=settings.device,
        precision=settings.precision,
        batch_size=settings.embedding_batch_size,
        window_seconds=settings.embedding_batch_window_ms / 1e3,
        threads=settings.embedding_threads,
        backend=settings.resolved_embedding_backend,
        cache_dir=model_files.embedding_cache_dir(settings.embedding_cache_dir),
    )


async def load_speech(rt: Runtime[ReasoningSettings], settings: ReasoningSettings) -> Speech:
    """The speech backends the settings choose, loaded (local models) or connected (servers)."""
    client = None
    if "openai" in (settings.stt_backend, settings.tts_backend):
        from edrs_reasoning.backends.openai_audio import open_client

        assert settings.audio_openai_base_url  # checked by the settings
        key = settings.audio_openai_api_key
        client = open_client(
            settings.audio_openai_base_url,
            key.get_secret_value() if key else None,
            settings.audio_openai_timeout_seconds,
        )
        rt.on_close(client.aclose)
    transcriber: Transcriber | None = None
    if settings.stt_backend == "local":
        from edrs_reasoning.voice.stt import LocalTranscriber

        path = model_files.transcription_model_path(settings.stt_model_path)
        transcriber = await LocalTranscriber.load(
            path,
            DEFAULT_TRANSCRIPTION_MODEL_NAME if settings.stt_model_path is None else path.name,
            threads=settings.stt_threads,
            device=settings.device,
            workers=settings.max_concurrent_transcriptions,
            vad_filter=settings.stt_vad_filter,
        )
    elif settings.stt_backend == "openai":
        from edrs_reasoning.backends.openai_audio import OpenAITranscriber

        assert client is not None
        transcriber = OpenAITranscriber(client, settings.stt_openai_model)
    synthesizer: Synthesizer | None = None
    if settings.tts_backend == "local":
        from edrs_reasoning.voice.tts import LocalSynthesizer

        synthesizer = await LocalSynthesizer.load(
            model_files.speech_voice_path(settings.tts_voice_path), device=settings.device
        )
    elif settings.tts_backend == "openai":
        from edrs_reasoning.backends.openai_audio import OpenAISynthesizer

        assert client is not None
        synthesizer = OpenAISynthesizer(
            client, settings.tts_openai_model, list(settings.tts_openai_voices)
        )
    return Speech(
        transcriber,
        synthesizer,
        GenerationSlots(
            settings.max_concurrent_transcriptions,
            settings.max_queued_transcriptions,
            "transcriptions",
        ),
        GenerationSlots(
            settings.max_concurrent_syntheses, settings.max_queued_syntheses, "syntheses"
        ),
        SpeechLimits(
            max_audio_seconds=settings.max_audio_seconds,
            max_audio_bytes=settings.max_audio_bytes,
            max_speech_chars=settings.max_speech_chars,
        ),
    )


def _passive_thread_pools() -> None:
    """Let idle OpenMP threads sleep rather than spin. llama.cpp and torch both use OpenMP; with
    the default (spinning) policy, 32 tokens on a busy 2-core host took 26-40 s instead of 1.6 s.
    Read once when each OpenMP runtime loads, so this runs before either model is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


async def build(rt: Runtime[ReasoningSettings]) -> list[GrpcService]:
    settings = rt.settings
    _passive_thread_pools()
    embedder = await load_embedder(settings)
    backend = await load_backend(settings)
    rt.on_close(backend.close)
    speech = await load_speech(rt, settings)
    events = await start_service_events(rt)
    store = PostgresTraceStore(rt.db)
    slots = GenerationSlots(settings.max_concurrent_generations, settings.max_queued_generations)
    reasoner = Reasoner(backend, embedder, slots, store, events)
    servicer = ReasoningServicer(store, reasoner, backend, embedder, speech, settings)
    return [
        GrpcService(
            reasoning_pb2.DESCRIPTOR.services_by_name["ReasoningService"].full_name,
            servicer,
            reasoning_pb2_grpc.add_ReasoningServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=ReasoningSettings,
    build=build,
    migrations=files("edrs_reasoning") / "migrations",
    local_ports=LocalPorts(grpc=50055, http=8108, metrics=8109),
)
