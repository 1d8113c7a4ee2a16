"""The memory service over real gRPC: episodes and recall with real embeddings, turns, facts,
tenant isolation, validation and events."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from edrs_core import testing
from edrs_events import connect_bus
from edrs_proto.memory.v1 import memory_pb2

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")


async def remember(stub, persona_id: str, text: str, metadata=TENANT_A, **fields):
    fields.setdefault("user_id", "user-1")
    return await stub.Remember(
        memory_pb2.RememberRequest(persona_id=persona_id, text=text, **fields), metadata=metadata
    )


async def turn(stub, persona_id: str, user_text: str, reply: str = "Noted.", **fields):
    fields.setdefault("user_id", "user-1")
    fields.setdefault("conversation_id", "conv-a")
    metadata = fields.pop("metadata", TENANT_A)
    return await stub.RecordTurn(
        memory_pb2.RecordTurnRequest(
            persona_id=persona_id, user_text=user_text, reply_text=reply, **fields
        ),
        metadata=metadata,
    )


async def facts(stub, persona_id: str, *, history: bool = False, metadata=TENANT_A, user="user-1"):
    reply = await stub.ListFacts(
        memory_pb2.ListFactsRequest(
            persona_id=persona_id, user_id=user, include_superseded=history
        ),
        metadata=metadata,
    )
    return list(reply.facts)


async def test_remember_returns_what_was_stored(stub, persona_id) -> None:
    stored = await remember(
        stub, persona_id, "  Prefers email over phone ", conversation_id="conv-9", importance=0.8
    )
    assert uuid.UUID(stored.id)
    assert (stored.persona_id, stored.user_id, stored.conversation_id) == (
        persona_id,
        "user-1",
        "conv-9",
    )
    assert (stored.text, stored.importance, stored.kind) == (
        "Prefers email over phone",
        0.8,
        "note",
    )
    assert stored.create_time.seconds > 0

    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, user_id="user-1"), metadata=TENANT_A
    )
    assert [m.memory for m in recalled.memories] == [stored]


async def test_importance_zero_means_the_default(stub, persona_id) -> None:
    assert (await remember(stub, persona_id, "Lives in Lisbon")).importance == 0.5


async def test_preference_from_one_conversation_is_recalled_in_another(stub, persona_id) -> None:
    stated = await turn(
        stub, persona_id, "I prefer bullet points in every answer.", conversation_id="conv-a"
    )
    await turn(stub, persona_id, "We went to the cinema last night.", conversation_id="conv-a")
    await turn(stub, persona_id, "The train was late again today.", conversation_id="conv-c")
    await turn(stub, persona_id, "How should you format answers for me?", conversation_id="conv-b")

    recalled = await stub.Recall(
        memory_pb2.RecallRequest(
            persona_id=persona_id,
            user_id="user-1",
            query="How should answers be formatted for me?",
            exclude_conversation_id="conv-b",
            limit=3,
        ),
        metadata=TENANT_A,
    )
    best = recalled.memories[0]
    assert best.memory.id == stated.episodes[0].id
    assert best.memory.text == "I prefer bullet points in every answer."
    assert best.importance == 0.8  # the message stated a fact
    assert 0 < best.relevance <= 1
    assert 0.99 < best.recency <= 1
    assert best.score == pytest.approx(
        0.5 * best.relevance + 0.3 * best.recency + 0.2 * best.importance
    )
    assert all(m.memory.conversation_id != "conv-b" for m in recalled.memories)
    relevances = [m.relevance for m in recalled.memories]
    assert relevances[0] == max(relevances)


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
    for i in range(4):
        await remember(stub, persona_id, f"fact number {i}")
    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, limit=2), metadata=TENANT_A
    )
    assert len(recalled.memories) == 2


async def test_turn_stores_both_messages_and_appends_them_to_working_memory(
    stub, persona_id
) -> None:
    reply = await turn(stub, persona_id, "Hello there", "Hi! How can I help?", trace_id="tr-1")
    user, assistant = reply.episodes
    assert (user.role, user.kind, user.importance) == ("user", "message", 0.5)
    assert (assistant.role, assistant.text, assistant.importance) == (
        "assistant",
        "Hi! How can I help?",
        0.4,
    )
    assert list(reply.learned) == []
    items = await stub.ListWorkingItems(
        memory_pb2.ListWorkingItemsRequest(
            persona_id=persona_id, user_id="user-1", conversation_id="conv-a"
        ),
        metadata=TENANT_A,
    )
    assert [(i.role, i.text, i.priority) for i in items.items] == [
        ("user", "Hello there", 3),
        ("assistant", "Hi! How can I help?", 3),
    ]


async def test_turn_without_reply_stores_the_user_message_only(stub, persona_id) -> None:
    reply = await turn(stub, persona_id, "Are you there?", "")
    assert [e.role for e in reply.episodes] == ["user"]


async def test_a_new_manager_supersedes_the_old_one_with_both_times(stub, persona_id) -> None:
    first = await turn(stub, persona_id, "My manager is Priya.")
    [priya] = first.learned
    assert (priya.attribute, priya.value, priya.status, priya.source) == (
        "manager",
        "Priya",
        "current",
        "rule",
    )
    assert priya.source_episode_id == first.episodes[0].id
    assert not priya.HasField("valid_to")

    again = await turn(stub, persona_id, "my manager is priya")
    assert list(again.learned) == [] and list(again.superseded) == []

    second = await turn(stub, persona_id, "Actually, my manager is now Omar.")
    [omar] = second.learned
    [old] = second.superseded
    assert (omar.value, old.id, old.superseded_by, old.status) == (
        "Omar",
        priya.id,
        omar.id,
        "superseded",
    )
    assert old.valid_to == omar.valid_from
    assert old.valid_from == priya.valid_from
    assert old.valid_to.ToDatetime() > old.valid_from.ToDatetime()

    assert [(f.attribute, f.value) for f in await facts(stub, persona_id)] == [("manager", "Omar")]
    history = await facts(stub, persona_id, history=True)
    assert [(f.value, f.status) for f in history] == [("Omar", "current"), ("Priya", "superseded")]


async def test_like_and_dislike_of_the_same_thing_replace_each_other(stub, persona_id) -> None:
    await turn(stub, persona_id, "I like jazz and I like tea")
    flipped = await turn(stub, persona_id, "I don't like jazz anymore")
    assert [(f.attribute, f.value) for f in flipped.learned] == [("dislike", "jazz")]
    assert [(f.attribute, f.value) for f in flipped.superseded] == [("like", "jazz")]
    assert {(f.attribute, f.value) for f in await facts(stub, persona_id)} == {
        ("dislike", "jazz"),
        ("like", "tea"),
    }
    back = await turn(stub, persona_id, "I love jazz again")
    assert [(f.attribute, f.value) for f in back.superseded] == [("dislike", "jazz")]


async def test_asserted_fact_corrects_the_current_one(stub, persona_id) -> None:
    await turn(stub, persona_id, "I live in Lisbon")
    corrected = await stub.AssertFact(
        memory_pb2.AssertFactRequest(
            persona_id=persona_id, user_id="user-1", attribute="location", value="Porto"
        ),
        metadata=TENANT_A,
    )
    assert (corrected.fact.value, corrected.fact.source, corrected.fact.status) == (
        "Porto",
        "user",
        "current",
    )
    assert [f.value for f in corrected.superseded] == ["Lisbon"]

    same = await stub.AssertFact(
        memory_pb2.AssertFactRequest(
            persona_id=persona_id, user_id="user-1", attribute="location", value="porto"
        ),
        metadata=TENANT_A,
    )
    assert same.fact.id == corrected.fact.id and list(same.superseded) == []


async def test_deleted_fact_is_gone(stub, persona_id) -> None:
    learned = (await turn(stub, persona_id, "My name is Sam")).learned[0]
    request = memory_pb2.DeleteFactRequest(
        persona_id=persona_id, user_id="user-1", fact_id=learned.id
    )
    await stub.DeleteFact(request, metadata=TENANT_A)
    assert await facts(stub, persona_id, history=True) == []
    await testing.expect_rpc_error(
        stub.DeleteFact(request, metadata=TENANT_A), grpc.StatusCode.NOT_FOUND, learned.id
    )


async def test_forget_user_deletes_facts_episodes_and_working_memory(stub, persona_id) -> None:
    await turn(stub, persona_id, "My manager is Priya", conversation_id="c1")
    await turn(stub, persona_id, "I like tea", conversation_id="c2")
    await turn(stub, persona_id, "I like tea", user_id="user-2")
    forgotten = await stub.ForgetUser(
        memory_pb2.ForgetUserRequest(persona_id=persona_id, user_id="user-1"), metadata=TENANT_A
    )
    assert (
        forgotten.facts_deleted,
        forgotten.episodes_deleted,
        forgotten.working_items_deleted,
    ) == (2, 4, 4)
    assert await facts(stub, persona_id) == []
    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=persona_id, query="tea"), metadata=TENANT_A
    )
    assert {m.memory.user_id for m in recalled.memories} == {"user-2"}
    for conversation in ("c1", "c2"):
        items = await stub.ListWorkingItems(
            memory_pb2.ListWorkingItemsRequest(
                persona_id=persona_id, user_id="user-1", conversation_id=conversation
            ),
            metadata=TENANT_A,
        )
        assert list(items.items) == []


async def test_other_tenant_sees_and_changes_nothing(stub, persona_id) -> None:
    stated = await turn(stub, persona_id, "My manager is Priya. Secret project Falcon.")
    [fact] = stated.learned
    p, u = persona_id, "user-1"

    recalled = await stub.Recall(
        memory_pb2.RecallRequest(persona_id=p, query="Falcon manager"), metadata=TENANT_B
    )
    assert list(recalled.memories) == []
    items = await stub.ListWorkingItems(
        memory_pb2.ListWorkingItemsRequest(persona_id=p, user_id=u, conversation_id="conv-a"),
        metadata=TENANT_B,
    )
    assert list(items.items) == []
    assert await facts(stub, p, history=True, metadata=TENANT_B) == []
    await testing.expect_rpc_error(
        stub.DeleteFact(
            memory_pb2.DeleteFactRequest(persona_id=p, user_id=u, fact_id=fact.id),
            metadata=TENANT_B,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    # B's own writes about the "same" persona and user stay in B.
    asserted = await stub.AssertFact(
        memory_pb2.AssertFactRequest(persona_id=p, user_id=u, attribute="manager", value="Omar"),
        metadata=TENANT_B,
    )
    assert list(asserted.superseded) == []
    await turn(stub, p, "I live in Oslo", metadata=TENANT_B)
    await stub.PutWorkingItem(
        memory_pb2.PutWorkingItemRequest(
            persona_id=p, user_id=u, conversation_id="conv-a", text="x"
        ),
        metadata=TENANT_B,
    )
    forgotten = await stub.ForgetUser(
        memory_pb2.ForgetUserRequest(persona_id=p, user_id=u), metadata=TENANT_B
    )
    assert forgotten.facts_deleted == 2  # B's own Omar and Oslo

    # A still has exactly what it had.
    assert [(f.value, f.status) for f in await facts(stub, p, history=True)] == [
        ("Priya", "current")
    ]
    mine = await stub.Recall(memory_pb2.RecallRequest(persona_id=p), metadata=TENANT_A)
    assert {m.memory.id for m in mine.memories} == {e.id for e in stated.episodes}
    items = await stub.ListWorkingItems(
        memory_pb2.ListWorkingItemsRequest(persona_id=p, user_id=u, conversation_id="conv-a"),
        metadata=TENANT_A,
    )
    assert len(items.items) == 2


async def test_turn_events_land_on_the_bus(stub, persona_id, nats_engine) -> None:
    stated = await turn(stub, persona_id, "My manager is Priya")
    changed = await turn(stub, persona_id, "My manager is Omar")
    wanted = {("memory.episode_stored", e.id) for r in (stated, changed) for e in r.episodes} | {
        ("memory.fact_learned", stated.learned[0].id),
        ("memory.fact_learned", changed.learned[0].id),
        ("memory.fact_superseded", stated.learned[0].id),
    }
    seen: dict[tuple[str, str], dict] = {}
    bus = await connect_bus(nats_engine.url())
    try:

        async def read() -> None:
            async for event in bus.tail("memory.*", client_id="tenant-a", from_start=True):
                key_field = (
                    "episode_id" if event.event_type.endswith("episode_stored") else "fact_id"
                )
                key = (event.event_type, str(event.payload.get(key_field)))
                if key in wanted:
                    seen[key] = event.payload
                    if len(seen) == len(wanted):
                        return

        await asyncio.wait_for(read(), timeout=20)
    finally:
        await bus.close()
    superseded = seen[("memory.fact_superseded", stated.learned[0].id)]
    assert superseded["superseded_by"] == changed.learned[0].id
    assert superseded["reason"] == "contradicted by a newer statement"
    learned = seen[("memory.fact_learned", changed.learned[0].id)]
    assert (learned["persona_id"], learned["attribute"]) == (persona_id, "manager")


async def test_calls_without_tenant_are_refused(stub, persona_id) -> None:
    p, u, c = persona_id, "u", "c"
    await testing.expect_refused_without_tenant(
        stub.Remember(memory_pb2.RememberRequest(persona_id=p, user_id=u, text="t")),
        stub.Recall(memory_pb2.RecallRequest(persona_id=p)),
        stub.RecordTurn(
            memory_pb2.RecordTurnRequest(persona_id=p, user_id=u, conversation_id=c, user_text="t")
        ),
        stub.PutWorkingItem(
            memory_pb2.PutWorkingItemRequest(persona_id=p, user_id=u, conversation_id=c, text="t")
        ),
        stub.ListWorkingItems(
            memory_pb2.ListWorkingItemsRequest(persona_id=p, user_id=u, conversation_id=c)
        ),
        stub.ListFacts(memory_pb2.ListFactsRequest(persona_id=p, user_id=u)),
        stub.AssertFact(
            memory_pb2.AssertFactRequest(persona_id=p, user_id=u, attribute="a", value="v")
        ),
        stub.DeleteFact(
            memory_pb2.DeleteFactRequest(persona_id=p, user_id=u, fact_id=str(uuid.uuid4()))
        ),
        stub.ForgetUser(memory_pb2.ForgetUserRequest(persona_id=p, user_id=u)),
    )


P = str(uuid.UUID(int=1))
M = memory_pb2


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        ("Remember", M.RememberRequest(user_id="u", text="t"), "persona_id is required"),
        (
            "Remember",
            M.RememberRequest(persona_id="no", user_id="u", text="t"),
            "persona_id must be a UUID",
        ),
        ("Remember", M.RememberRequest(persona_id=P, text="t"), "user_id is required"),
        (
            "Remember",
            M.RememberRequest(persona_id=P, user_id="u" * 201, text="t"),
            "user_id is 201 characters long",
        ),
        ("Remember", M.RememberRequest(persona_id=P, user_id="u", text=" "), "text is required"),
        (
            "Remember",
            M.RememberRequest(persona_id=P, user_id="u", text="x" * 20_001),
            "text is 20001 characters long",
        ),
        (
            "Remember",
            M.RememberRequest(persona_id=P, user_id="u", text="t", importance=1.5),
            "importance must be between 0.0 and 1.0",
        ),
        (
            "Remember",
            M.RememberRequest(persona_id=P, user_id="u", text="t", kind="dream"),
            "kind must be one of",
        ),
        (
            "Remember",
            M.RememberRequest(persona_id=P, user_id="u", text="t", role="bot"),
            "role must be one of",
        ),
        ("Recall", M.RecallRequest(query="x"), "persona_id is required"),
        ("Recall", M.RecallRequest(persona_id=P, limit=-1), "limit must not be negative"),
        (
            "Recall",
            M.RecallRequest(persona_id=P, query="q" * 2_001),
            "query is 2001 characters long",
        ),
        (
            "RecordTurn",
            M.RecordTurnRequest(persona_id=P, user_id="u", user_text="t"),
            "conversation_id is required",
        ),
        (
            "RecordTurn",
            M.RecordTurnRequest(persona_id=P, user_id="u", conversation_id="c"),
            "user_text is required",
        ),
        (
            "RecordTurn",
            M.RecordTurnRequest(
                persona_id=P, user_id="u", conversation_id="c" * 201, user_text="t"
            ),
            "conversation_id is 201 characters long",
        ),
        (
            "PutWorkingItem",
            M.PutWorkingItemRequest(
                persona_id=P, user_id="u", conversation_id="c", text="t", priority=6
            ),
            "priority must be between 1 and 5",
        ),
        (
            "PutWorkingItem",
            M.PutWorkingItemRequest(
                persona_id=P, user_id="u", conversation_id="c", text="t", priority=-1
            ),
            "priority must be between 1 and 5",
        ),
        (
            "PutWorkingItem",
            M.PutWorkingItemRequest(
                persona_id=P, user_id="u", conversation_id="c", text="t", ttl_seconds=604_801
            ),
            "ttl_seconds must be between 1 and 604800",
        ),
        (
            "PutWorkingItem",
            M.PutWorkingItemRequest(persona_id=P, user_id="u", conversation_id="c"),
            "text is required",
        ),
        (
            "ListWorkingItems",
            M.ListWorkingItemsRequest(persona_id=P, user_id="u"),
            "conversation_id is required",
        ),
        (
            "ListWorkingItems",
            M.ListWorkingItemsRequest(persona_id=P, user_id="u", conversation_id="c", limit=-2),
            "limit must not be negative",
        ),
        ("ListFacts", M.ListFactsRequest(persona_id=P), "user_id is required"),
        (
            "AssertFact",
            M.AssertFactRequest(persona_id=P, user_id="u", attribute="Job Title", value="v"),
            "attribute must be snake_case",
        ),
        (
            "AssertFact",
            M.AssertFactRequest(persona_id=P, user_id="u", attribute="a" * 65, value="v"),
            "attribute is 65 characters long",
        ),
        (
            "AssertFact",
            M.AssertFactRequest(persona_id=P, user_id="u", attribute="pet"),
            "value is required",
        ),
        (
            "AssertFact",
            M.AssertFactRequest(persona_id=P, user_id="u", attribute="pet", value="v" * 501),
            "value is 501 characters long",
        ),
        (
            "DeleteFact",
            M.DeleteFactRequest(persona_id=P, user_id="u", fact_id="nope"),
            "fact_id must be a UUID",
        ),
        ("ForgetUser", M.ForgetUserRequest(persona_id=P), "user_id is required"),
    ],
)
async def test_invalid_request_names_the_field(stub, method, request_, message) -> None:
    await testing.expect_rpc_error(
        getattr(stub, method)(request_, metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
    )
