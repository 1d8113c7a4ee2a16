"""Conversations with the REAL memory and reasoning services (and their real models) started in
this process: streaming, remembering across conversations, superseded facts, concurrent turns,
relationships. Replies are kept short (max_tokens 16) since CI has two cores."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from edrs_core import testing
from edrs_memory.app import definition as memory_definition
from edrs_persona.app import definition
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning.app import definition as reasoning_definition
from edrs_reasoning.slots import GenerationSlots

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATABASE = "test_persona_conversation"
REDIS_DB = 11
TENANT = testing.tenant_metadata("tenant-conv")
OPTIONS = persona_pb2.ConverseOptions(max_tokens=16, temperature=0.0)
# A turn that must still be running when the test sends the next message: the test holds the
# model (see `model_held`), so "still running" does not depend on how fast the model is.
LONG = persona_pb2.ConverseOptions(max_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def engines(postgres_engine, redis_engine, nats_engine):
    def settings(database: str) -> dict[str, str]:
        return testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=database, redis_db=REDIS_DB
        )

    return settings


@pytest.fixture(scope="module")
async def reasoning(engines) -> AsyncIterator[testing.RunningService]:
    async with testing.running_service(
        reasoning_definition,
        start_timeout=300,
        max_output_tokens=64,
        default_max_tokens=16,
        max_concurrent_generations=1,
        **engines("test_persona_reasoning"),
    ) as svc:
        yield svc


@pytest.fixture
def model_held(reasoning):  # type: ignore[no-untyped-def]
    """`async with model_held():` takes the reasoning service's one generation slot: a turn
    that reaches generation meanwhile waits for the test, not for the model."""
    slots: GenerationSlots = reasoning.servicer("ReasoningService").reasoner.slots
    assert slots.capacity == 1
    return slots.acquire


@pytest.fixture(scope="module")
async def memory(engines, reasoning) -> AsyncIterator[testing.RunningService]:
    async with testing.running_service(
        memory_definition,
        peers={"reasoning": reasoning.grpc_address},
        rpc_timeout_seconds=60.0,
        **engines("test_persona_memory"),
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
def peers(memory, reasoning) -> dict[str, str]:
    return {"memory": memory.grpc_address, "reasoning": reasoning.grpc_address}


@pytest.fixture(scope="module")
async def persona(engines, peers) -> AsyncIterator[testing.RunningService]:
    async with testing.running_service(definition, peers=peers, **engines(DATABASE)) as svc:
        yield svc


@pytest.fixture(scope="module")
async def strict_replica(engines, peers, persona) -> AsyncIterator[testing.RunningService]:
    """A second replica of the same service, database and Redis, running the reject policy."""
    async with testing.running_service(
        definition, peers=peers, turn_policy="reject", **engines(DATABASE)
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
async def short_queue_replica(engines, peers, persona) -> AsyncIterator[testing.RunningService]:
    async with testing.running_service(
        definition, peers=peers, max_queued_turns=1, **engines(DATABASE)
    ) as svc:
        yield svc


@pytest.fixture
def stub(persona) -> persona_pb2_grpc.PersonaServiceStub:
    return persona_pb2_grpc.PersonaServiceStub(persona.channel)


@pytest.fixture
def traces(reasoning) -> reasoning_pb2_grpc.ReasoningServiceStub:
    return reasoning_pb2_grpc.ReasoningServiceStub(reasoning.channel)


@pytest.fixture
async def ada(stub) -> persona_pb2.Persona:
    return await stub.CreatePersona(
        persona_pb2.CreatePersonaRequest(
            name="Ada",
            role="research assistant",
            tone="friendly",
            instructions="Answer in one short sentence.",
        ),
        metadata=TENANT,
    )


def ask(persona_id: str, conversation: str, text: str, user: str = "sam", options=OPTIONS):
    return persona_pb2.ConverseRequest(
        persona_id=persona_id,
        conversation_id=conversation,
        user_id=user,
        text=text,
        options=options,
    )


async def converse(stub, request) -> list[persona_pb2.ConverseEvent]:
    return [event async for event in stub.Converse(request, metadata=TENANT)]


async def read_rest(call) -> list[persona_pb2.ConverseEvent]:
    """The remaining events of a call that was read with `read()` so far."""
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


def kinds(events: list[persona_pb2.ConverseEvent]) -> list[str]:
    return [e.WhichOneof("kind") for e in events]


def completed(events: list[persona_pb2.ConverseEvent]) -> persona_pb2.TurnCompleted:
    assert kinds(events)[-1] == "completed", kinds(events)
    return events[-1].completed


async def test_a_turn_streams_the_reply_and_is_stored(stub, traces, ada, postgres_engine) -> None:
    events = await converse(stub, ask(ada.id, "first", "Hello! Who are you?"))
    order = kinds(events)
    assert order[:2] == ["accepted", "started"]
    assert order.count("delta") >= 2
    done = completed(events)
    assert done.reply and done.reply == "".join(e.delta.text for e in events if e.HasField("delta"))
    assert done.trace_id and done.completion_tokens > 0 and done.prompt_tokens > 0
    t = done.timings
    assert t.total_ms >= t.generation_ms > 0
    assert t.overhead_ms == pytest.approx(t.total_ms - t.generation_ms - t.queue_ms, abs=0.01)

    trace = await traces.GetTrace(reasoning_pb2.GetTraceRequest(id=done.trace_id), metadata=TENANT)
    assert "You are Ada, research assistant." in trace.prompt
    assert "Answer in one short sentence." in trace.prompt
    assert trace.labels["conversation_id"] == "first"
    assert trace.labels["message_id"] == events[0].accepted.message_id

    messages = await stub.ListMessages(
        persona_pb2.ListMessagesRequest(persona_id=ada.id, user_id="sam", conversation_id="first"),
        metadata=TENANT,
    )
    assert [(m.role, m.text) for m in messages.messages] == [
        ("user", "Hello! Who are you?"),
        ("assistant", done.reply),
    ]
    assert messages.messages[0].id == events[0].accepted.message_id
    assert messages.messages[1].id == done.message_id
    assert messages.messages[1].trace_id == done.trace_id
    conversations = await stub.ListConversations(
        persona_pb2.ListConversationsRequest(persona_id=ada.id, user_id="sam"), metadata=TENANT
    )
    assert [(c.id, c.message_count) for c in conversations.conversations] == [("first", 2)]
    # Another user's conversation with the same id is another conversation.
    other = await stub.ListMessages(
        persona_pb2.ListMessagesRequest(persona_id=ada.id, user_id="kim", conversation_id="first"),
        metadata=TENANT,
    )
    assert list(other.messages) == []

    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        rows = await conn.fetch(
            "SELECT event_type, body FROM edrs_outbox WHERE aggregate_id = $1", ada.id
        )
    finally:
        await conn.close()
    payloads = {r["event_type"]: json.loads(bytes(r["body"]))["payload"] for r in rows}
    assert payloads["persona.message_received"]["message_id"] == events[0].accepted.message_id
    assert payloads["persona.response_delivered"]["message_id"] == done.message_id
    assert payloads["persona.response_delivered"]["latency_ms"] > 0


async def test_a_preference_stated_in_one_conversation_is_used_in_the_next(
    stub, traces, ada
) -> None:
    first = completed(await converse(stub, ask(ada.id, "conv-a", "I prefer bullet points.")))
    assert [(f.attribute, f.value) for f in first.learned] == [("preference", "bullet points")]

    events = await converse(stub, ask(ada.id, "conv-b", "How should you format answers for me?"))
    done = completed(events)
    assert any(m.memory.text == "I prefer bullet points." for m in done.recalled)
    assert all(m.memory.conversation_id != "conv-b" for m in done.recalled)
    assert [(f.attribute, f.value) for f in done.facts] == [("preference", "bullet points")]
    trace = await traces.GetTrace(reasoning_pb2.GetTraceRequest(id=done.trace_id), metadata=TENANT)
    assert "The user prefers bullet points" in trace.prompt
    assert "I prefer bullet points." in trace.prompt
    sources = {(c.source, c.text) for c in trace.context}
    assert ("memory.fact", "The user prefers bullet points") in sources
    relationship = await stub.GetRelationship(
        persona_pb2.GetRelationshipRequest(persona_id=ada.id, user_id="sam"), metadata=TENANT
    )
    assert list(relationship.preferences) == ["bullet points"]
    assert relationship.interaction_count == 2
    assert [c.id for c in relationship.recent_conversations] == ["conv-b", "conv-a"]
    paged = await testing.collect_pages(
        stub.ListConversations,
        functools.partial(persona_pb2.ListConversationsRequest, persona_id=ada.id, user_id="sam"),
        "conversations",
        page_size=1,
        metadata=TENANT,
    )
    assert [c.id for c in paged] == ["conv-b", "conv-a"]


async def test_a_new_manager_supersedes_the_old_one(stub, ada) -> None:
    completed(await converse(stub, ask(ada.id, "work-1", "My manager is Priya.")))
    completed(await converse(stub, ask(ada.id, "work-2", "My manager is now Omar.")))
    relationship = await stub.GetRelationship(
        persona_pb2.GetRelationshipRequest(persona_id=ada.id, user_id="sam"), metadata=TENANT
    )
    managers = [f for f in relationship.facts if f.attribute == "manager"]
    assert [(f.value, f.status) for f in managers] == [("Omar", "current"), ("Priya", "superseded")]
    omar, priya = managers
    assert priya.valid_to.ToDatetime() == omar.valid_from.ToDatetime()
    assert priya.valid_from.ToDatetime() < priya.valid_to.ToDatetime()
    assert priya.superseded_by == omar.id
    assert not omar.HasField("valid_to")


async def test_a_second_message_waits_for_the_running_turn(stub, traces, ada, model_held) -> None:
    async with model_held():
        first_call = stub.Converse(
            ask(ada.id, "busy", "My name is Sam.", options=LONG), metadata=TENANT
        )
        first_events = []
        async for event in first_call:
            first_events.append(event)
            if event.HasField("started"):
                break
        # The first turn has started and waits for the model the test holds.
        second_call = stub.Converse(ask(ada.id, "busy", "What is my name?"), metadata=TENANT)
        second = [await second_call.read(), await second_call.read()]
    second += await read_rest(second_call)
    first_events += [event async for event in first_call]
    assert kinds(second)[:3] == ["accepted", "queued", "started"]
    assert second[1].queued.ahead == 1
    first_done, second_done = completed(first_events), completed(second)
    assert second_done.timings.queue_ms > 0
    # The second turn ran after the first was stored: its history holds the first exchange.
    trace = await traces.GetTrace(
        reasoning_pb2.GetTraceRequest(id=second_done.trace_id), metadata=TENANT
    )
    assert [m.content for m in trace.messages[1:3]] == ["My name is Sam.", first_done.reply]
    messages = await stub.ListMessages(
        persona_pb2.ListMessagesRequest(persona_id=ada.id, user_id="sam", conversation_id="busy"),
        metadata=TENANT,
    )
    replies = [m.id for m in messages.messages if m.role == "assistant"]
    assert replies == [first_done.message_id, second_done.message_id]
    paged = await testing.collect_pages(
        stub.ListMessages,
        functools.partial(
            persona_pb2.ListMessagesRequest,
            persona_id=ada.id,
            user_id="sam",
            conversation_id="busy",
        ),
        "messages",
        page_size=3,
        metadata=TENANT,
    )
    assert paged == list(messages.messages)


async def test_reject_policy_refuses_a_message_while_a_turn_runs(
    stub, ada, strict_replica, model_held
) -> None:
    strict = persona_pb2_grpc.PersonaServiceStub(strict_replica.channel)
    async with model_held():
        running = stub.Converse(
            ask(ada.id, "strict", "Tell me a fact about owls.", options=LONG), metadata=TENANT
        )
        async for event in running:
            if event.HasField("started"):
                break
        # The other replica sees the turn through Redis.
        await testing.expect_rpc_error(
            strict.Converse(ask(ada.id, "strict", "Hello?"), metadata=TENANT).read(),
            grpc.StatusCode.ABORTED,
            "conversation strict has a turn in progress",
        )
    rest = [event async for event in running]
    assert kinds(rest)[-1] == "completed"
    # Once it is over, the strict replica takes the conversation's next message.
    completed(await converse(strict, ask(ada.id, "strict", "Thanks.")))
    messages = await stub.ListMessages(
        persona_pb2.ListMessagesRequest(persona_id=ada.id, user_id="sam", conversation_id="strict"),
        metadata=TENANT,
    )
    assert "Hello?" not in [m.text for m in messages.messages]


async def test_a_full_queue_is_refused(stub, ada, short_queue_replica, model_held) -> None:
    short = persona_pb2_grpc.PersonaServiceStub(short_queue_replica.channel)
    async with model_held():
        running = stub.Converse(
            ask(ada.id, "crowded", "Describe the sea.", options=LONG), metadata=TENANT
        )
        async for event in running:
            if event.HasField("started"):
                break
        waiting = short.Converse(ask(ada.id, "crowded", "And the sky?"), metadata=TENANT)
        assert (await waiting.read()).HasField("accepted")
        assert (await waiting.read()).queued.ahead == 1
        await testing.expect_rpc_error(
            short.Converse(ask(ada.id, "crowded", "And the land?"), metadata=TENANT).read(),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the limit is 1",
        )
    assert kinds([e async for e in running])[-1] == "completed"
    assert kinds(await read_rest(waiting))[-1] == "completed"


async def test_a_client_that_leaves_mid_turn_still_gets_its_turn_stored(stub, ada) -> None:
    call = stub.Converse(ask(ada.id, "gone", "I live in Lisbon."), metadata=TENANT)
    assert (await call.read()).HasField("accepted")
    call.cancel()

    async def reply_stored() -> bool:
        listed = await stub.ListMessages(
            persona_pb2.ListMessagesRequest(
                persona_id=ada.id, user_id="sam", conversation_id="gone"
            ),
            metadata=TENANT,
        )
        return [m.role for m in listed.messages] == ["user", "assistant"]

    await testing.wait_until(reply_stored, within=120, what="the abandoned turn's reply")
    relationship = await stub.GetRelationship(
        persona_pb2.GetRelationshipRequest(persona_id=ada.id, user_id="sam"), metadata=TENANT
    )
    assert ("location", "Lisbon", "current") in {
        (f.attribute, f.value, f.status) for f in relationship.facts
    }


async def test_relationship_can_be_corrected_trimmed_and_forgotten(stub, ada, persona) -> None:
    user = "riley"
    completed(await converse(stub, ask(ada.id, "r1", "I like green tea.", user=user)))
    notes = await stub.UpdateRelationship(
        persona_pb2.UpdateRelationshipRequest(
            persona_id=ada.id, user_id=user, notes=["direct", "morning person"]
        ),
        metadata=TENANT,
    )
    assert list(notes.notes) == ["direct", "morning person"]
    assert list(notes.likes) == ["green tea"]

    corrected = await stub.CorrectFact(
        persona_pb2.CorrectFactRequest(
            persona_id=ada.id, user_id=user, attribute="manager", value="Lee"
        ),
        metadata=TENANT,
    )
    manager = next(f for f in corrected.facts if f.attribute == "manager")
    assert (manager.value, manager.source, manager.status) == ("Lee", "user", "current")

    without = await stub.DeleteFact(
        persona_pb2.DeleteFactRequest(persona_id=ada.id, user_id=user, fact_id=manager.id),
        metadata=TENANT,
    )
    assert "manager" not in {f.attribute for f in without.facts}
    await testing.expect_rpc_error(
        stub.DeleteFact(
            persona_pb2.DeleteFactRequest(persona_id=ada.id, user_id=user, fact_id=manager.id),
            metadata=TENANT,
        ),
        grpc.StatusCode.NOT_FOUND,
        "memory",
    )

    forgotten = await stub.ForgetRelationship(
        persona_pb2.ForgetRelationshipRequest(persona_id=ada.id, user_id=user), metadata=TENANT
    )
    assert forgotten.messages_deleted == 2
    assert forgotten.facts_deleted >= 1 and forgotten.episodes_deleted >= 1
    # Announced, so every service holding something of the user can forget it too.
    [event] = await testing.published_events(persona, "persona.relationship_forgotten", ada.id)
    assert event["payload"] == {"persona_id": ada.id, "user_id": user}
    after = await stub.GetRelationship(
        persona_pb2.GetRelationshipRequest(persona_id=ada.id, user_id=user), metadata=TENANT
    )
    assert (list(after.facts), list(after.notes), after.interaction_count) == ([], [], 0)
    assert list(after.recent_conversations) == []
    # The next conversation starts from nothing: no recall of what was forgotten.
    fresh = completed(await converse(stub, ask(ada.id, "r2", "What do I like?", user=user)))
    assert list(fresh.recalled) == [] and list(fresh.facts) == []


async def test_bad_relationship_requests_name_the_field(stub, ada) -> None:
    cases = [
        (
            stub.UpdateRelationship(
                persona_pb2.UpdateRelationshipRequest(
                    persona_id=ada.id, user_id="u", notes=["x" * 501]
                ),
                metadata=TENANT,
            ),
            "notes[0] is 501 characters",
        ),
        (
            stub.CorrectFact(
                persona_pb2.CorrectFactRequest(
                    persona_id=ada.id, user_id="u", attribute="Job Title", value="x"
                ),
                metadata=TENANT,
            ),
            "attribute must be snake_case",
        ),
        (
            stub.DeleteFact(
                persona_pb2.DeleteFactRequest(persona_id=ada.id, user_id="u", fact_id="nope"),
                metadata=TENANT,
            ),
            "fact_id must be a UUID",
        ),
        (
            stub.GetRelationship(
                persona_pb2.GetRelationshipRequest(persona_id=ada.id), metadata=TENANT
            ),
            "user_id is required",
        ),
    ]
    for call, message in cases:
        await testing.expect_rpc_error(call, grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_max_tokens_beyond_the_model_is_refused_before_anything_is_stored(stub, ada) -> None:
    await testing.expect_rpc_error(
        stub.Converse(
            persona_pb2.ConverseRequest(
                persona_id=ada.id,
                conversation_id="too-long",
                user_id="sam",
                text="hi",
                options=persona_pb2.ConverseOptions(max_tokens=10_000),
            ),
            metadata=TENANT,
        ).read(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.max_tokens must be at most 64",
    )
    conversations = await stub.ListConversations(
        persona_pb2.ListConversationsRequest(persona_id=ada.id, user_id="sam"), metadata=TENANT
    )
    assert list(conversations.conversations) == []
