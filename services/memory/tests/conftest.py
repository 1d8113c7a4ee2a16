"""Memory runs against the real reasoning service (its Embed RPC), both started once for the
memory tests (package scope: the models are released before the next directory's tests run)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from edrs_core import testing
from edrs_core.events import ServiceEvents
from edrs_memory.app import definition
from edrs_memory.store.postgres import PostgresMemoryStore
from edrs_proto.memory.v1 import memory_pb2_grpc
from edrs_reasoning.app import definition as reasoning_definition
from redis.asyncio import Redis


@pytest.fixture(scope="package")
async def reasoning(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_memory_reasoning", redis_db=9
    )
    # Loading the models takes a while on a small CPU.
    async with testing.running_service(reasoning_definition, start_timeout=300, **settings) as svc:
        yield svc


@pytest.fixture(scope="package")
async def memory(
    postgres_engine, redis_engine, nats_engine, reasoning: testing.RunningService
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_memory", redis_db=8
    )
    async with testing.running_service(
        definition,
        peers={"reasoning": reasoning.grpc_address},
        rpc_timeout_seconds=60.0,
        working_max_items=5,
        # The service sweeps for unembedded episodes at start-up only: test_late_embedding.py
        # sweeps when it means to.
        late_embedding_interval_seconds=3_600.0,
        **settings,
    ) as svc:
        yield svc


@pytest.fixture
def stub(memory: testing.RunningService) -> memory_pb2_grpc.MemoryServiceStub:
    return memory_pb2_grpc.MemoryServiceStub(memory.channel)


@pytest.fixture
def store(memory: testing.RunningService) -> PostgresMemoryStore:
    """The running service's own store, for what no RPC does (back-dated rows, bulk loads)."""
    assert memory.runner.runtime is not None
    return PostgresMemoryStore(memory.runner.runtime.db, ServiceEvents("memory"))


@pytest.fixture
def redis(memory: testing.RunningService) -> Redis:
    assert memory.runner.runtime is not None and memory.runner.runtime.redis is not None
    return memory.runner.runtime.redis


@pytest.fixture
def persona_id() -> str:
    """A fresh persona per test, so tests do not see each other's memories."""
    return str(uuid.uuid4())
