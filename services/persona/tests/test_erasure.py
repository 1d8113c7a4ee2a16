"""Erasing a deleted user: the persona service consumes `gateway.user_deleted` from the real bus
and erases the user's relationships, conversations and messages with every persona, once, and
publishes `persona.user_erased`; another user's and another tenant's stay."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import pytest
from edrs_core import testing
from edrs_core.events import ServiceEvents
from edrs_events import BaseEvent, connect_bus
from edrs_persona.app import definition
from edrs_persona.erasure import CONSUMER
from edrs_persona.store import ConversationKey, TaskNotice
from edrs_persona.store.postgres import PostgresPersonaStore
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc

pytestmark = pytest.mark.integration

DATABASE = "test_persona_erasure"


@pytest.fixture(scope="module")
async def persona(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database=DATABASE, redis_db=11
    )
    async with testing.running_service(definition, **settings) as svc:
        yield svc


def tenant(name: str) -> list[tuple[str, str]]:
    return testing.tenant_metadata(name)


async def new_persona(svc: testing.RunningService, tenant_id: str, name: str) -> UUID:
    stub = persona_pb2_grpc.PersonaServiceStub(svc.channel)
    made = await stub.CreatePersona(
        persona_pb2.CreatePersonaRequest(name=name, role="analyst"), metadata=tenant(tenant_id)
    )
    return UUID(made.id)


async def talk(svc, tenant_id: str, persona_id: UUID, user_id: str) -> None:
    """One turn as Converse stores it (a message, a reply, the relationship), without the model:
    the consumer under test reads only what the store wrote."""
    store = PostgresPersonaStore(svc.runner.runtime.db, ServiceEvents("persona"))
    key = ConversationKey(
        client_id=tenant_id, persona_id=persona_id, user_id=user_id, conversation_id="conv-1"
    )
    await store.add_user_message(key, "I prefer short answers")
    await store.add_reply(key, "Understood.", trace_id="", latency_ms=1.0)
    await store.set_notes(tenant_id, persona_id, user_id, ["Prefers short answers."])
    # A finished task waiting to be told to the user: about the user, so erased with them.
    async with svc.runner.runtime.db.acquire() as conn:
        notice = TaskNotice(
            task_id=str(uuid.uuid4()),
            persona_id=str(persona_id),
            user_id=user_id,
            title="Quarterly report",
            status="succeeded",
        )
        await store.add_task_notice(conn, tenant_id, notice)


async def held(svc, tenant_id: str, user_id: str) -> dict[str, int]:
    """What the persona service's own database holds about one user of one tenant, by table."""
    db = svc.runner.runtime.db
    return {
        table: await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE client_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
        )
        for table in ("relationships", "conversations", "messages", "task_notices")
    }


async def outbox_rows(svc, tenant_id: str, user_id: str) -> list[tuple[str, bool]]:
    rows = await svc.runner.runtime.db.fetch(
        """SELECT event_type, sent_at IS NOT NULL AS sent, body FROM edrs_outbox
           WHERE client_id = $1 ORDER BY position""",
        tenant_id,
    )
    return [
        (r["event_type"], r["sent"])
        for r in rows
        if json.loads(bytes(r["body"]))["payload"].get("user_id") == user_id
    ]


async def test_a_deleted_users_conversations_are_erased_once_and_the_erase_is_published(
    persona, nats_engine
) -> None:
    tenant_a, tenant_b = f"erase-a-{uuid.uuid4().hex[:8]}", f"erase-b-{uuid.uuid4().hex[:8]}"
    ada = await new_persona(persona, tenant_a, "Ada")
    bea = await new_persona(persona, tenant_a, "Bea")
    cyd = await new_persona(persona, tenant_b, "Cyd")
    for persona_id in (ada, bea):
        await talk(persona, tenant_a, persona_id, "ann")
    await talk(persona, tenant_a, ada, "bob")
    await talk(persona, tenant_b, cyd, "ann")
    assert await held(persona, tenant_a, "ann") == {
        "relationships": 2,
        "conversations": 2,
        "messages": 4,
        "task_notices": 2,
    }

    async def relayed() -> bool:
        return all(sent for _, sent in await outbox_rows(persona, tenant_a, "ann"))

    await testing.wait_until(relayed, 20, "the turns' events to be relayed")
    duplicates = await testing.metric_value(
        persona, "edrs_event_consumer_duplicates_total", consumer=CONSUMER
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
                persona, "edrs_event_consumer_duplicates_total", consumer=CONSUMER
            )
            return seen > duplicates

        await testing.wait_until(redelivery_recognised, 30, "the second delivery to be handled")
        assert await held(persona, tenant_a, "ann") == {
            "relationships": 0,
            "conversations": 0,
            "messages": 0,
            "task_notices": 0,
        }

        # One erase, and only it still names the user among the sent events (the turns' events,
        # which carried the user's words, are gone from the outbox).
        async def erase_sent() -> bool:
            return await outbox_rows(persona, tenant_a, "ann") == [("persona.user_erased", True)]

        await testing.wait_until(erase_sent, 20, "persona.user_erased to be relayed, alone")

        async def first_erased() -> BaseEvent:
            async for event in bus.tail("persona.user_erased", client_id=tenant_a, from_start=True):
                return event
            raise AssertionError("the tail ended")

        erased = await asyncio.wait_for(first_erased(), timeout=20)
    finally:
        await bus.close()
    assert erased.payload == {
        "user_id": "ann",
        "relationships": 2,
        "conversations": 2,
        "messages": 4,
    }
    assert erased.source_container == "persona"
    # Another user of the tenant, and the same user id in another tenant, keep everything.
    for tenant_id, user_id in ((tenant_a, "bob"), (tenant_b, "ann")):
        assert await held(persona, tenant_id, user_id) == {
            "relationships": 1,
            "conversations": 1,
            "messages": 2,
            "task_notices": 1,
        }
    kept = await persona.runner.runtime.db.fetchrow(
        "SELECT notes, interaction_count FROM relationships "
        "WHERE client_id = $1 AND persona_id = $2 AND user_id = 'bob'",
        tenant_a,
        ada,
    )
    assert (list(kept["notes"]), kept["interaction_count"]) == (["Prefers short answers."], 1)
