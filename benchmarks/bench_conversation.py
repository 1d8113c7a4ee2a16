"""Conversation benchmark: turns through the gateway with the real models, and recall at scale.

Run `python benchmarks/bench_conversation.py`. It starts embedded PostgreSQL, Redis and NATS and
the reasoning, memory, persona and gateway services as processes, then measures:

- turns: `POST .../conversations/{id}/messages` one after another, each a full turn (auth, DLP,
  persona, recall, prompt, the model, storing the turn). The reply's own timings split a turn into
  generation (time in the model) and the fleet's overhead (everything else). Baseline, in the same
  run: the bare model call (`Reason` on the reasoning service) for the same prompt size. With
  `--knowledge` the persona has a knowledge collection (the knowledge service runs too), so each
  turn also searches it.
- recall: `Recall` on the memory service with 10,000 and then 100,000 stored episodes (vectors
  precomputed from real sentence embeddings), the query's `Embed` alone and the store's query
  alone. Baseline: the same query answered by an exact scan (no vector index).
  `--shared-buffers` sets PostgreSQL's cache (default 128MB, PostgreSQL's own).

It prints throughput, p50/p95/p99 and peak memory, and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
from _harness import (
    API,
    POSTGRES_SETTINGS,
    Service,
    dev_admin_headers,
    fleet_service,
    memory_service,
    peak_rss,
    percentiles,
    persona_and_gateway,
    service,
)
from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.engines.redis import EmbeddedRedis
from edrs_core.testing import tenant_metadata
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

MAX_TOKENS = 24


def line(name: str, samples: list[float], extra: str = "") -> dict[str, float]:
    p = percentiles(samples)
    print(
        f"  {name:<44} p50 {p['p50']:8.1f} ms   p95 {p['p95']:8.1f} ms   "
        f"p99 {p['p99']:8.1f} ms   {extra}"
    )
    return p


# --- turns -----------------------------------------------------------------------------------


async def bare_generation(
    reasoning: Service, tenant: str, prompts: list[list[dict[str, str]]]
) -> list[float]:
    """The model alone: one `Reason` call per prompt, with the turns' options."""
    took: list[float] = []
    async with grpc.aio.insecure_channel(reasoning.grpc_address) as channel:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(channel)
        for prompt in prompts:
            request = reasoning_pb2.ReasonRequest(
                messages=[
                    reasoning_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in prompt
                ],
                options=reasoning_pb2.GenerationOptions(max_tokens=MAX_TOKENS),
            )
            started = time.perf_counter()
            async for _reply in stub.Reason(request, metadata=tenant_metadata(tenant), timeout=120):
                pass
            took.append(time.perf_counter() - started)
    return took


# What the knowledge collection of `--knowledge` holds: a few short handbook pages.
HANDBOOK = {
    "Planning": "# Planning\n\nThe team plans the week on Monday mornings. Tomorrow's plan comes "
    "from the open tasks, the calendar and what the manager asked for.",
    "Managers": "# Managers\n\nPriya leads the platform team at Acme. Her reports send a short "
    "weekly update by email every Friday.",
    "Offsite": "# Offsite\n\nThe offsite is in Lisbon in the spring. Notes to the team about it "
    "go out two weeks before, with the agenda and the travel budget.",
    "Writing": "# Writing\n\nAnswers use bullet points when a reader asks for them. Keep notes "
    "short: one screen, the decision first.",
    "Security": "# Security\n\nThe security audit runs every quarter. Access to production "
    "needs a ticket and the manager's approval.",
}


async def knowledge_collection(gateway: Service, headers: dict[str, str]) -> str:
    """A collection of the HANDBOOK pages, every one indexed; its name."""
    name = f"handbook-{uuid.uuid4().hex[:6]}"
    knowledge = f"{API}/knowledge"
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=headers, timeout=300) as api:
        made = await api.post(f"{knowledge}/collections", json={"name": name})
        if made.status_code != 201:
            raise SystemExit(f"could not create a collection: {made.status_code} {made.text}")
        documents = []
        for title, text in HANDBOOK.items():
            added = await api.post(
                f"{knowledge}/collections/{name}/documents", json={"title": title, "text": text}
            )
            if added.status_code != 202:
                raise SystemExit(f"could not add a document: {added.status_code} {added.text}")
            documents.append(added.json()["document"]["id"])
        deadline = time.monotonic() + 300
        for document in documents:
            while True:
                read = await api.get(f"{knowledge}/documents/{document}")
                if read.status_code != 200:
                    raise SystemExit(f"could not read a document: {read.status_code} {read.text}")
                state = read.json()["state"]
                if state == "indexed":
                    break
                if state == "failed" or time.monotonic() > deadline:
                    raise SystemExit(f"document {document} was not indexed: {state}")
                await asyncio.sleep(0.2)
    return name


