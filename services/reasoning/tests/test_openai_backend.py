"""The OpenAI-compatible backend against a real OpenAI-compatible server: llama.cpp's own
(`python -m llama_cpp.server`, in requirements-dev.txt) serving SmolLM2 on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from edrs_core import testing
from edrs_core.http import HttpServer
from edrs_core.testing import HTTP_TIMEOUT
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning import model_files
from edrs_reasoning.app import definition
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

pytestmark = pytest.mark.integration

TENANT = testing.tenant_metadata("tenant-openai")
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


@dataclass
class Exchange:
    """One request the model server received through the proxy, and what it streamed back."""

    body: dict[str, Any]
    streamed: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def recorded(model_server: str) -> AsyncIterator[tuple[str, list[Exchange]]]:
    """A pass-through HTTP proxy in front of the model server that records each exchange, so a
    test sees what reached the server and what the server itself answered."""
    exchanges: list[Exchange] = []
    upstream = httpx.AsyncClient(base_url=model_server.removesuffix("/v1"), timeout=120)

    async def forward(request: Request) -> StreamingResponse:
        raw = await request.body()
        exchange = Exchange(json.loads(raw) if raw else {})
        exchanges.append(exchange)
        reply = await upstream.send(
            upstream.build_request(
                request.method,
                request.url.path,
                content=raw,
                headers={"content-type": request.headers.get("content-type", "")},
            ),
            stream=True,
        )

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.aiter_bytes():
                    exchange.streamed.append(chunk.decode("utf-8", "replace"))
                    yield chunk
            finally:
                await reply.aclose()

        return StreamingResponse(
            body(), status_code=reply.status_code, media_type=reply.headers.get("content-type")
        )

    app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])
    server = HttpServer(app, "127.0.0.1", 0, "model-proxy")
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/v1", exchanges
    finally:
        await server.stop()
        await upstream.aclose()


@pytest.fixture(scope="module")
async def stub(
    model_server: str, recorded, postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[reasoning_pb2_grpc.ReasoningServiceStub]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:

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
        openai_base_url=recorded[0],
        openai_model=SERVED_MODEL,
        # llama-cpp-python's server takes a schema in a json_object response_format.
        openai_json_schema_format="json_object",
        **settings,
    ) as svc:
        yield reasoning_pb2_grpc.ReasoningServiceStub(svc.channel)


async def test_model_info_names_the_served_model(stub) -> None:
    info = await stub.GetModelInfo(reasoning_pb2.GetModelInfoRequest(), metadata=TENANT)
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


async def test_stop_sequences_reach_the_server(stub, recorded) -> None:
    _, exchanges = recorded
    before = len(exchanges)
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
    # Applied by the server, not cut by the client: the request carried the stop sequence, the
    # server's own stream holds no "5" and ends on "stop", and the client passed on all of it.
    [exchange] = exchanges[before:]
    assert exchange.body["stop"] == ["5"]
    chunks = [
        json.loads(line[5:])
        for line in "".join(exchange.streamed).splitlines()
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")
    ]
    choices = [choice for chunk in chunks for choice in chunk.get("choices") or []]
    served = "".join((choice.get("delta") or {}).get("content") or "" for choice in choices)
    assert served == text
    assert [c["finish_reason"] for c in choices if c.get("finish_reason")] == ["stop"]


ORDER_CALL = {
    "type": "object",
    "properties": {
        "tool": {"type": "string", "enum": ["lookup_order"]},
        "arguments": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "maxLength": 12}},
            "required": ["order_id"],
        },
    },
    "required": ["tool", "arguments"],
}


async def test_a_json_schema_constrains_the_served_answer(stub, recorded) -> None:
    _, exchanges = recorded
    before = len(exchanges)
    result = None
    async for response in stub.Reason(
        reasoning_pb2.ReasonRequest(
            messages=[
                reasoning_pb2.ChatMessage(role="user", content="Look up order A-17, please.")
            ],
            options=reasoning_pb2.GenerationOptions(
                max_tokens=64, temperature=0.0, json_schema=json.dumps(ORDER_CALL)
            ),
        ),
        metadata=TENANT,
    ):
        if response.HasField("result"):
            result = response.result
    assert result is not None
    [exchange] = exchanges[before:]
    assert exchange.body["response_format"] == {"type": "json_object", "schema": ORDER_CALL}
    # llama.cpp's server turned the schema into a grammar: the answer is a document of it.
    answer = json.loads(result.answer)
    assert answer["tool"] == "lookup_order"
    assert isinstance(answer["arguments"]["order_id"], str)


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
