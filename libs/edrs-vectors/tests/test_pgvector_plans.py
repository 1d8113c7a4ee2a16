"""pgvector searches are planned with their own values on every call (edrs_vectors.pgvector).

asyncpg prepares each statement once per connection. From a statement's sixth execution
PostgreSQL may keep a generic plan, made without the query vector or the LIMIT; for a vector search
that plan scans and sorts the whole table rather than walking the HNSW graph (at 100,000 vectors:
110-150 ms instead of about 1.4 ms). The adapter's connections force custom plans; this checks, with
PostgreSQL's own count of the plans each prepared statement got, that no search ran on a generic
one."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from edrs_core.db import ensure_database
from edrs_vectors import IndexSpec, VectorRecord
from edrs_vectors.pgvector import PgVectorIndex

pytestmark = pytest.mark.integration


async def test_every_search_gets_a_plan_made_for_its_own_vector_and_k(postgres_engine) -> None:
    dsn = str(postgres_engine.url("edrs_vectors_plans"))
    await ensure_database(dsn)
    # One connection, so every search below runs through the same prepared statement.
    index = await PgVectorIndex.connect(dsn, IndexSpec("plans", 32), max_size=1)
    try:
        await index.ensure()
        rng = np.random.default_rng(5)
        base = rng.normal(size=(200, 32))
        collections = [f"c{n}" for n in range(20)]
        for collection in collections:  # the same vectors in every collection, as copies are
            await index.upsert(
                [
                    VectorRecord(uuid.uuid4(), v.tolist(), "acme", collection, f"d{i // 10}")
                    for i, v in enumerate(base)
                ]
            )
        for query in rng.normal(size=(12, 32)):
            hits = await index.search("acme", collections, query.tolist(), 50)
            assert len(hits) == 50
        async with index._pool.acquire() as conn:
            plans = await conn.fetch(
                """SELECT generic_plans, custom_plans FROM pg_prepared_statements
                   WHERE statement LIKE '%ORDER BY embedding%'
                     AND statement NOT LIKE '%pg_prepared_statements%'"""
            )
    finally:
        await index.close()
    assert [(p["generic_plans"], p["custom_plans"]) for p in plans] == [(0, 12)]