async def turns(
    gateway: Service, headers: dict[str, str], count: int, collection: str | None = None
) -> dict[str, Any]:
    """`count` turns, one after another, in a few conversations of one persona (answering from
    `collection` when given)."""
    texts = [
        "I prefer bullet points in every answer.",
        "My manager is Priya and I work at Acme.",
        "What should we plan for tomorrow?",
        "Remind me what you know about my manager.",
        "Draft a short note to the team about the offsite.",
    ]
    stages = ("queue", "recall", "prompt", "generation", "store", "overhead")
    out: dict[str, Any] = {
        "latency": [],
        "client_overhead": [],
        "completion_tokens": [],
        "prompt_tokens": [],
        **{f"persona_{stage}": [] for stage in stages},
    }
    trace_ids: list[str] = []
    run = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=headers, timeout=300) as api:
        made = await api.post(
            f"{API}/personas",
            json={
                "name": "Bench",
                "role": "benchmark subject",
                "tone": "brisk",
                **({"knowledgeCollections": [collection]} if collection else {}),
            },
        )
        if made.status_code != 201:
            raise SystemExit(f"could not create a persona: {made.status_code} {made.text}")
        persona_id = made.json()["id"]
        conversations = [str(uuid.uuid4()) for _ in range(3)]
        for i in range(count):
            path = f"{API}/personas/{persona_id}/conversations/{conversations[i % 3]}/messages"
            # Every message differs, so no cache along the way sees a text twice across turns.
            text = f"{texts[i % len(texts)]} (turn {i} of run {run})"
            body = {"text": text, "options": {"maxTokens": MAX_TOKENS}}
            started = time.perf_counter()
            reply = await api.post(path, json=body)
            took = time.perf_counter() - started
            if reply.status_code != 200:
                raise SystemExit(f"turn failed: {reply.status_code} {reply.text}")
            turn = reply.json()
            timings = turn["timings"]
            out["latency"].append(took)
            for stage in stages:
                out[f"persona_{stage}"].append(timings[f"{stage}Ms"] / 1000)
            # The fleet's overhead as the client sees it: the whole request minus the model.
            out["client_overhead"].append(
                took - (timings["generationMs"] + timings["queueMs"]) / 1000
            )
            out["completion_tokens"].append(turn["usage"]["completionTokens"])
            out["prompt_tokens"].append(turn["usage"]["promptTokens"])
            trace_ids.append(turn["reply"]["traceId"])
        # The gateway's floor: an authenticated read that makes one gRPC call to persona.
        out["gateway_read"] = []
        for _ in range(50):
            started = time.perf_counter()
            await api.get(f"{API}/personas/{persona_id}")
            out["gateway_read"].append(time.perf_counter() - started)
        # The baseline replays the prompts the model read, in the same order: the model's own
        # prompt cache then helps it exactly as much as it helped the turns.
        out["prompts"] = []
        for trace_id in trace_ids:
            trace = await api.get(f"{API}/traces/{trace_id}")
            if trace.status_code != 200:
                raise SystemExit(
                    f"could not read trace {trace_id}: {trace.status_code} {trace.text}"
                )
            out["prompts"].append(trace.json()["messages"])
    return out


# --- recall ----------------------------------------------------------------------------------


def sentences(n: int, seed: int = 7) -> list[str]:
    """`n` varied, realistic things a user tells a persona."""
    rng = random.Random(seed)
    subjects = ["my manager", "the team", "our client", "my sister", "the board", "finance"]
    verbs = ["wants", "asked for", "prefers", "is worried about", "approved", "rejected"]
    objects = [
        "the quarterly report",
        "bullet points",
        "a shorter meeting",
        "the offsite in Lisbon",
        "weekly updates by email",
        "the new hiring plan",
        "a budget review",
        "the product launch date",
        "morning calls",
        "the security audit",
    ]
    when = ["today", "last week", "on Monday", "before the holidays", "next quarter", ""]
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(when)}".strip()
        for _ in range(n)
    ]


