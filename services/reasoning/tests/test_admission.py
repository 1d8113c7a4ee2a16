"""Admission to the model over real gRPC: one generation slot and no waiting room, so a second call
is refused at once, and a caller that goes away gives its slot back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

import grpc
import pytest
from edrs_core import testing
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning.app import definition
from edrs_reasoning.backends.base import ChatBackend, GenerationOptions, Message, Usage

pytestmark = pytest.mark.integration

TENANT = testing.tenant_metadata("tenant-admission")


HELD_TOKENS = 400


class HeldAfterFirstDelta:
    """The real model, except that a generation of HELD_TOKENS tokens stops after its first
    delta and waits for the test (which never lets it go on): such a call ends only if it is
    cancelled, so a slot freed meanwhile was freed by the cancellation, not by the model
    finishing."""

    def __init__(self, real: ChatBackend) -> None:
        self.real = real
        self.kind, self.model, self.context_window = real.kind, real.model, real.context_window
        self.closed = asyncio.Event()

    async def stream(
        self, messages: Sequence[Message], options: GenerationOptions, usage: Usage
    ) -> AsyncIterator[str]:
        inner = self.real.stream(messages, options, usage)
        try:
            async for delta in inner:
                yield delta
                if options.max_tokens == HELD_TOKENS:
                    await asyncio.Event().wait()
        finally:
            await inner.aclose()  # type: ignore[attr-defined]
            if options.max_tokens == HELD_TOKENS:
                self.closed.set()

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self.real.count_tokens(messages)

    async def close(self) -> None:
        await self.real.close()


@pytest.fixture(scope="module")
async def service(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
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
        yield svc


@pytest.fixture
def held(service) -> Iterator[HeldAfterFirstDelta]:
    """The running service's model, wrapped in HeldAfterFirstDelta for one test."""
    reasoner = service.servicer("ReasoningService").reasoner
    real = reasoner.backend
    reasoner.backend = HeldAfterFirstDelta(real)
    try:
        yield reasoner.backend
    finally:
        reasoner.backend = real


@pytest.fixture
def stub(service) -> reasoning_pb2_grpc.ReasoningServiceStub:
    return reasoning_pb2_grpc.ReasoningServiceStub(service.channel)


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
    stub, held
) -> None:
    long_call = stub.Reason(
        request("Count from 1 to 300, separated by commas.", HELD_TOKENS, "long"),
        metadata=TENANT,
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
    # The held generation could not have finished: the cancellation closed it.
    assert held.closed.is_set()

    # Neither the refused nor the cancelled call left a trace.
    for label in ("long", "refused"):
        listed = await stub.ListTraces(
            reasoning_pb2.ListTracesRequest(labels={"call": label}), metadata=TENANT
        )
        assert list(listed.traces) == [], label
