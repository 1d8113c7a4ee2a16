"""The OpenAI-compatible speech backends against a real OpenAI-compatible audio server (the
tests' openai_audio_server.py, running the same local models in another process): the same
calls, checks and streaming as the local backends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from edrs_core import testing
from edrs_core.testing import HTTP_TIMEOUT
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning.app import definition

pytestmark = pytest.mark.integration

SERVER = Path(__file__).with_name("openai_audio_server.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def audio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path_factory.mktemp("audio-server") / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(SERVER), str(port)],
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
async def stub(
    audio_server: str, postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[reasoning_pb2_grpc.ReasoningServiceStub]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:

        async def ready() -> bool:
            try:
                return (await client.get(f"{audio_server}/models")).status_code == 200
            except httpx.TransportError:
                return False

        await testing.wait_until(ready, 120, "the OpenAI-compatible audio server to answer", 0.2)
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_reasoning_audio", redis_db=4
    )
    async with testing.running_service(
        definition,
        start_timeout=240,
        stt_backend="openai",
        tts_backend="openai",
        audio_openai_base_url=audio_server,
        stt_openai_model="whisper-served",
        tts_openai_model="piper-served",
        # "nova" is offered here but not by the server: its refusal must reach the caller.
        tts_openai_voices="alloy,nova",
        **settings,
    ) as svc:
        # Every call carries a caller's identity (a real token of the test issuer).
        identity = testing.tenant_metadata("tenant-voice")
        async with testing.channel_with(svc.grpc_address, identity) as channel:
            yield reasoning_pb2_grpc.ReasoningServiceStub(channel)


def upload(data: bytes, **config: object) -> Iterable[reasoning_pb2.TranscribeRequest]:
    yield reasoning_pb2.TranscribeRequest(config=reasoning_pb2.TranscribeConfig(**config))
    for i in range(0, len(data), 16_384):
        yield reasoning_pb2.TranscribeRequest(audio=data[i : i + 16_384])


async def test_model_info_names_the_served_models(stub) -> None:
    info = await stub.GetModelInfo(reasoning_pb2.GetModelInfoRequest())
    assert (info.transcription_model, info.speech_model) == ("whisper-served", "piper-served")
    assert list(info.voices) == ["alloy", "nova"]


async def test_speech_from_the_server_is_transcribed_back_by_the_server(stub, normalise) -> None:
    text = "The server speaks first. Then the server listens."
    info, chunks = None, []
    async for response in stub.Synthesize(
        reasoning_pb2.SynthesizeRequest(text=text, format=reasoning_pb2.AUDIO_FORMAT_OPUS)
    ):
        if response.HasField("info"):
            info = response.info
        else:
            chunks.append(response.audio)
    assert info is not None
    assert (info.content_type, info.sample_rate, info.voice) == ("audio/ogg", 22_050, "alloy")
    assert [c.text for c in chunks if c.text] == [
        "The server speaks first.",
        "Then the server listens.",
    ]
    result = await stub.Transcribe(upload(b"".join(c.data for c in chunks), word_timestamps=True))
    assert normalise(result.text) == normalise(text)
    assert result.language == "en"
    assert result.model == "whisper-served"
    assert [normalise(w.word) for w in result.words] == normalise(text).split()


async def test_the_servers_refusal_reaches_the_caller(stub) -> None:
    async def drain() -> None:
        async for _ in stub.Synthesize(reasoning_pb2.SynthesizeRequest(text="Hi.", voice="nova")):
            pass

    await testing.expect_rpc_error(
        drain(), grpc.StatusCode.INVALID_ARGUMENT, "the speech server refused the request"
    )


async def test_bad_audio_is_refused_before_the_server_is_asked(stub) -> None:
    await testing.expect_rpc_error(
        stub.Transcribe(upload(b"not audio at all " * 64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "audio is not an audio file",
    )
