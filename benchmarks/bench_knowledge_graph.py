"""Graph expansion's cost: the knowledge service's graph ranking (`graph_passages`, the queries
hybrid search runs beside its vector and keyword rankings) on a synthetic tenant graph in
embedded PostgreSQL, with the service's own migrations.

Prints p50/p95 for a query naming no known entity, one naming an ordinary entity and one naming
the graph's largest hub. `--passages`, `--entities`, `--relations` size the graph (mentions are
three per relation); a few entities are hubs (Pareto-distributed), the rest uniform.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from _harness import POSTGRES_SETTINGS, percentiles
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_knowledge.graph import query_keys
from edrs_knowledge.store.postgres import PostgresKnowledgeStore

MIGRATIONS = Path(__file__).parent.parent / "services/knowledge/src/edrs_knowledge/migrations"
TENANT = "bench-tenant"
RUNS = 100


async def fill(
    db: Any, passages: int, entities: int, relations: int
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    rng = random.Random(7)
    collection = uuid.uuid4()
    await db.execute(
        "INSERT INTO collections (id, client_id, name) VALUES ($1, $2, 'bench')", collection, TENANT
    )
    documents = [uuid.uuid4() for _ in range(max(1, passages // 10))]
    await db.copy_records_to_table(
        "documents",
        records=[(d, TENANT, collection, "document") for d in documents],
        columns=["id", "client_id", "collection_id", "title"],
    )
    chunks = [uuid.uuid4() for _ in range(passages)]
    await db.copy_records_to_table(
        "chunks",
        records=[
            (c, TENANT, collection, documents[i // 10], 1, i % 10, "text", 0, 4, 1, [], None, "h")
            for i, c in enumerate(chunks)
        ],
        columns=[
            "id", "client_id", "collection_id", "document_id", "version", "chunk_index", "text",
            "start_offset", "end_offset", "token_count", "heading_path", "page", "content_hash",
        ],
    )  # fmt: skip
    ids = [uuid.uuid4() for _ in range(entities)]
    await db.copy_records_to_table(
        "entities",
        records=[
            (e, TENANT, f"Entity {i}", f"entity {i}", "organization") for i, e in enumerate(ids)
        ],
        columns=["id", "client_id", "name", "normalized_name", "type"],
    )

    def pick() -> uuid.UUID:
        if rng.random() < 0.3:  # hubs: entity 0 first, then 1, ...
            return ids[min(int(rng.paretovariate(1.2)) - 1, entities - 1)]
        return rng.choice(ids)

    mentions = {(pick(), rng.choice(chunks)) for _ in range(relations * 3)}
    await db.copy_records_to_table(
        "entity_mentions",
        records=[(TENANT, e, c, collection) for e, c in mentions],
        columns=["client_id", "entity_id", "chunk_id", "collection_id"],
    )
    facts: dict[tuple[uuid.UUID, uuid.UUID], uuid.UUID] = {}
    while len(facts) < relations:
        subject, obj = pick(), rng.choice(ids)
        if subject != obj:
            facts[(subject, obj)] = uuid.uuid4()
    await db.copy_records_to_table(
        "relations",
        records=[(r, TENANT, s, "acquired", o) for (s, o), r in facts.items()],
        columns=["id", "client_id", "subject_id", "predicate", "object_id"],
    )
    await db.copy_records_to_table(
        "relation_sources",
        records=[(r, rng.choice(chunks)) for r in facts.values()],
        columns=["relation_id", "chunk_id"],
    )
    await db.execute("ANALYZE")
    return collection, ids


async def run(root: Path, passages: int, entities: int, relations: int) -> None:
    with EmbeddedPostgres(root / "postgres", settings=POSTGRES_SETTINGS) as postgres:
        admin = await asyncpg.connect(postgres.url())
        await admin.execute("CREATE DATABASE bench_graph")
        await admin.close()
        db = await asyncpg.create_pool(postgres.url("bench_graph"))
        for migration in sorted(MIGRATIONS.glob("*.sql")):
            await db.execute(migration.read_text())
        collection, ids = await fill(db, passages, entities, relations)
        store = PostgresKnowledgeStore(db, None)  # type: ignore[arg-type]  (no events: reads only)
        hub = await db.fetchval(
            "SELECT count(*) FROM relations WHERE subject_id = $1 OR object_id = $1", ids[0]
        )
        print(
            f"graph ranking: {passages:,} passages, {entities:,} entities, {relations:,} "
            f"relations, {relations * 3:,} mentions (before deduplication); {RUNS} runs each"
        )
        for label, query in [
            ("no known entity", "how are travel expenses booked through the portal?"),
            ("an ordinary entity", f"what did Entity {entities // 2} acquire?"),
            (f"the largest hub ({hub:,} relations)", "who acquired Entity 0?"),
        ]:
            keys = query_keys(query)
            samples = []
            for _ in range(RUNS):
                start = time.perf_counter()
                hits = await store.graph_passages(TENANT, keys, [collection], None, 50)
                samples.append(time.perf_counter() - start)
            cut = percentiles(samples)
            print(
                f"  {label:<36} p50 {cut['p50']:6.2f} ms  p95 {cut['p95']:6.2f} ms  "
                f"({len(hits)} passages)"
            )
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--relations", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as folder:
        asyncio.run(run(Path(folder), args.passages, args.entities, args.relations))


if __name__ == "__main__":
    main()
