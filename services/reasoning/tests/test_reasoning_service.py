"""The reasoning service's traces over real gRPC, against embedded PostgreSQL, Redis and NATS.

Traces are written by the service's own model calls, so tests record them through the store on
the running service's pool and read them back as a client would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_proto.common.v1 import common_pb2
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning.app import definition
from edrs_reasoning.store import NewTrace
from edrs_reasoning.store.postgres import PostgresTraceStore

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")


@pytest.fixture(scope="module")
async def reasoning(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_reasoning", redis_db=4
    )
    # The models load at start-up: on a busy 2-core machine that takes far more than the 30 s
    # default, as the other reasoning fixtures allow.
    async with testing.running_service(definition, start_timeout=300, **settings) as svc:
        yield svc


@pytest.fixture
def store(reasoning: testing.RunningService) -> PostgresTraceStore:
    assert reasoning.runner.runtime is not None
    return PostgresTraceStore(reasoning.runner.runtime.db)


@pytest.fixture
def stub(reasoning: testing.RunningService) -> reasoning_pb2_grpc.ReasoningServiceStub:
    return reasoning_pb2_grpc.ReasoningServiceStub(reasoning.channel)


def _trace(answer: str = "42") -> NewTrace:
    return NewTrace(
        strategy="chain_of_thought",
        prompt="What is six times seven?",
        answer=answer,
        confidence=0.875,
        prompt_tokens=12,
        completion_tokens=30,
        duration_ms=812.5,
    )


async def test_recorded_trace_reads_back_as_stored(store, stub) -> None:
    recorded = await store.record("tenant-a", _trace())
    fetched = await stub.GetTrace(
        reasoning_pb2.GetTraceRequest(id=str(recorded.id)), metadata=TENANT_A
    )
    assert fetched.id == str(recorded.id)
    assert fetched.strategy == "chain_of_thought"
    assert fetched.prompt == "What is six times seven?"
    assert fetched.answer == "42"
    assert fetched.confidence == pytest.approx(0.875)
    assert (fetched.prompt_tokens, fetched.completion_tokens) == (12, 30)
    assert fetched.duration_ms == pytest.approx(812.5)
    assert fetched.create_time.ToDatetime(tzinfo=recorded.created_at.tzinfo) == recorded.created_at


async def test_other_tenant_cannot_see_the_trace(store, stub) -> None:
    recorded = await store.record("tenant-a", _trace("private"))
    await testing.expect_rpc_error(
        stub.GetTrace(reasoning_pb2.GetTraceRequest(id=str(recorded.id)), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListTraces(reasoning_pb2.ListTracesRequest(), metadata=TENANT_B)
    assert str(recorded.id) not in {t.id for t in listed.traces}


async def test_malformed_id_names_the_field(stub) -> None:
    await testing.expect_rpc_error(
        stub.GetTrace(reasoning_pb2.GetTraceRequest(id="nope"), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "id must be a UUID",
    )


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(stub.ListTraces(reasoning_pb2.ListTracesRequest()))


async def test_list_pages_through_every_trace_once_newest_first(store, stub) -> None:
    # A tenant of this run only: a server kept from an earlier run holds that run's traces.
    paging = f"tenant-paging-{uuid.uuid4().hex[:8]}"
    tenant = testing.tenant_metadata(paging)
    made = [str((await store.record(paging, _trace(f"a{i}"))).id) for i in range(7)]
    traces = await testing.collect_pages(
        stub.ListTraces, reasoning_pb2.ListTracesRequest, "traces", page_size=3, metadata=tenant
    )
    assert [t.id for t in traces] == made[::-1]


async def test_bad_page_token_is_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.ListTraces(
            reasoning_pb2.ListTracesRequest(page=common_pb2.PageRequest(page_token="garbage!")),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token",
    )
