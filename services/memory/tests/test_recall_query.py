"""Recall's store query runs with the settings every connection of memory's pool starts with
(`session_settings`): pgvector's iterative HNSW scan and a plan made for each call's values.

They used to be set per call, in a transaction with three `SET LOCAL`s; now they come in each
connection's startup packet, so these tests check they arrive and still do their work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import pytest
from edrs_core import testing
from edrs_core.events import ServiceEvents
from edrs_memory.embeddings import vector_literal
from edrs_memory.store import Scope
from edrs_memory.store.postgres import PostgresMemoryStore, session_settings

pytestmark = pytest.mark.integration

RECALL_SETTINGS = ("hnsw.iterative_scan", "hnsw.ef_search", "plan_cache_mode")


def database_url(memory: testing.RunningService) -> str:
    assert memory.runner.runtime is not None
    return memory.runner.runtime.settings.database_url


@asynccontextmanager
async def one_connection_store(url: str, settings: dict[str, str]) -> AsyncIterator[Any]:
    """A store on a pool of one connection started with `settings`: every call below runs on that
    connection, so its prepared statements and their plan counts are the ones it used."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, server_settings=settings)
    try:
        yield PostgresMemoryStore(pool, ServiceEvents("memory")), pool
    finally:
        await pool.close()


async def test_every_connection_of_the_service_starts_with_the_recall_settings(
    memory: testing.RunningService,
) -> None:
    assert memory.runner.runtime is not None
    db = memory.runner.runtime.db
    async with db.acquire() as first, db.acquire() as second:
        shown = [
            {name: await c.fetchval(f"SHOW {name}") for name in RECALL_SETTINGS}
            for c in (first, second)
        ]
    # The service's default of 50 candidates: ef_search 50, above pgvector's own 40.
    assert shown == [session_settings(50), session_settings(50)]
    assert session_settings(10)["hnsw.ef_search"] == "40"


async def test_connections_without_the_settings_are_named_with_what_they_have(
    memory: testing.RunningService,
) -> None:
    """What the service checks at start-up, where a pooler could drop startup parameters."""
    url = database_url(memory)
    expected = session_settings(50)
    async with one_connection_store(url, expected) as (store, _):
        assert await store.settings_missing(expected) == {}
    async with one_connection_store(url, {"hnsw.ef_search": "50"}) as (store, _):
        # pgvector's own setting is unknown to a session that has not used the extension yet.
        assert await store.settings_missing(expected) == {
            "hnsw.iterative_scan": None,
            "plan_cache_mode": "auto",
        }


@dataclass(frozen=True)
class Seeded:
    url: str
    tenant: str
    persona: uuid.UUID
    query: np.ndarray


@pytest.fixture
async def seeded(memory: testing.RunningService) -> Seeded:
    """2,000 episodes of one user of a new tenant, all with random vectors; all but 60 in one
    conversation ('big'); and a random query vector."""
    url = database_url(memory)
    tenant, persona = f"plans-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """INSERT INTO episodes (id, client_id, persona_id, user_id, conversation_id, kind,
                   role, text, importance, embedding, created_at)
               SELECT gen_random_uuid(), $1, $2, 'u',
                      CASE WHEN g <= 60 THEN 'small-' || g ELSE 'big' END, 'message', 'user',
                      'episode ' || g, 0.5,
                      ARRAY(SELECT random() - 0.5 FROM generate_series(1, 384) WHERE g > 0)::vector,
                      now() - make_interval(secs => g)
               FROM generate_series(1, 2000) g""",
            tenant,
            persona,
        )
    finally:
        await conn.close()
    return Seeded(url, tenant, persona, np.random.default_rng(3).normal(size=384))


async def test_a_filtered_walk_of_the_vector_index_still_returns_the_nearest_asked_for(
    seeded: Seeded,
) -> None:
    url, tenant, persona, query = seeded.url, seeded.tenant, seeded.persona, seeded.query
    scope = Scope(client_id=tenant, persona_id=persona, user_id="u")
    # No sort allowed: the planner must take the nearest rows from the HNSW index rather than
    # compute every distance in the scope, which would find 50 whatever the scan settings.
    index_only = {"enable_sort": "off"}

    async def nearest(settings: dict[str, str]) -> list[Any]:
        async with one_connection_store(url, {**settings, **index_only}) as (store, _):
            return await store.recall_candidates(
                scope, query.tolist(), exclude_conversation_id="big", nearest=50, recent=0
            )

    found = await nearest(session_settings(50))
    assert len(found) == 50
    assert all(c.episode.conversation_id.startswith("small-") for c in found)
    # A call asking for more than the pool's ef_search (a recall's `limit` above the configured
    # candidates): the iterative scan walks on until it has them, here all 60 eligible.
    async with one_connection_store(url, {**session_settings(10), **index_only}) as (store, _):
        everything = await store.recall_candidates(
            scope, query.tolist(), exclude_conversation_id="big", nearest=60, recent=0
        )
    assert len(everything) == 60
    # The same walk without the iterative scan stops at its first 50 candidates, of which only
    # the few in the scope and outside the excluded conversation pass: what the setting prevents.
    stopped = await nearest({**session_settings(50), "hnsw.iterative_scan": "off"})
    assert len(stopped) < 50
    # And the walk found the true nearest: the exact 50 of the 60 eligible, computed here.
    conn = await asyncpg.connect(url)
    try:
        exact = await conn.fetch(
            """SELECT id FROM episodes
               WHERE client_id = $1 AND persona_id = $2 AND conversation_id <> 'big'
               ORDER BY (embedding <=> $3::text::vector) + 0 LIMIT 50""",
            tenant,
            persona,
            vector_literal(query.tolist()),
        )
    finally:
        await conn.close()
    overlap = {c.episode.id for c in found} & {r["id"] for r in exact}
    assert len(overlap) >= 45


async def test_every_recall_gets_a_plan_made_for_its_own_scope_and_vector(
    seeded: Seeded,
) -> None:
    tenant, persona = seeded.tenant, seeded.persona
    async with one_connection_store(seeded.url, session_settings(50)) as (store, pool):
        for user in ["u", "nobody", "u", "u", "nobody", "u", "u", "u", "nobody", "u"]:
            await store.recall_candidates(
                Scope(client_id=tenant, persona_id=persona, user_id=user),
                seeded.query.tolist(),
                exclude_conversation_id="big",
                nearest=50,
                recent=50,
            )
        plans = await pool.fetch(
            """SELECT generic_plans, custom_plans FROM pg_prepared_statements
               WHERE statement LIKE '%UNION ALL%' AND statement NOT LIKE '%pg_prepared%'"""
        )
    # PostgreSQL may keep a generic plan from a statement's sixth run on, one plan for every
    # scope size; ten runs, each planned for its own values.
    assert [(p["generic_plans"], p["custom_plans"]) for p in plans] == [(0, 10)]
