"""Working memory over real gRPC: bounded (5 items in these tests), prioritised, expiring, and
rebuilt from PostgreSQL when Redis loses it."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from edrs_core import testing
from edrs_core.clock import ManualClock
from edrs_memory.app import build, definition
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")


async def put(stub, persona_id: str, text: str, conversation: str = "c", **fields):
    return await stub.PutWorkingItem(
        memory_pb2.PutWorkingItemRequest(
            persona_id=persona_id, user_id="u", conversation_id=conversation, text=text, **fields
        ),
        metadata=TENANT_A,
    )


async def texts(stub, persona_id: str, conversation: str = "c", limit: int = 0) -> list[str]:
    reply = await stub.ListWorkingItems(
        memory_pb2.ListWorkingItemsRequest(
            persona_id=persona_id, user_id="u", conversation_id=conversation, limit=limit
        ),
        metadata=TENANT_A,
    )
    return [i.text for i in reply.items]


async def test_put_item_defaults_and_listing(stub, persona_id) -> None:
    item = await put(stub, persona_id, " remember the milk ")
    assert (item.text, item.priority, item.kind, item.role) == ("remember the milk", 3, "note", "")
    assert item.expire_time.seconds - item.create_time.seconds == 3_600
    await put(stub, persona_id, "second", priority=5, kind="message", role="user")
    assert await texts(stub, persona_id) == ["remember the milk", "second"]
    assert await texts(stub, persona_id, limit=1) == ["second"]


async def test_eviction_takes_lowest_priority_first_then_oldest(stub, persona_id) -> None:
    for text, priority in [("a3", 3), ("b1", 1), ("c5", 5), ("d1", 1), ("e3", 3)]:
        await put(stub, persona_id, text, priority=priority)
    await put(stub, persona_id, "f3", priority=3)
    assert await texts(stub, persona_id) == ["a3", "c5", "d1", "e3", "f3"]
    await put(stub, persona_id, "g2", priority=2)
    assert await texts(stub, persona_id) == ["a3", "c5", "e3", "f3", "g2"]
    await put(stub, persona_id, "h4", priority=4)
    assert await texts(stub, persona_id) == ["a3", "c5", "e3", "f3", "h4"]
    await put(stub, persona_id, "i3", priority=3)
    assert await texts(stub, persona_id) == ["c5", "e3", "f3", "h4", "i3"]


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
async def held_memory(
    postgres_engine, redis_engine, nats_engine, clock
) -> AsyncIterator[testing.RunningService]:
    """A memory service whose working memory reads `clock`: expiry happens when a test says."""
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_memory_clock", redis_db=8
    )
    held = dataclasses.replace(definition, build=functools.partial(build, clock=clock))
    async with testing.running_service(held, working_max_items=5, **settings) as svc:
        yield svc


async def test_expired_items_are_never_listed(held_memory, clock, persona_id) -> None:
    stub = memory_pb2_grpc.MemoryServiceStub(held_memory.channel)
    await put(stub, persona_id, "fleeting", ttl_seconds=1)
    clock.advance(timedelta(milliseconds=1))
    await put(stub, persona_id, "lasting")
    assert await texts(stub, persona_id) == ["fleeting", "lasting"]
    clock.advance(timedelta(milliseconds=998))
    assert await texts(stub, persona_id) == ["fleeting", "lasting"], "a millisecond early"
    clock.advance(timedelta(milliseconds=1))
    assert await texts(stub, persona_id) == ["lasting"]
    # Rebuilt from PostgreSQL after Redis lost the conversation, it stays gone.
    redis = held_memory.runner.runtime.redis
    assert redis is not None
    await redis.delete(*[k async for k in redis.scan_iter(match=f"*{persona_id}*")])
    assert await texts(stub, persona_id) == ["lasting"]


async def test_lost_conversation_is_rebuilt_from_postgres(stub, persona_id, redis) -> None:
    for text, priority in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]:
        await put(stub, persona_id, text, priority=priority)
    await put(stub, persona_id, "other conversation", conversation="c2")
    await redis.flushdb()
    assert await texts(stub, persona_id) == ["a", "b", "c", "d", "e"]
    # Rebuilt, it evicts as before: "a" (priority 1) goes, in Redis and in PostgreSQL.
    await put(stub, persona_id, "f", priority=3)
    await redis.flushdb()
    assert await texts(stub, persona_id) == ["b", "c", "d", "e", "f"]
    assert await texts(stub, persona_id, "c2") == ["other conversation"]


async def test_write_after_redis_lost_keeps_the_older_items(stub, persona_id, redis) -> None:
    await put(stub, persona_id, "before")
    await redis.flushdb()
    await put(stub, persona_id, "after")
    assert await texts(stub, persona_id) == ["before", "after"]


async def test_conversations_and_users_are_separate(stub, persona_id) -> None:
    await put(stub, persona_id, "in c", conversation="c")
    await put(stub, persona_id, "in d", conversation="d")
    assert await texts(stub, persona_id, "c") == ["in c"]
    other_user = await stub.ListWorkingItems(
        memory_pb2.ListWorkingItemsRequest(persona_id=persona_id, user_id="v", conversation_id="c"),
        metadata=TENANT_A,
    )
    assert list(other_user.items) == []
