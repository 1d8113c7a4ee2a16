"""Deleting a user erases them across the fleet; exporting a user returns everything held.

Real persona, memory and reasoning services (the real models) behind a real gateway (conftest.py):
the deletion's event goes through the gateway's outbox and the real bus to the services'
consumers; the export reads the services through their ExportUser RPCs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import jwt
import pytest
from edrs_core.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPTIONS = {"maxTokens": 8, "temperature": 0.2}
PERSONA = {"name": "Ada", "role": "analyst", "instructions": "Answer in one short sentence."}


@pytest.fixture
async def client(conversation_fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=conversation_fleet.url, timeout=120) as http:
        yield http


def subject(headers: dict[str, str]) -> str:
    token = headers["Authorization"].removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


async def say(client, headers, persona_id: str, text: str) -> None:
    reply = await client.post(
        f"/api/v1/personas/{persona_id}/conversations/c1/messages",
        headers=headers,
        json={"text": text, "options": OPTIONS},
    )
    assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
async def talked(conversation_fleet) -> dict[str, object]:
    """A tenant where two members talked to the same persona, one turn each."""
    fleet = conversation_fleet
    tenant = await fleet.new_tenant()
    admin = await fleet.login(tenant, "admin")
    ann = await fleet.login(tenant, "member")
    bob = await fleet.login(tenant, "member")
    async with httpx.AsyncClient(base_url=fleet.url, timeout=120) as client:
        made = await client.post("/api/v1/personas", headers=admin, json=PERSONA)
        assert made.status_code == 201, made.text
        persona_id = made.json()["id"]
        await say(client, ann, persona_id, "My manager is Priya.")
        await say(client, bob, persona_id, "I live in Lisbon.")
    return {"tenant": tenant, "admin": admin, "ann": ann, "bob": bob, "persona": persona_id}


async def test_the_export_holds_the_users_relationship_facts_episodes_and_messages_only(
    client, talked
) -> None:
    ann, bob, persona_id = talked["ann"], talked["bob"], talked["persona"]
    reply = await client.get(f"/api/v1/users/{subject(ann)}/export", headers=talked["admin"])
    assert reply.status_code == 200, reply.text
    export = reply.json()
    assert export["user"]["id"] == subject(ann)
    [relationship] = export["relationships"]
    assert relationship["personaId"] == persona_id and relationship["interactionCount"] == 1
    [fact] = relationship["facts"]
    assert (fact["attribute"], fact["value"], fact["validTo"], fact["supersededBy"]) == (
        "manager",
        "Priya",
        None,
        None,
    )
    assert fact["validFrom"]
    assert [(e["role"], e["personaId"]) for e in export["episodes"]] == [
        ("user", persona_id),
        ("assistant", persona_id),
    ]
    assert export["episodes"][0]["text"] == "My manager is Priya."
    [conversation] = export["conversations"]
    assert conversation["id"] == "c1" and conversation["personaId"] == persona_id
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    assert conversation["messages"][0]["text"] == "My manager is Priya."
    assert [i["role"] for i in export["workingMemory"]] == ["user", "assistant"]
    assert any(e["action"] == "login" for e in export["auditEvents"])
    # Nothing of the other user, and no secret.
    text = json.dumps(export)
    assert "Lisbon" not in text and subject(bob) not in text
    assert "password" not in text.lower() and "secretHash" not in text
    # The same document for the user asking for themself.
    mine = await client.get(f"/api/v1/users/{subject(ann)}/export", headers=ann)
    assert mine.status_code == 200, mine.text
    assert mine.json()["episodes"] == export["episodes"]


async def test_only_admins_and_the_user_themself_may_export(
    client, talked, conversation_fleet
) -> None:
    ann, bob = talked["ann"], talked["bob"]
    other = await client.get(f"/api/v1/users/{subject(bob)}/export", headers=ann)
    assert other.status_code == 403, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    elsewhere = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
    foreign = await client.get(f"/api/v1/users/{subject(ann)}/export", headers=elsewhere)
    assert foreign.status_code == 404, foreign.text
    missing = await client.get(f"/api/v1/users/{uuid.uuid4()}/export", headers=talked["admin"])
    assert missing.status_code == 404
    anonymous = await client.get(f"/api/v1/users/{subject(ann)}/export")
    assert anonymous.status_code == 401


async def test_deleting_a_user_erases_them_in_every_service(
    client, conversation_fleet, postgres_engine
) -> None:
    fleet = conversation_fleet
    tenant = await fleet.new_tenant()
    admin = await fleet.login(tenant, "admin")
    ann = await fleet.login(tenant, "member")
    bob = await fleet.login(tenant, "member")
    ann_id, bob_id = subject(ann), subject(bob)
    made = await client.post("/api/v1/personas", headers=admin, json=PERSONA)
    persona_id = made.json()["id"]
    await say(client, ann, persona_id, "My manager is Priya.")
    await say(client, bob, persona_id, "I live in Lisbon.")

    deleted = await client.delete(f"/api/v1/users/{ann_id}", headers=admin)
    assert deleted.status_code == 204, deleted.text
    # Their token stops working at once.
    assert (await client.get("/api/v1/tenant", headers=ann)).status_code == 401

    # The gateway: no user row, no refresh token, the audit log no longer names them, and the
    # event that tells the fleet was written with the deletion.
    db = fleet.ctx.users.db
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", uuid.UUID(ann_id)) == 0
    assert (
        await db.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE subject_id = $1", uuid.UUID(ann_id)
        )
        == 0
    )
    named = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE tenant_id = $1 "
        "AND (actor LIKE '%' || $2 || '%' OR target LIKE '%' || $2 || '%')",
        tenant,
        ann_id,
    )
    assert named == 0
    deletion = await db.fetchrow(
        "SELECT actor, target, details FROM audit_events WHERE tenant_id = $1 "
        "AND action = 'user.deleted'",
        tenant,
    )
    event_id = json.loads(deletion["details"])["eventId"]
    assert deletion["target"] == "user:erased"
    event = await db.fetchrow(
        "SELECT event_type, client_id, body FROM edrs_outbox WHERE event_id = $1",
        uuid.UUID(event_id),
    )
    assert (event["event_type"], event["client_id"]) == ("gateway.user_deleted", str(tenant))
    assert json.loads(bytes(event["body"]))["payload"] == {"user_id": ann_id}

    # Memory and persona erase theirs on the event; Bob keeps his.
    memory = await asyncpg.connect(postgres_engine.url("test_gateway_conv_memory"))
    persona = await asyncpg.connect(postgres_engine.url("test_gateway_conv_persona"))
    try:

        async def held(user_id: str) -> int:
            total = 0
            for conn, tables in (
                (memory, ("episodes", "facts", "working_items")),
                (persona, ("relationships", "conversations", "messages")),
            ):
                for table in tables:
                    total += await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE client_id = $1 AND user_id = $2",
                        str(tenant),
                        user_id,
                    )
            return total

        async def erased() -> bool:
            return await held(ann_id) == 0

        await wait_until(erased, 60, "memory and persona to erase the deleted user")
        # 2 episodes, 1 fact, 2 working items; 1 relationship, 1 conversation, 2 messages.
        assert await held(bob_id) == 9
    finally:
        await memory.close()
        await persona.close()
    gone = await client.get(f"/api/v1/users/{ann_id}/export", headers=admin)
    assert gone.status_code == 404
