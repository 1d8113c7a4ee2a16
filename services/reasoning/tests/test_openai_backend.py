"""The OpenAI-compatible backend against a real OpenAI-compatible server: llama.cpp's own
(`python -m llama_cpp.server`, in requirements-dev.txt) serving SmolLM2 on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest
from edrs_core import testing
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning import model_files
from edrs_reasoning.app import definition

pytestmark = pytest.mark.integration

TENANT = [("x-edrs-client-id", "tenant-openai")]
SERVED_MODEL = "smollm2-served"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start llama.cpp's OpenAI-compatible server; yield its base URL; stop it."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_files.chat_model_path(None)),
            "--model_alias",
            SERVED_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
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
    model_server: str, postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[reasoning_pb2_grpc.ReasoningServiceStub]:
    async with httpx.AsyncClient() as client:

        async def ready() -> bool:
            try:
                return (await client.get(f"{model_server}/models")).status_code == 200
            except httpx.TransportError:
                return False

        await testing.wait_until(ready, 120, "the OpenAI-compatible server to answer", 0.2)
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_reasoning_openai", redis_db=4
    )
    async with testing.running_service(
        definition,
        start_timeout=180,
        backend="openai",
        openai_base_url=model_server,
        openai_model=SERVED_MODEL,
        **settings,
    ) as svc:
        yield reasoning_pb2_grpc.ReasoningServiceStub(svc.channel)


async def test_model_info_names_the_served_model(stub) -> None:
    info = await stub.GetModelInfo(reasoning_pb2.GetModelInfoRequest())
    assert (info.backend, info.chat_model) == ("openai", SERVED_MODEL)
    assert info.embedding_dimensions == 384


async def test_reason_streams_from_the_server_and_stores_the_trace(stub) -> None:
    deltas: list[str] = []
    result = None
    async for response in stub.Reason(
        reasoning_pb2.ReasonRequest(
            messages=[reasoning_pb2.ChatMessage(role="user", content="Name three colours.")],
            options=reasoning_pb2.GenerationOptions(max_tokens=16, temperature=0.0, seed=3),
            labels={"backend": "openai"},
        ),
        metadata=TENANT,
    ):
        if response.HasField("result"):
            result = response.result
        else:
            deltas.append(response.delta.text)
    assert result is not None
    assert len(deltas) > 1
    assert "".join(deltas) == result.answer
    assert result.model == SERVED_MODEL
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0
    trace = await stub.GetTrace(reasoning_pb2.GetTraceRequest(id=result.trace_id), metadata=TENANT)
    assert trace.prompt == "user: Name three colours."
    assert trace.answer == result.answer
    assert trace.options.seed == 3


async def test_stop_sequences_reach_the_server(stub) -> None:
    text = ""
    async for response in stub.Reason(
        reasoning_pb2.ReasonRequest(
            messages=[
                reasoning_pb2.ChatMessage(
                    role="user", content="Count from 1 to 10, separated by commas."
                )
            ],
            options=reasoning_pb2.GenerationOptions(max_tokens=32, temperature=0.0, stop=["5"]),
        ),
        metadata=TENANT,
    ):
        if response.HasField("delta"):
            text += response.delta.text
    assert "4" in text
    assert "5" not in text


async def test_an_unreachable_server_is_unavailable(postgres_engine, redis_engine, nats_engine):
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_reasoning_openai", redis_db=4
    )
    async with testing.running_service(
        definition,
        start_timeout=180,
        backend="openai",
        openai_base_url=f"http://127.0.0.1:{_free_port()}/v1",
        openai_model=SERVED_MODEL,
        **settings,
    ) as svc:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(svc.channel)
        call = stub.Reason(
            reasoning_pb2.ReasonRequest(
                messages=[reasoning_pb2.ChatMessage(role="user", content="hi")]
            ),
            metadata=TENANT,
        )
        await testing.expect_rpc_error(
            _drain(call), grpc.StatusCode.UNAVAILABLE, "cannot be reached"
        )


async def _drain(call) -> None:
    async for _ in call:
        pass
