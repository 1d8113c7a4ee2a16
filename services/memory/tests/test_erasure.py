"""Erasing a deleted user: memory consumes `gateway.user_deleted` from the real bus and erases the
user's episodes, facts and working memory (PostgreSQL and Redis) with every persona, once, and
publishes `memory.user_erased`; another user's and another tenant's memories stay."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from edrs_core import testing
from edrs_events import BaseEvent, connect_bus
from edrs_memory.erasure import CONSUMER
from edrs_proto.memory.v1 import memory_pb2

pytestmark = pytest.mark.integration


def tenant(name: str) -> list[tuple[str, str]]:
    return testing.tenant_metadata(name)


async def talk(stub, tenant_id: str, persona_id: str, user_id: str) -> None:
    """One turn that leaves two episodes, a fact and two working-memory items."""
    await stub.RecordTurn(
        memory_pb2.RecordTurnRequest(
            persona_id=persona_id,
            user_id=user_id,
            conversation_id="conv-1",
            user_text="My manager is Priya",
            reply_text="Noted.",
        ),
        metadata=tenant(tenant_id),
    )


async def held(memory, tenant_id: str, user_id: str) -> dict[str, int]:
    """What memory's own database holds about one user of one tenant, by table."""
    db = memory.runner.runtime.db
    counts = {}
    for table in ("episodes", "facts", "working_items"):
        counts[table] = await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE client_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
        )
    return counts


async def hot_keys(redis, tenant_id: str, user_id: str) -> list[str]:
    """The user's working-memory keys in Redis (any persona, any conversation)."""
    found = []
    async for raw in redis.scan_iter(match=f"edrs:memory:wm:{{{tenant_id}|*"):
        key = raw.decode() if isinstance(raw, bytes) else raw
        if f"|{user_id}|" in key:
            found.append(key)
    return found


async def outbox_rows(memory, tenant_id: str, user_id: str) -> list[tuple[str, bool]]:
    """(event type, sent) of memory's outbox rows that name the user."""
    rows = await memory.runner.runtime.db.fetch(
        """SELECT event_type, sent_at IS NOT NULL AS sent, body FROM edrs_outbox
           WHERE client_id = $1 ORDER BY position""",
        tenant_id,
    )
    return [
        (r["event_type"], r["sent"])
        for r in rows
        if json.loads(bytes(r["body"]))["payload"].get("user_id") == user_id
    ]


async def test_a_deleted_users_memories_are_erased_once_and_the_erase_is_published(
    memory, stub, redis, persona_id, nats_engine
) -> None:
    tenant_a, tenant_b = f"erase-a-{uuid.uuid4().hex[:8]}", f"erase-b-{uuid.uuid4().hex[:8]}"
    other_persona = str(uuid.uuid4())
    # The user talked to two personas; another user of the tenant and the same user id in
    # another tenant talked too.
    await talk(stub, tenant_a, persona_id, "ann")
    await talk(stub, tenant_a, other_persona, "ann")
    await talk(stub, tenant_a, persona_id, "bob")
    await talk(stub, tenant_b, persona_id, "ann")
    before = await held(memory, tenant_a, "ann")
    assert before == {"episodes": 4, "facts": 2, "working_items": 4}
    assert len(await hot_keys(redis, tenant_a, "ann")) == 8  # 4 keys per conversation

    async def relayed() -> bool:
        return all(sent for _, sent in await outbox_rows(memory, tenant_a, "ann"))

    # The turns' own events have gone to the bus (the erase removes sent rows only).
    await testing.wait_until(relayed, 20, "the turns' events to be relayed")
    duplicates = await testing.metric_value(
        memory, "edrs_event_consumer_duplicates_total", consumer=CONSUMER
    )

    deleted = BaseEvent(
        event_type="gateway.user_deleted",
        source_container="gateway",
        client_id=tenant_a,
        payload={"user_id": "ann"},
    )
    bus = await connect_bus(nats_engine.url())
    try:
        await testing.publish_redelivered(bus, deleted)

        async def redelivery_recognised() -> bool:
            seen = await testing.metric_value(
                memory, "edrs_event_consumer_duplicates_total", consumer=CONSUMER
            )
            return seen > duplicates

        await testing.wait_until(redelivery_recognised, 30, "the second delivery to be handled")
        assert await held(memory, tenant_a, "ann") == {
            "episodes": 0,
            "facts": 0,
            "working_items": 0,
        }
        assert await hot_keys(redis, tenant_a, "ann") == []

        # Exactly one erase, with what it erased, and it reaches the bus.
        async def erase_sent() -> bool:
            return await outbox_rows(memory, tenant_a, "ann") == [("memory.user_erased", True)]

        await testing.wait_until(erase_sent, 20, "memory.user_erased to be relayed, alone")

        async def first_erased() -> BaseEvent:
            async for event in bus.tail("memory.user_erased", client_id=tenant_a, from_start=True):
                return event
            raise AssertionError("the tail ended")

        erased = await asyncio.wait_for(first_erased(), timeout=20)
    finally:
        await bus.close()
    assert erased.payload == {"user_id": "ann", "episodes": 4, "facts": 2, "working_items": 4}
    assert erased.source_container == "memory"

    # Another user of the tenant, and the same user id in another tenant, keep everything.
    assert await held(memory, tenant_a, "bob") == {"episodes": 2, "facts": 1, "working_items": 2}
    assert await held(memory, tenant_b, "ann") == {"episodes": 2, "facts": 1, "working_items": 2}
    assert len(await hot_keys(redis, tenant_a, "bob")) == 4
    assert len(await hot_keys(redis, tenant_b, "ann")) == 4
    listed = await stub.ListWorkingItems(
        memory_pb2.ListWorkingItemsRequest(
            persona_id=persona_id, user_id="bob", conversation_id="conv-1"
        ),
        metadata=tenant(tenant_a),
    )
    assert [i.text for i in listed.items] == ["My manager is Priya", "Noted."]
    # And the erased user reads back nothing, not even after Redis is rebuilt from PostgreSQL.
    gone = await stub.ListWorkingItems(
        memory_pb2.ListWorkingItemsRequest(
            persona_id=persona_id, user_id="ann", conversation_id="conv-1"
        ),
        metadata=tenant(tenant_a),
    )
    assert list(gone.items) == []
