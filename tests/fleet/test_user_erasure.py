"""A user's data across the fleet `make run` starts: exported as one document, and erased from
every service when the user is deleted, even by a service that was down at that moment.

Checked where the data lives: each service's own database, and memory's Redis.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from edrs_core.testing import wait_until
from redis.asyncio import Redis

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

# One short turn each: a turn costs seconds of the real model on CPU.
OPTIONS = {"maxTokens": 8, "temperature": 0.2}
PASSWORD = "correct horse battery staple"
MEMORY_TABLES = ("episodes", "facts", "working_items")
PERSONA_TABLES = ("relationships", "conversations", "messages")


@pytest.fixture
async def api(fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.gateway_url, timeout=180) as client:
        yield client


async def login(api: httpx.AsyncClient, tenant_id: str, email: str) -> dict[str, str]:
    reply = await api.post(
        "/api/v1/auth/token",
        json={"grantType": "password", "tenantId": tenant_id, "email": email,
              "password": PASSWORD},
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['accessToken']}"}


async def new_tenant(fleet, api: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A tenant and its first admin, made with `edrs admin`; the admin's headers."""
    made = fleet.edrs_in_fleet(
        "admin", "create-tenant", f"Erasure {secrets.token_hex(3)}",
        "--admin-email", "admin@erasure.example", "--password-stdin", input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    tenant_id = re.search(r"^id: (\S+)$", made.stdout, re.MULTILINE)[1]  # type: ignore[index]
    return tenant_id, await login(api, tenant_id, "admin@erasure.example")


async def new_member(api, tenant_id: str, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    email = f"member-{uuid.uuid4().hex[:8]}@erasure.example"
    made = await api.post(
        "/api/v1/users", headers=admin, json={"email": email, "password": PASSWORD}
    )
    assert made.status_code == 201, made.text
    return made.json()["id"], await login(api, tenant_id, email)


async def new_persona(api, admin: dict[str, str], name: str) -> str:
    made = await api.post(
        "/api/v1/personas",
        headers=admin,
        json={"name": name, "role": "assistant", "instructions": "Answer in a few words."},
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def say(api, headers: dict[str, str], persona_id: str, text: str) -> None:
    reply = await api.post(
        f"/api/v1/personas/{persona_id}/conversations/c1/messages",
        headers=headers,
        json={"text": text, "options": OPTIONS},
    )
    assert reply.status_code == 200, reply.text


async def rows(url: str, tables: tuple[str, ...], tenant_id: str, user_id: str) -> dict[str, int]:
    """What a service's own database holds about one user, by table."""
    conn = await asyncpg.connect(url)
    try:
        return {
            table: await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE client_id = $1 AND user_id = $2",
                tenant_id,
                user_id,
            )
            for table in tables
        }
    finally:
        await conn.close()


async def working_memory_keys(fleet, tenant_id: str, user_id: str) -> int:
    redis = Redis.from_url(fleet.redis_url("memory"))
    try:
        keys = [k async for k in redis.scan_iter(match=f"edrs:memory:wm:{{{tenant_id}|*")]
    finally:
        await redis.aclose()
    return sum(f"|{user_id}|" in k.decode() for k in keys)


async def test_a_users_export_then_erasure_across_the_fleet_even_with_memory_down(
    fleet, api
) -> None:
    tenant_id, admin = await new_tenant(fleet, api)
    ann_id, ann = await new_member(api, tenant_id, admin)
    bob_id, bob = await new_member(api, tenant_id, admin)
    ada, bea = await new_persona(api, admin, "Ada"), await new_persona(api, admin, "Bea")
    await say(api, ann, ada, "My manager is Priya.")
    await say(api, ann, bea, "I live in Lisbon.")
    await say(api, bob, ada, "I work at Initech.")

    # The export: Ann's relationships, facts, episodes and messages with both personas, and
    # nothing of Bob's, who talked to the same persona.
    exported = await api.get(f"/api/v1/users/{ann_id}/export", headers=admin)
    assert exported.status_code == 200, exported.text
    export = exported.json()
    facts = {
        r["personaId"]: [(f["attribute"], f["value"]) for f in r["facts"]]
        for r in export["relationships"]
    }
    assert facts == {ada: [("manager", "Priya")], bea: [("location", "Lisbon")]}
    assert all(r["interactionCount"] == 1 for r in export["relationships"])
    assert sorted(e["text"] for e in export["episodes"] if e["role"] == "user") == [
        "I live in Lisbon.",
        "My manager is Priya.",
    ]
    assert sorted(
        (c["personaId"], [m["role"] for m in c["messages"]]) for c in export["conversations"]
    ) == sorted([(ada, ["user", "assistant"]), (bea, ["user", "assistant"])])
    text = json.dumps(export)
    assert "Initech" not in text and bob_id not in text

    memory_db, persona_db = fleet.database_url("memory"), fleet.database_url("persona")
    assert await rows(memory_db, MEMORY_TABLES, tenant_id, ann_id) == {
        "episodes": 4,
        "facts": 2,
        "working_items": 4,
    }
    assert await working_memory_keys(fleet, tenant_id, ann_id) == 8

    with fleet.service_stopped("memory") as memory:
        # An export needs every part: with memory down it fails as a problem, never half done.
        partial = await api.get(f"/api/v1/users/{bob_id}/export", headers=admin)
        assert partial.status_code == 503, partial.text
        assert partial.headers["content-type"].startswith("application/problem+json")
        assert partial.json()["code"] == "upstream_unavailable"
        deleted = await api.delete(f"/api/v1/users/{ann_id}", headers=admin)
        assert deleted.status_code == 204, deleted.text

        async def persona_erased() -> bool:
            held = await rows(persona_db, PERSONA_TABLES, tenant_id, ann_id)
            return not any(held.values())

        await wait_until(persona_erased, 60, "persona to erase the deleted user")
        # Memory was down: everything it holds is still there, the event waits in the bus.
        assert await rows(memory_db, MEMORY_TABLES, tenant_id, ann_id) == {
            "episodes": 4,
            "facts": 2,
            "working_items": 4,
        }
        memory.start()

    async def memory_erased() -> bool:
        held = await rows(memory_db, MEMORY_TABLES, tenant_id, ann_id)
        return not any(held.values()) and not await working_memory_keys(fleet, tenant_id, ann_id)

    await wait_until(memory_erased, 90, "memory, back up, to erase the deleted user")

    # The gateway holds nothing that names her: no user, no refresh token, no audit entry.
    gateway = await asyncpg.connect(fleet.database_url("gateway"))
    try:
        assert (
            await gateway.fetchval("SELECT count(*) FROM users WHERE id = $1", uuid.UUID(ann_id))
            == 0
        )
        assert (
            await gateway.fetchval(
                "SELECT count(*) FROM refresh_tokens WHERE subject_id = $1", uuid.UUID(ann_id)
            )
            == 0
        )
        named = await gateway.fetchval(
            "SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND "
            "(actor LIKE '%' || $2 || '%' OR target LIKE '%' || $2 || '%' "
            " OR details::text LIKE '%' || $2 || '%')",
            uuid.UUID(tenant_id),
            ann_id,
        )
        assert named == 0
    finally:
        await gateway.close()
    assert (await api.get(f"/api/v1/users/{ann_id}/export", headers=admin)).status_code == 404

    # Bob, who talked to the same persona, keeps everything.
    assert await rows(memory_db, MEMORY_TABLES, tenant_id, bob_id) == {
        "episodes": 2,
        "facts": 1,
        "working_items": 2,
    }
    assert await rows(persona_db, PERSONA_TABLES, tenant_id, bob_id) == {
        "relationships": 1,
        "conversations": 1,
        "messages": 2,
    }
    assert await working_memory_keys(fleet, tenant_id, bob_id) == 4

    # And memory, restarted, serves again: the gateway's channel to it reconnects within its
    # capped backoff (5 s), which may not have run out when the erasure above was seen.
    async def recalls() -> bool:
        recalled = await api.get(f"/api/v1/personas/{ada}/memories", headers=bob)
        assert recalled.status_code in (200, 503), recalled.text
        return recalled.status_code == 200

    await wait_until(recalls, 60, "the gateway to reach memory again")
    recalled = await api.get(f"/api/v1/personas/{ada}/memories", headers=bob)
    assert recalled.status_code == 200, recalled.text
