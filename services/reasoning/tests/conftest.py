"""Reasoning tests' shared fixtures: one reasoning service with the real speech models for the
whole session (the models load once), the torch embedding pipeline as the reference the onnx
backends are held to, and the text normalisation word error rates are taken on."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest
from edrs_core import testing
from edrs_reasoning import model_files
from edrs_reasoning.app import definition
from edrs_reasoning.embeddings import TorchEncoder, load_torch_encoder


@pytest.fixture(scope="session")
def torch_encoder() -> TorchEncoder:
    """The reference pipeline (sentence-transformers on torch) for the default embedding model,
    which the onnx backends must reproduce."""
    return load_torch_encoder(model_files.embedding_model_path(None), "cpu", "float32", threads=1)


# The speech service's limits, small enough for tests to reach with short audio.
VOICE_MAX_AUDIO_SECONDS = 20.0


@pytest.fixture(scope="session")
async def voice_service(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    """Reasoning with the local speech models; one synthesis at a time and none waiting, so a
    second synthesis during one is refused."""
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_reasoning_voice", redis_db=4
    )
    async with testing.running_service(
        definition,
        start_timeout=240,
        max_concurrent_syntheses=1,
        max_queued_syntheses=0,
        max_audio_seconds=VOICE_MAX_AUDIO_SECONDS,
        **settings,
    ) as svc:
        yield svc


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for 0..999,999 ("twenty five"), as a speaker reads a number."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def normalise_text(text: str) -> str:
    """Lower case, numbers as words (Whisper writes digits), punctuation and extra spaces gone."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text.replace(",", ""))
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.split())


@pytest.fixture(scope="session")
def normalise() -> Callable[[str], str]:
    """Text as word error rates are taken on: see `normalise_text`."""
    return normalise_text


@pytest.fixture(scope="session")
def voice_max_audio_seconds() -> float:
    return VOICE_MAX_AUDIO_SECONDS