async def embed(reasoning: Service, tenant: str, texts: list[str]) -> list[list[float]]:
    vectors: list[list[float]] = []
    async with grpc.aio.insecure_channel(reasoning.grpc_address) as channel:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(channel)
        for i in range(0, len(texts), 256):
            reply = await stub.Embed(
                reasoning_pb2.EmbedRequest(texts=texts[i : i + 256]),
                metadata=tenant_metadata(tenant),
                timeout=120,
            )
            vectors.extend(list(e.values) for e in reply.embeddings)
    return vectors


async def bulk_load(
    url: str,
    tenant: str,
    persona_id: str,
    users: list[str],
    texts: list[str],
    vectors: list[list[float]],
    *,
    start: int,
    count: int,
) -> None:
    """`count` more episodes, spread over users and the last 80 days, then the vector index.

    The HNSW index is dropped for the load and built once afterwards: inserting into it row by row
    is the slow way to load (a 20,000-row COPY took 137 s with it in place)."""
    import csv
    import io
    from datetime import UTC, datetime, timedelta

    from edrs_memory.embeddings import vector_literal

    rng = random.Random(start)
    now = datetime.now(UTC)
    literals = [vector_literal(v) for v in vectors]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for i in range(start, start + count):
        k = rng.randrange(len(texts))
        writer.writerow(
            [
                uuid.uuid4(),
                tenant,
                persona_id,
                users[i % len(users)],
                f"conv-{i // 20}",
                "message",
                "user",
                texts[k],
                round(rng.random(), 3),
                "",
                literals[k],
                (now - timedelta(seconds=rng.randrange(80 * 86_400))).isoformat(),
            ]
        )
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP INDEX IF EXISTS episodes_embedding")
        started = time.perf_counter()
        await conn.copy_to_table(
            "episodes",
            source=io.BytesIO(buffer.getvalue().encode()),
            columns=[
                "id", "client_id", "persona_id", "user_id", "conversation_id", "kind", "role",
                "text", "importance", "trace_id", "embedding", "created_at",
            ],
            format="csv",
            force_not_null=["trace_id"],
        )  # fmt: skip
        copied = time.perf_counter() - started
        await conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        await conn.execute(
            "CREATE INDEX episodes_embedding ON episodes USING hnsw (embedding vector_cosine_ops)"
        )
        await conn.execute("ANALYZE episodes")
        print(
            f"  loaded {count:,} episodes in {copied:.1f} s; "
            f"HNSW index built in {time.perf_counter() - started:.1f} s"
        )
    finally:
        await conn.close()


async def store_query_latency(
    url: str,
    tenant: str,
    persona_id: str,
    users: list[str],
    query_vectors: list[list[float]],
) -> tuple[list[float], list[float]]:
    """The store's recall query alone (as the service runs it), and the exact-scan baseline."""
    from edrs_core.events import ServiceEvents
    from edrs_memory.embeddings import vector_literal
    from edrs_memory.store import Scope
    from edrs_memory.store.postgres import PostgresMemoryStore, session_settings

    # The service's own connection settings (its pool starts every connection with them).
    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=2, server_settings=session_settings(50)
    )
    try:
        store = PostgresMemoryStore(pool, ServiceEvents("bench"))

        async def service_query(scope: Scope, vector: list[float]) -> None:
            await store.recall_candidates(
                scope, vector, exclude_conversation_id="", nearest=50, recent=50
            )

        async def exact_query(scope: Scope, vector: list[float]) -> None:
            # `+ 0` hides the distance from the planner's index matching: an exact k-NN.
            await pool.fetch(
                """SELECT id, 1 - (embedding <=> $4::text::vector) FROM episodes
                   WHERE client_id = $1 AND persona_id = $2 AND user_id = $3
                   ORDER BY (embedding <=> $4::text::vector) + 0 LIMIT 50""",
                tenant,
                uuid.UUID(persona_id),
                scope.user_id,
                vector_literal(vector),
            )

        indexed: list[float] = []
        exact: list[float] = []
        for i, vector in enumerate(query_vectors):
            scope = Scope(
                client_id=tenant, persona_id=uuid.UUID(persona_id), user_id=users[i % len(users)]
            )
            # Both read the same user's rows, and the second finds them in PostgreSQL's cache
            # (at 100,000 episodes the table is larger than the default shared_buffers): each
            # goes first for half the queries.
            order = [(service_query, indexed), (exact_query, exact)]
            for query, took in order if i % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                await query(scope, vector)
                took.append(time.perf_counter() - started)
        return indexed, exact
    finally:
        await pool.close()


