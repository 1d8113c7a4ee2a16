"""A turn's reply is embedded after RecordTurn returns (late_embedding.py): by the service's
worker, or by a sweep when that could not happen. Real reasoning service, real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable

import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_core.grpc_client import PeerChannels
from edrs_memory import late_embedding
from edrs_memory.embeddings import GrpcEmbedder
from edrs_memory.late_embedding import LateEmbeddings
from edrs_memory.store import NewEpisode
from edrs_proto.memory.v1 import memory_pb2
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc

pytestmark = pytest.mark.integration

TENANT = "tenant-late"
METADATA = testing.tenant_metadata(TENANT)


async def vectors(db, ids: list[str]) -> dict[str, list[float] | None]:
    """Each episode's stored embedding (None while it has none), by id."""
    rows = await db.fetch(
        "SELECT id::text AS id, embedding::text AS embedding FROM episodes "
        "WHERE client_id = $1 AND id::text = ANY($2::text[])",
        TENANT,
        ids,
    )
    return {
        r["id"]: None
        if r["embedding"] is None
        else [float(x) for x in r["embedding"][1:-1].split(",")]
        for r in rows
    }


async def embedded_soon(db, ids: list[str]) -> dict[str, list[float]]:
    async def all_embedded() -> bool:
        found = await vectors(db, ids)
        return len(found) == len(ids) and all(v is not None for v in found.values())

    await testing.wait_until(all_embedded, 60, "the episodes' embeddings")
    return {k: v for k, v in (await vectors(db, ids)).items() if v is not None}


def episode(persona_id: str, text: str) -> NewEpisode:
    return NewEpisode(persona_id=uuid.UUID(persona_id), user_id="u", text=text, importance=0.4)


async def sweep(late: LateEmbeddings) -> int:
    """A sweep's count; another sweep (the service's own, at start-up) may hold the lock for a
    moment."""
    deadline = asyncio.get_running_loop().time() + 60
    while (done := await late.sweep()) is None:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    return done


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_a_turns_reply_is_embedded_after_the_call_then_recalled_by_meaning(
    stub, memory, persona_id
) -> None:
    db = memory.runner.runtime.db
    reply = "The quarterly budget review moved to Thursday afternoon."
    recorded = await stub.RecordTurn(
        memory_pb2.RecordTurnRequest(
            persona_id=persona_id,
            user_id="u",
            conversation_id="c1",
            user_text="Did anything change this week?",
            reply_text=reply,
            trace_id="trace-1",
        ),
        metadata=METADATA,
    )
    user_episode, reply_episode = recorded.episodes
    assert (user_episode.role, reply_episode.role) == ("user", "assistant")
    # The user's message has its vector when the call returns.
    assert (await vectors(db, [user_episode.id]))[user_episode.id] is not None
    stored = await embedded_soon(db, [reply_episode.id])

    embedder = memory.servicer("MemoryService").embedder
    [expected] = await embedder.embed([reply])
    assert cosine(stored[reply_episode.id], expected) == pytest.approx(1.0, abs=1e-5)
    recalled = await stub.Recall(
        memory_pb2.RecallRequest(
            persona_id=persona_id, user_id="u", query="when is the budget review?", limit=2
        ),
        metadata=METADATA,
    )
    best = recalled.memories[0]
    assert best.memory.id == reply_episode.id
    assert best.relevance > 0.3


