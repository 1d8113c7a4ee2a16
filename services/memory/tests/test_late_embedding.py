"""A turn's reply is embedded after RecordTurn returns (late_embedding.py): by the service's
worker, or by a sweep when that could not happen. Real reasoning service, real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid

import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_core.grpc_client import PeerChannels
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
            [
                (
                    NewEpisode(
                        persona_id=uuid.UUID(persona_id), user_id="u", text=t, importance=0.4
                    ),
                    None,
                )
                for t in texts
            ],
        )
    ids = [str(e.id) for e in episodes]

    # Nothing listens on this port: every Embed call fails UNAVAILABLE.
    peers = PeerChannels("memory", {"reasoning": f"127.0.0.1:{free_port()}"}, timeout=2.0)
    try:
        down = GrpcEmbedder(peers.stub(reasoning_pb2_grpc.ReasoningServiceStub), 384)
        late = LateEmbeddings(db, down, interval=3_600.0)
        caplog.set_level(logging.WARNING, logger="edrs.memory.late_embedding")
        worker = asyncio.create_task(late.run())
        try:
            late.add(TENANT, episodes)

            async def logged() -> bool:
                return "could not embed 2 stored episodes now" in caplog.text

            await testing.wait_until(logged, 60, "the worker's warning")
        finally:
            worker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await worker
    finally:
        await peers.close()
    assert "reasoning" in caplog.text  # the warning names the peer that failed
    assert list((await vectors(db, ids)).values()) == [None, None]

    up = LateEmbeddings(db, memory.servicer("MemoryService").embedder, interval=3_600.0)
    # Another sweep (the service's own, at start-up) may hold the lock for a moment.
    deadline = asyncio.get_running_loop().time() + 60
    while (done := await up.sweep()) is None:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    assert done >= 2
    stored = await vectors(db, ids)
    expected = await memory.servicer("MemoryService").embedder.embed(texts)
    for episode_id, vector in zip(ids, expected, strict=True):
        assert cosine(stored[episode_id], vector) == pytest.approx(1.0, abs=1e-5)