async def embed_latency(reasoning: Service, tenant: str, queries: list[str]) -> list[float]:
    """One `Embed` call per query, as `Recall` makes it: the part of a recall spent embedding."""
    took: list[float] = []
    async with grpc.aio.insecure_channel(reasoning.grpc_address) as channel:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(channel)
        metadata = tenant_metadata(tenant)
        for query in queries:
            started = time.perf_counter()
            await stub.Embed(
                reasoning_pb2.EmbedRequest(texts=[query]), metadata=metadata, timeout=30
            )
            took.append(time.perf_counter() - started)
    return took


async def recall_latency(
    memory: Service, tenant: str, persona_id: str, users: list[str], queries: list[str]
) -> list[float]:
    took: list[float] = []
    # One token for the run, as a caller's session reuses its token: the service verifies a
    # token once and then remembers it (edrs_core.identity.TokenVerifier).
    metadata = tenant_metadata(tenant)
    async with grpc.aio.insecure_channel(memory.grpc_address) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        for i, query in enumerate(queries):
            request = memory_pb2.RecallRequest(
                persona_id=persona_id, user_id=users[i % len(users)], query=query, limit=5
            )
            started = time.perf_counter()
            await stub.Recall(request, metadata=metadata, timeout=30)
            took.append(time.perf_counter() - started)
    return took


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30, help="measured turns")
    parser.add_argument("--queries", type=int, default=300, help="recall queries per size")
    parser.add_argument(
        "--sizes", default="10000,100000", help="episode counts to measure recall at"
    )
    parser.add_argument(
        "--parts", default="turns,recall", help="what to measure: turns, recall or both"
    )
    parser.add_argument(
        "--shared-buffers",
        default="128MB",
        help="PostgreSQL's shared_buffers (its own default, 128MB, holds less than the table at "
        "100,000 episodes; a server is sized to its working set)",
    )
    parser.add_argument(
        "--knowledge",
        action="store_true",
        help="turns of a persona with a knowledge collection (starts the knowledge service)",
    )
    args = parser.parse_args()
    print(f"PostgreSQL shared_buffers {args.shared_buffers}")

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-conv-")))
        postgres = stack.enter_context(
            EmbeddedPostgres(
                root / "postgres",
                settings={**POSTGRES_SETTINGS, "shared_buffers": args.shared_buffers},
            )
        )
        redis = stack.enter_context(EmbeddedRedis(root / "redis"))
        nats = stack.enter_context(EmbeddedNats(root / "nats"))
        common = {"BUS_URL": nats.url()}
        reasoning = stack.enter_context(
            service(
                "reasoning",
                {**common, "DATABASE_URL": postgres.url("bench_reasoning")},
                root,
                start_within=300,
            )
        )
        memory = memory_service(stack, root, nats.url(), postgres, redis, reasoning)
        pids = {s.name: s.process.pid for s in (memory, reasoning)}
        if "turns" in args.parts:
            run_turns(stack, args, root, common, postgres, redis, reasoning, memory, pids)
        if "recall" in args.parts:
            asyncio.run(recall_at_scale(reasoning, memory, postgres, args, pids))


