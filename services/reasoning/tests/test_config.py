"""Settings that cannot work stop the service at start-up, naming what to fix."""

from __future__ import annotations

import logging

import pytest
from edrs_core import SettingsError, load_settings, testing
from edrs_reasoning.app import definition
from edrs_reasoning.config import ReasoningSettings

BASE = {"database_url": "postgresql://unused/db", "EDRS_ENVIRONMENT": "test"}


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings(ReasoningSettings, **BASE)
    assert (s.backend, s.context_window, s.max_output_tokens, s.default_max_tokens) == (
        "local",
        2048,
        512,
        128,
    )
    assert (s.embedding_dimensions, s.embedding_batch_size, s.max_queued_generations) == (
        384,
        32,
        32,
    )
    assert s.threads >= 1
    assert (s.stt_backend, s.tts_backend, s.max_audio_seconds, s.max_speech_chars) == (
        "local",
        "local",
        600,
        4096,
    )
    assert (s.max_queued_transcriptions, s.max_queued_syntheses) == (8, 16)
    assert (s.embedding_backend, s.resolved_embedding_backend) == ("auto", "mixed")


@pytest.mark.parametrize(
    ("overrides", "backend"),
    [
        ({"device": "gpu"}, "torch"),
        ({"precision": "float16"}, "torch"),
        ({"embedding_backend": "torch"}, "torch"),
        ({"embedding_backend": "onnx-int8"}, "onnx-int8"),
        ({"embedding_backend": "onnx"}, "onnx"),
        ({"embedding_backend": "torch", "device": "gpu"}, "torch"),
    ],
)
def test_auto_embedding_backend_is_onnx_only_where_onnx_runs(overrides, backend) -> None:
    s = load_settings(ReasoningSettings, **BASE, **overrides)
    assert s.resolved_embedding_backend == backend


def test_the_speech_servers_voices_are_a_comma_separated_list() -> None:
    s = load_settings(
        ReasoningSettings,
        **BASE,
        tts_backend="openai",
        audio_openai_base_url="http://speech:8000/v1",
        tts_openai_voices="alloy, nova",
    )
    assert s.tts_openai_voices == ["alloy", "nova"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"default_max_tokens": 600}, "EDRS_REASONING_DEFAULT_MAX_TOKENS (600) exceeds"),
        ({"max_output_tokens": 4096}, "must be below EDRS_REASONING_CONTEXT_WINDOW (2048)"),
        ({"backend": "openai"}, "needs EDRS_REASONING_OPENAI_BASE_URL"),
        ({"device": "tpu"}, "EDRS_REASONING_DEVICE"),
        ({"self_consistency_samples": 17}, "EDRS_REASONING_SELF_CONSISTENCY_SAMPLES"),
        ({"stt_backend": "openai"}, "needs EDRS_REASONING_AUDIO_OPENAI_BASE_URL"),
        ({"tts_backend": "openai"}, "needs EDRS_REASONING_AUDIO_OPENAI_BASE_URL"),
        ({"tts_backend": "flite"}, "EDRS_REASONING_TTS_BACKEND"),
        ({"max_audio_seconds": 0}, "EDRS_REASONING_MAX_AUDIO_SECONDS"),
        ({"embedding_backend": "tensorrt"}, "EDRS_REASONING_EMBEDDING_BACKEND"),
        (
            {"embedding_backend": "onnx", "device": "gpu"},
            "EDRS_REASONING_EMBEDDING_BACKEND=onnx runs on CPU only",
        ),
        (
            {"embedding_backend": "mixed", "device": "gpu"},
            "EDRS_REASONING_EMBEDDING_BACKEND=mixed runs on CPU only",
        ),
        (
            {"embedding_backend": "onnx-int8", "precision": "float16"},
            "EDRS_REASONING_PRECISION=float16 applies to the torch embedding backend",
        ),
    ],
)
def test_unworkable_settings_are_refused_by_name(overrides, message) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(ReasoningSettings, **BASE, **overrides)


@pytest.mark.integration
async def test_an_embedding_dimension_mismatch_stops_start_up(
    postgres_engine, redis_engine, nats_engine, caplog
) -> None:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_reasoning_config", redis_db=4
    )
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="did not start"):
        async with testing.running_service(
            definition, start_timeout=180, embedding_dimensions=512, **settings
        ):
            pass
    assert "EDRS_REASONING_EMBEDDING_DIMENSIONS is 512" in caplog.text
    assert "384-dimensional" in caplog.text