async def test_episodes_the_worker_could_not_embed_are_embedded_by_the_next_sweep(
    memory, store, persona_id, caplog
) -> None:
    """The reasoning service unreachable: handed-over episodes stay without a vector, logged,
    and a sweep embeds them (and any other unembedded row) once it answers again."""
    db = memory.runner.runtime.db
    texts = ["Ships the release on Monday.", "Prefers written status updates."]
    async with store.transaction() as conn:
        episodes = await store.add_episodes(
            conn,
            TENANT,
            [(episode(persona_id, t), None) for t in texts],
        )
    ids = [str(e.id) for e in episodes]

    # Nothing listens on this port: every Embed call fails UNAVAILABLE.
    peers = PeerChannels("memory", {"reasoning": f"127.0.0.1:{free_port()}"}, timeout=2.0)
    try:
        down = GrpcEmbedder(peers.stub(reasoning_pb2_grpc.ReasoningServiceStub), 384)
        late = LateEmbeddings(db, down, interval=3_600.0)
        caplog.set_level(logging.DEBUG, logger="edrs.memory.late_embedding")
        worker = asyncio.create_task(late.run())

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "could not embed" in r.getMessage()]

        def failed(times: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return len(failures()) == times

            return check

        try:
            late.add(TENANT, episodes[:1])
            await testing.wait_until(failed(1), 60, "the first failure")
            late.add(TENANT, episodes[1:])
            await testing.wait_until(failed(2), 60, "the second failure")
        finally:
            worker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await worker
    finally:
        await peers.close()
    first, second = failures()
    # One warning for the outage, naming the peer that failed; the next batch at debug level.
    assert (first.levelno, second.levelno) == (logging.WARNING, logging.DEBUG)
    assert "could not embed 1 stored episodes now" in first.getMessage()
    assert "reasoning" in first.getMessage()
    assert list((await vectors(db, ids)).values()) == [None, None]

    up = LateEmbeddings(db, memory.servicer("MemoryService").embedder, interval=3_600.0)
    assert await sweep(up) >= 2
    stored = await vectors(db, ids)
    expected = await memory.servicer("MemoryService").embedder.embed(texts)
    for episode_id, vector in zip(ids, expected, strict=True):
        assert cosine(stored[episode_id], vector) == pytest.approx(1.0, abs=1e-5)


async def test_a_sweep_embeds_the_oldest_first_up_to_its_limit_and_skips_while_another_sweeps(
    memory, store, persona_id
) -> None:
    db = memory.runner.runtime.db
    embedder = memory.servicer("MemoryService").embedder
    drain = LateEmbeddings(db, embedder, interval=3_600.0)
    while await sweep(drain):
        pass  # rows other tests left without a vector, so that only this test's remain
    episodes = []
    for n in range(5):
        async with store.transaction() as conn:  # one transaction each: five created_at values
            episodes += await store.add_episodes(
                conn,
                TENANT,
                [(episode(persona_id, f"Note number {n}."), None)],
            )
    ids = [str(e.id) for e in sorted(episodes, key=lambda e: (e.created_at, e.id))]

    # Batches of two, at most three a sweep: the keyset pages past the first batch.
    late = LateEmbeddings(db, embedder, interval=3_600.0, batch_size=2, sweep_limit=3)
    async with db.acquire() as other_replica:
        await other_replica.execute("SELECT pg_advisory_lock($1)", late_embedding._LOCK)
        try:
            assert await late.sweep() is None
        finally:
            await other_replica.execute("SELECT pg_advisory_unlock($1)", late_embedding._LOCK)
    assert [v is not None for v in (await vectors(db, ids)).values()] == [False] * 5

    assert await sweep(late) == 3
    found = await vectors(db, ids)
    assert [found[i] is not None for i in ids] == [True, True, True, False, False]
    assert await sweep(late) == 2
    assert all(v is not None for v in (await vectors(db, ids)).values())
    assert await sweep(late) == 0


async def test_a_full_queue_leaves_episodes_to_the_sweep_with_one_warning(
    memory, store, persona_id, caplog
) -> None:
    """No worker runs here: the queue only fills."""
    db = memory.runner.runtime.db
    async with store.transaction() as conn:
        episodes = await store.add_episodes(
            conn,
            TENANT,
            [(episode(persona_id, f"Item {n}."), None) for n in range(4)],
        )
    late = LateEmbeddings(
        db, memory.servicer("MemoryService").embedder, interval=3_600.0, max_pending=2
    )
    caplog.set_level(logging.WARNING, logger="edrs.memory.late_embedding")
    late.add(TENANT, episodes[:3])
    late.add(TENANT, episodes[3:])
    assert late._queue.qsize() == 2
    [warning] = caplog.records
    assert "2 stored episodes waiting for their embedding already" in warning.getMessage()
    # What was left out has no vector until a sweep embeds it.
    assert await sweep(late) >= 2
    assert all(v is not None for v in (await vectors(db, [str(e.id) for e in episodes])).values())