def run_turns(
    stack: ExitStack,
    args: argparse.Namespace,
    root: Path,
    common: dict[str, str],
    postgres: Any,
    redis: Any,
    reasoning: Service,
    memory: Service,
    pids: dict[str, int],
) -> None:
    others: list[Service] = []
    if args.knowledge:
        knowledge = fleet_service(
            stack,
            "knowledge",
            root,
            {
                **common,
                "DATABASE_URL": postgres.url("bench_knowledge"),
                "KEYWORD_INDEX_DIR": str(root / "keywords"),
            },
            [reasoning],
        )
        others.append(knowledge)
        pids["knowledge"] = knowledge.process.pid
    persona, gateway = persona_and_gateway(
        stack, root, common["BUS_URL"], postgres, redis, reasoning, memory, others
    )
    pids.update({s.name: s.process.pid for s in (gateway, persona)})
    headers = asyncio.run(dev_admin_headers(gateway))
    collection = asyncio.run(knowledge_collection(gateway, headers)) if args.knowledge else None

    attached = f", a persona with a knowledge collection of {len(HANDBOOK)} documents"
    print(
        f"== turns: {args.turns} sequential turns, maxTokens {MAX_TOKENS}"
        + (attached if collection else "")
    )
    asyncio.run(turns(gateway, headers, 2, collection))  # warm-up: first calls load and cache
    with peak_rss(pids) as peak:
        started = time.perf_counter()
        measured = asyncio.run(turns(gateway, headers, args.turns, collection))
        elapsed = time.perf_counter() - started
    bare = asyncio.run(bare_generation(reasoning, "bench", measured["prompts"]))
    print(f"  throughput {args.turns / elapsed:.2f} turns/s (one conversation turn at a time)")
    print(
        f"  tokens per turn (median): prompt {statistics.median(measured['prompt_tokens'])}, "
        f"completion {statistics.median(measured['completion_tokens'])}"
    )
    turn = line("turn, client-measured", measured["latency"])
    line("  generation (in the model)", measured["persona_generation"])
    over = line("  fleet overhead, client-measured", measured["client_overhead"])
    line("    persona: overhead (total - generation - queue)", measured["persona_overhead"])
    recall = "recall (facts, memories, history" + (", knowledge)" if collection else ")")
    line(f"      {recall}", measured["persona_recall"])
    line("      prompt assembly", measured["persona_prompt"])
    line("      store the turn (memory, transcript)", measured["persona_store"])
    line("    persona: waiting for the conversation", measured["persona_queue"])
    line("  gateway GET persona, for scale (1 gRPC call)", measured["gateway_read"])
    gen_alone = line("bare model calls, same prompts (baseline)", bare)
    print(f"  turn / bare model call (p50): {turn['p50'] / gen_alone['p50']:.2f}")
    print(f"  fleet overhead p95 {over['p95']:.1f} ms (goal: under 30 ms)")
    print("  peak RSS: " + ", ".join(f"{n} {mib:.0f} MiB" for n, mib in peak.items()))


async def recall_at_scale(
    reasoning: Service, memory: Service, postgres: Any, args: argparse.Namespace, pids: Any
) -> None:
    tenant = "bench-recall"
    persona_id = str(uuid.uuid4())
    users = [f"user-{i}" for i in range(100)]
    distinct = sentences(2_000)
    vectors = await embed(reasoning, tenant, distinct)
    loaded = 0
    for size in (int(s) for s in args.sizes.split(",")):
        await bulk_load(
            postgres.url("bench_memory"), tenant, persona_id, users, distinct, vectors,
            start=loaded, count=size - loaded,
        )  # fmt: skip
        loaded = size
        print(f"== recall at {size:,} episodes ({len(users)} users, top 5)")
        # New queries at every size: memory caches recent embeddings, and a query it saw at the
        # previous size would skip the model.
        queries = [f"{q} ({size}/{i})" for i, q in enumerate(sentences(args.queries, seed=size))]
        with peak_rss({"memory": pids["memory"]}) as peak:
            await recall_latency(memory, tenant, persona_id, users, queries[:20])  # warm-up
            rpc = await recall_latency(memory, tenant, persona_id, users, queries)
        line("Recall RPC (embeds the query, then scores)", rpc)
        # The same texts: the reasoning service keeps no vectors (memory's cache is in memory).
        line("Embed RPC alone, one query", await embed_latency(reasoning, tenant, queries))
        query_vectors = await embed(reasoning, tenant, queries)
        indexed, exact = await store_query_latency(
            postgres.url("bench_memory"), tenant, persona_id, users, query_vectors
        )
        store = line("store query alone (vector index)", indexed)
        base = line("store query, exact scan (baseline)", exact)
        print(f"  exact / indexed (p50): {base['p50'] / store['p50']:.2f}")
        print(f"  Recall p95 {percentiles(rpc)['p95']:.1f} ms (goal: under 20 ms)")
        print(f"  memory peak RSS {peak['memory']:.0f} MiB")


if __name__ == "__main__":
    main()
