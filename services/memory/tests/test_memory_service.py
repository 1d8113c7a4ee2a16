"""The memory service over real gRPC, against embedded PostgreSQL, Redis and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_memory.app import definition
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc

pytestmark = pytest.mark.integration

TENANT_A = [("x-edrs-client-id", "tenant-a")]
TENANT_B = [("x-edrs-client-id", "tenant-b")]


@pytest.fixture(scope="module")
async def memory(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_memory", redis_db=2
    )
    async with testing.running_service(definition, **settings) as svc:
        yield svc


@pytest.fixture
def stub(memory: testing.RunningService) -> memory_pb2_grpc.MemoryServiceStub:
    return memory_pb2_grpc.MemoryServiceStub(memory.channel)


@pytest.fixture
def persona_id() -> str:
    """A fresh persona per test, so tests do not see each other's memories."""
    return str(uuid.uuid4())


async def remember(
    stub, persona_id: str, text: str, metadata=TENANT_A, **fields
) -> memory_pb2.Memory:
    fields.setdefault("user_id", "user-1")
    return await stub.Remember(
        memory_pb2.RememberRequest(persona_id=persona_id, text=text, **fields), metadata=metadata
    )


async def test_remember_returns_what_was_stored(stub, persona_id) -> None:
    stored = await remember(
        stub, persona_id, "  Prefers email over phone ", conversation_id="conv-9", importance=0.8
    )
    assert uuid.UUID(stored.id)
    assert stored.persona_id == persona_id
    assert stored.user_id == "user-1"
    assert stored.conversation_id == "conv-9"
    assert stored.text == "Prefers email over phone"
    assert stored.importance == 0.8
    assert stored.create_time.seconds > 0

    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, user_id="user-1"), metadata=TENANT_A
    )
    assert [m.memory for m in recalled.memories] == [stored]


async def test_importance_zero_means_the_default(stub, persona_id) -> None:
    stored = await remember(stub, persona_id, "Lives in Lisbon")
    assert stored.importance == 0.5


async def test_recall_ranks_the_relevant_memory_first_with_its_score_parts(
    stub, persona_id
) -> None:
    await remember(stub, persona_id, "Favourite colour is blue", importance=0.9)
    hiking = await remember(stub, persona_id, "Loves hiking in the Alps every summer")
    await remember(stub, persona_id, "Works as a nurse on night shifts")

    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, user_id="user-1", query="hiking trips"),
        metadata=TENANT_A,
    )
    assert len(recalled.memories) == 3
    best = recalled.memories[0]
    assert best.memory.id == hiking.id
    assert 0 < best.relevance < 1
    assert 0.99 < best.recency <= 1
    assert best.importance == 0.5
    assert best.score == pytest.approx(
        0.5 * best.relevance + 0.3 * best.recency + 0.2 * best.importance
    )
    assert [m.relevance for m in recalled.memories[1:]] == [0, 0]
    scores = [m.score for m in recalled.memories]
    assert scores == sorted(scores, reverse=True)


async def test_recall_without_query_ranks_by_importance_among_fresh_memories(
    stub, persona_id
) -> None:
    low = await remember(stub, persona_id, "Has a cat", importance=0.1)
    high = await remember(stub, persona_id, "Allergic to penicillin", importance=1.0)
    recalled = await stub.Recall(memory_pb2.RecallRequest(persona_id=persona_id), metadata=TENANT_A)
    assert [m.memory.id for m in recalled.memories] == [high.id, low.id]


async def test_recall_is_limited_to_the_persona_and_user(stub, persona_id) -> None:
    mine = await remember(stub, persona_id, "Plays chess", user_id="user-1")
    theirs = await remember(stub, persona_id, "Plays chess too", user_id="user-2")
    await remember(stub, str(uuid.uuid4()), "Plays chess for another persona")

    one_user = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, user_id="user-1", query="chess"),
        metadata=TENANT_A,
    )
    assert [m.memory.id for m in one_user.memories] == [mine.id]
    every_user = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, query="chess"), metadata=TENANT_A
    )
    assert {m.memory.id for m in every_user.memories} == {mine.id, theirs.id}


async def test_recall_returns_at_most_limit(stub, persona_id) -> None:
    for i in range(5):
        await remember(stub, persona_id, f"fact number {i}")
    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, limit=2), metadata=TENANT_A
    )
    assert len(recalled.memories) == 2


async def test_other_tenant_recalls_nothing(stub, persona_id) -> None:
    await remember(stub, persona_id, "Secret project codename Falcon")
    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, query="Falcon"), metadata=TENANT_B
    )
    assert list(recalled.memories) == []


PERSONA = str(uuid.UUID(int=1))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (memory_pb2.RememberRequest(user_id="u", text="t"), "persona_id is required"),
        (
            memory_pb2.RememberRequest(persona_id="nope", user_id="u", text="t"),
            "persona_id must be a UUID",
        ),
        (memory_pb2.RememberRequest(persona_id=PERSONA, text="t"), "user_id is required"),
        (memory_pb2.RememberRequest(persona_id=PERSONA, user_id="u", text=" "), "text is required"),
        (
            memory_pb2.RememberRequest(persona_id=PERSONA, user_id="u", text="x" * 20_001),
            "text is 20001 characters long",
        ),
        (
            memory_pb2.RememberRequest(persona_id=PERSONA, user_id="u", text="t", importance=1.5),
            "importance must be between 0.0 and 1.0",
        ),
        (
            memory_pb2.RememberRequest(persona_id=PERSONA, user_id="u", text="t", importance=-0.1),
            "importance must be between 0.0 and 1.0",
        ),
    ],
)
async def test_invalid_remember_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.Remember(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (memory_pb2.RecallRequest(query="x"), "persona_id is required"),
        (memory_pb2.RecallRequest(persona_id="42"), "persona_id must be a UUID"),
        (memory_pb2.RecallRequest(persona_id=PERSONA, limit=-1), "limit must not be negative"),
    ],
)
async def test_invalid_recall_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.Recall(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_call_without_tenant_is_refused(stub, persona_id) -> None:
    await testing.expect_refused_without_tenant(
        stub.Remember(memory_pb2.RememberRequest(persona_id=persona_id, user_id="u", text="t")),
        stub.Recall(memory_pb2.RecallRequest(persona_id=persona_id)),
    )


async def test_recall_with_only_stop_words_still_returns_memories(stub, persona_id) -> None:
    stored = await remember(stub, persona_id, "Drinks tea, not coffee")
    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, query="the and of"), metadata=TENANT_A
    )
    assert [(m.memory.id, m.relevance) for m in recalled.memories] == [(stored.id, 0)]
