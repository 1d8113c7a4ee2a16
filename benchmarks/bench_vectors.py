"""Vector-index benchmark: the shared port's search latency on each engine that runs here.

pgvector (HNSW) on an embedded PostgreSQL, Milvus Lite and Qdrant's local mode, all through
`edrs_vectors`; 384-dimension random unit vectors (MiniLM's size), cosine, top 10. Two scopes:
a tenant that owns nearly all of the index, and a small tenant among them (the filter must be
inside the engine's query for that one to stay fast and complete). The bare engine query is the
baseline: pgvector's SQL without the port. Milvus Lite and Qdrant's local mode are there to run the
production clients' API, not to be fast: hundreds of milliseconds a search, so `make bench` runs
pgvector alone unless asked for them. Run
`python benchmarks/bench_vectors.py [--vectors N] [--engines pgvector,qdrant,milvus]`; it prints figures and asserts nothing about
time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import numpy as np
from edrs_core.db import ensure_database
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_vectors import IndexSpec, VectorIndex, VectorRecord, open_vector_index
from pgvector.asyncpg import register_vector

DIMENSION = 384
QUERIES = 100
BATCH = 1000
SMALL_TENANT = 500


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.normal(size=(count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def percentiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49]:7.2f} ms  p95 {cuts[94]:7.2f} ms"


async def load(index: VectorIndex, big: np.ndarray, small: np.ndarray) -> float:
    started = time.perf_counter()
    for tenant, vectors in (("big-tenant", big), ("small-tenant", small)):
        for first in range(0, len(vectors), BATCH):
            await index.upsert(
                [
                    VectorRecord(uuid.uuid4(), v, tenant, "handbook", f"doc-{first + i}")
                    for i, v in enumerate(vectors[first : first + BATCH])
                ]
            )
    return time.perf_counter() - started


async def timed_searches(index: VectorIndex, tenant: str, queries: np.ndarray) -> list[float]:
    latencies = []
    for query in queries:
        started = time.perf_counter()
        hits = await index.search(tenant, ["handbook"], query, 10)
        latencies.append((time.perf_counter() - started) * 1000)
        assert len(hits) == 10
    return latencies


async def bare_pgvector(dsn: str, table: str, queries: np.ndarray) -> list[float]:
    # The adapter's own HNSW settings, so the difference is the port's, not the search list's.
    conn = await asyncpg.connect(
        dsn,
        server_settings={
            "hnsw.iterative_scan": "relaxed_order",
            "hnsw.ef_search": "100",
            "plan_cache_mode": "force_custom_plan",
        },
    )
    await register_vector(conn)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        await conn.fetch(
            f"SELECT id FROM {table} WHERE tenant = $2 AND collection = 'handbook' "
            "ORDER BY embedding <=> $1 LIMIT 10",
            query,
            "big-tenant",
        )
        latencies.append((time.perf_counter() - started) * 1000)
    await conn.close()
    return latencies


async def run(count: int, only: set[str]) -> None:
    rng = np.random.default_rng(11)
    big = unit_vectors(rng, count)
    small = unit_vectors(rng, SMALL_TENANT)
    queries = unit_vectors(rng, QUERIES)
    spec = IndexSpec("bench", DIMENSION)
    print(f"{count:,} + {SMALL_TENANT} vectors of {DIMENSION} dimensions, cosine, top 10")
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedPostgres(
            Path(tmp) / "pg", settings={"fsync": "off", "synchronous_commit": "off"}
        ) as postgres,
    ):
        dsn = postgres.url("edrs_vectors_bench")
        await ensure_database(dsn)
        engines = [
            ("pgvector (HNSW)", "pgvector", dsn),
            ("Qdrant local mode", "qdrant", f"path:{Path(tmp) / 'qdrant'}"),
            ("Milvus Lite", "milvus", str(Path(tmp) / "milvus.db")),
        ]
        for name, engine, url in engines:
            if engine not in only:
                continue
            index = await open_vector_index(engine, url, spec)
            try:
                seconds = await load(index, big, small)
                print(f"{name:20} load {len(big) + len(small):,} in {seconds:6.1f} s")
                if engine == "pgvector":
                    # What autovacuum would do within a minute of a load this size: without
                    # statistics the planner reads the tenant's rows exactly instead of the HNSW.
                    conn = await asyncpg.connect(dsn)
                    await conn.execute("ANALYZE vectors_bench")
                    await conn.close()
                for tenant in ("big-tenant", "small-tenant"):
                    await timed_searches(index, tenant, queries[:10])  # warm caches
                    latencies = await timed_searches(index, tenant, queries)
                    print(f"{'':20} search {tenant:13} {percentiles(latencies)}")
                if engine == "pgvector":
                    bare = await bare_pgvector(dsn, "vectors_bench", queries)
                    print(f"{'':20} bare SQL, big-tenant   {percentiles(bare)}  (baseline)")
            finally:
                await index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--engines", default="pgvector", help="also: qdrant, milvus (slow)")
    args = parser.parse_args()
    asyncio.run(run(args.vectors, set(args.engines.split(","))))


if __name__ == "__main__":
    main()
