"""Admission to the model over real gRPC: one generation slot and no waiting room, so a second call
is refused at once, and a caller that goes away gives its slot back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning.app import definition

pytestmark = pytest.mark.integration

TENANT = [("x-edrs-client-id", "tenant-admission")]


@pytest.fixture(scope="module")
async def stub(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[reasoning_pb2_grpc.ReasoningServiceStub]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_reasoning_admission", redis_db=4
    )
    async with testing.running_service(
        definition,
        start_timeout=180,
        max_concurrent_generations=1,
        max_queued_generations=0,
        **settings,
    ) as svc:
        yield reasoning_pb2_grpc.ReasoningServiceStub(svc.channel)


def request(text: str, max_tokens: int, label: str) -> reasoning_pb2.ReasonRequest:
    return reasoning_pb2.ReasonRequest(
        messages=[reasoning_pb2.ChatMessage(role="user", content=text)],
        options=reasoning_pb2.GenerationOptions(max_tokens=max_tokens, temperature=0.0),
        labels={"call": label},
    )


async def finish(call) -> reasoning_pb2.ReasonResult:
    async for response in call:
        if response.HasField("result"):
            return response.result
    raise AssertionError("the stream ended without a result")


async def test_a_call_beyond_the_queue_is_refused_and_a_cancelled_call_frees_its_slot(
    stub,
) -> None:
    long_call = stub.Reason(
        request("Count from 1 to 300, separated by commas.", 400, "long"), metadata=TENANT
    )
    first = await long_call.read()
    assert first.HasField("delta"), "the long generation is running"

    await testing.expect_rpc_error(
        finish(stub.Reason(request("Say hi.", 4, "refused"), metadata=TENANT)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "busy",
    )

    long_call.cancel()
    results: list[reasoning_pb2.ReasonResult] = []

    async def admitted() -> bool:
        try:
            results.append(
                await finish(stub.Reason(request("Say hi.", 4, "after"), metadata=TENANT))
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return False
        return True

    await testing.wait_until(admitted, 60, "a call to be admitted after the cancellation")
    assert results[0].trace_id

    # Neither the refused nor the cancelled call left a trace.
    for label in ("long", "refused"):
        listed = await stub.ListTraces(
            reasoning_pb2.ListTracesRequest(labels={"call": label}), metadata=TENANT
        )
        assert list(listed.traces) == [], label
