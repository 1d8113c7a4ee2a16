"""The persona service over real gRPC, against embedded PostgreSQL, Redis and NATS: personas,
co-workers, validation and tenant isolation (conversations are in test_conversation.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from edrs_core import testing
from edrs_persona.app import definition
from edrs_proto.common.v1 import common_pb2
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

pytestmark = pytest.mark.integration

DATABASE = "test_persona_crud"
# Tenants of this run only: against a server kept from an earlier run (EDRS_TEST_POSTGRES_URL),
# fixed tenants would meet that run's personas, names and pages.
RUN = uuid.uuid4().hex[:8]
TENANT_A = testing.tenant_metadata(f"tenant-a-{RUN}")
TENANT_B = testing.tenant_metadata(f"tenant-b-{RUN}")


@pytest.fixture(scope="module")
async def persona(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database=DATABASE, redis_db=10
    )
    async with testing.running_service(definition, **settings) as svc:
        yield svc


@pytest.fixture
def stub(persona: testing.RunningService) -> persona_pb2_grpc.PersonaServiceStub:
    return persona_pb2_grpc.PersonaServiceStub(persona.channel)


@pytest.fixture(scope="module")
async def cut_off(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[persona_pb2_grpc.PersonaServiceStub]:
    """A replica whose memory and reasoning peers are down (nothing listens on port 1)."""
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database=DATABASE, redis_db=10
    )
    dead = {"memory": "127.0.0.1:1", "reasoning": "127.0.0.1:1"}
    async with testing.running_service(definition, peers=dead, **settings) as svc:
        yield persona_pb2_grpc.PersonaServiceStub(svc.channel)


async def create(stub, name: str = "Ada", metadata=TENANT_A, **fields) -> persona_pb2.Persona:
    return await stub.CreatePersona(
        persona_pb2.CreatePersonaRequest(name=name, role=fields.pop("role", "analyst"), **fields),
        metadata=metadata,
    )


async def outbox_payloads(postgres_engine, event_type: str) -> list[dict]:
    """The payloads of the events of one type the service wrote to its outbox."""
    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        rows = await conn.fetch(
            "SELECT body FROM edrs_outbox WHERE event_type = $1 ORDER BY event_id", event_type
        )
    finally:
        await conn.close()
    return [json.loads(bytes(r["body"]))["payload"] for r in rows]


async def test_create_then_get_returns_what_was_stored(stub, postgres_engine) -> None:
    created = await create(
        stub, "  Ada ", role="Data analyst", skills=["sql", "python"], tone="warm"
    )
    assert created.name == "Ada"
    assert created.status == persona_pb2.PERSONA_STATUS_ACTIVE
    fetched = await stub.GetPersona(persona_pb2.GetPersonaRequest(id=created.id), metadata=TENANT_A)
    assert fetched == created
    assert list(fetched.skills) == ["sql", "python"]
    events = await outbox_payloads(postgres_engine, "persona.persona_created")
    assert {
        "persona_id": created.id,
        "name": "Ada",
        "role": "Data analyst",
        "skills": ["sql", "python"],
    } in events


async def test_update_changes_only_the_masked_fields(stub, postgres_engine) -> None:
    created = await create(stub, "Before", tone="formal", instructions="Be brief.")
    updated = await stub.UpdatePersona(
        persona_pb2.UpdatePersonaRequest(
            persona=persona_pb2.Persona(
                id=created.id, name="After", tone="ignored, not in the mask", skills=["go"]
            ),
            update_mask=FieldMask(paths=["name", "skills"]),
        ),
        metadata=TENANT_A,
    )
    assert (updated.name, list(updated.skills), updated.tone) == ("After", ["go"], "formal")
    assert updated.instructions == "Be brief."
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()
    events = await outbox_payloads(postgres_engine, "persona.persona_updated")
    assert {"persona_id": created.id, "fields": ["name", "skills"]} in events


@pytest.mark.parametrize(
    ("paths", "persona_fields", "message"),
    [
        ([], {}, "update_mask is required"),
        (["name", "status"], {"name": "x"}, "update_mask.paths[1] 'status' is not a field"),
        (["name"], {"name": " "}, "name is required"),
        (["skills"], {"skills": [""]}, "skills[0] is required"),
    ],
)
async def test_bad_update_names_the_problem(stub, paths, persona_fields, message) -> None:
    created = await create(stub)
    await testing.expect_rpc_error(
        stub.UpdatePersona(
            persona_pb2.UpdatePersonaRequest(
                persona=persona_pb2.Persona(id=created.id, **persona_fields),
                update_mask=FieldMask(paths=paths),
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
    )


async def test_a_persona_has_a_voice_and_speed(stub, postgres_engine) -> None:
    plain = await create(stub, "Quiet")
    # Unset: the reasoning service's default voice at normal speed.
    assert (plain.voice.name, plain.voice.speed) == ("", 1.0)
    fast = await create(stub, "Quick", voice=persona_pb2.PersonaVoice(speed=1.5))
    assert (fast.voice.name, fast.voice.speed) == ("", 1.5)
    slowed = await stub.UpdatePersona(
        persona_pb2.UpdatePersonaRequest(
            persona=persona_pb2.Persona(id=fast.id, voice=persona_pb2.PersonaVoice(speed=0.8)),
            update_mask=FieldMask(paths=["voice"]),
        ),
        metadata=TENANT_A,
    )
    read = await stub.GetPersona(persona_pb2.GetPersonaRequest(id=fast.id), metadata=TENANT_A)
    assert slowed.voice.speed == read.voice.speed == 0.8
    events = await outbox_payloads(postgres_engine, "persona.persona_updated")
    assert {"persona_id": fast.id, "fields": ["voice", "voice_speed"]} in events


async def test_a_bad_voice_is_refused_naming_the_field(stub, cut_off) -> None:
    await testing.expect_rpc_error(
        create(stub, voice=persona_pb2.PersonaVoice(speed=5)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "voice.speed must be between 0.25 and 4.0, got 5.0",
    )
    created = await create(stub)
    await testing.expect_rpc_error(
        stub.UpdatePersona(
            persona_pb2.UpdatePersonaRequest(
                persona=persona_pb2.Persona(
                    id=created.id, voice=persona_pb2.PersonaVoice(name="x" * 101)
                ),
                update_mask=FieldMask(paths=["voice"]),
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "persona.voice.name is 101 characters long",
    )
    # A named voice is checked against the voices the reasoning service offers: with that
    # service down, the persona is not created with a voice nobody checked.
    await testing.expect_rpc_error(
        create(cut_off, voice=persona_pb2.PersonaVoice(name="en_US-joe-medium")),
        grpc.StatusCode.UNAVAILABLE,
        "reasoning",
    )


async def test_archive_is_idempotent_and_freezes_the_persona(stub, postgres_engine) -> None:
    created = await create(stub, "Retiring")
    first = await stub.ArchivePersona(
        persona_pb2.ArchivePersonaRequest(id=created.id), metadata=TENANT_A
    )
    again = await stub.ArchivePersona(
        persona_pb2.ArchivePersonaRequest(id=created.id), metadata=TENANT_A
    )
    assert first.status == again.status == persona_pb2.PERSONA_STATUS_ARCHIVED
    assert again.update_time == first.update_time
    archived_events = await outbox_payloads(postgres_engine, "persona.persona_archived")
    assert archived_events.count({"persona_id": created.id}) == 1
    await testing.expect_rpc_error(
        stub.UpdatePersona(
            persona_pb2.UpdatePersonaRequest(
                persona=persona_pb2.Persona(id=created.id, name="New"),
                update_mask=FieldMask(paths=["name"]),
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "archived",
    )
    await testing.expect_rpc_error(
        stub.Converse(
            persona_pb2.ConverseRequest(
                persona_id=created.id, conversation_id="c1", user_id="u1", text="hello"
            ),
            metadata=TENANT_A,
        ).read(),
        grpc.StatusCode.FAILED_PRECONDITION,
        "archived",
    )


async def test_list_hides_archived_personas_unless_asked(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-archive-list-{RUN}")
    kept = await create(stub, "Kept", metadata=tenant)
    gone = await create(stub, "Gone", metadata=tenant)
    await stub.ArchivePersona(persona_pb2.ArchivePersonaRequest(id=gone.id), metadata=tenant)
    active = await stub.ListPersonas(persona_pb2.ListPersonasRequest(), metadata=tenant)
    assert [p.id for p in active.personas] == [kept.id]
    everyone = await stub.ListPersonas(
        persona_pb2.ListPersonasRequest(include_archived=True), metadata=tenant
    )
    assert [p.id for p in everyone.personas] == [kept.id, gone.id]


async def test_unknown_persona_is_not_found(stub) -> None:
    missing = "0190a000-0000-7000-8000-000000000000"
    await testing.expect_rpc_error(
        stub.ArchivePersona(persona_pb2.ArchivePersonaRequest(id=missing), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
        missing,
    )


async def test_other_tenant_cannot_see_the_persona(stub) -> None:
    created = await create(stub, "Private")
    await testing.expect_rpc_error(
        stub.GetPersona(persona_pb2.GetPersonaRequest(id=created.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListPersonas(
        persona_pb2.ListPersonasRequest(include_archived=True), metadata=TENANT_B
    )
    assert created.id not in {p.id for p in listed.personas}


async def test_other_tenant_reaches_nothing_of_a_persona_through_any_rpc(stub) -> None:
    """Every persona-scoped RPC answers NOT_FOUND for another tenant's persona."""
    mine = await create(stub, "Mine")
    theirs = await create(stub, "Theirs", metadata=TENANT_B)
    pid, user = mine.id, "user-1"
    calls = [
        stub.UpdatePersona(
            persona_pb2.UpdatePersonaRequest(
                persona=persona_pb2.Persona(id=pid, name="Hijacked"),
                update_mask=FieldMask(paths=["name"]),
            ),
            metadata=TENANT_B,
        ),
        stub.ArchivePersona(persona_pb2.ArchivePersonaRequest(id=pid), metadata=TENANT_B),
        stub.Converse(
            persona_pb2.ConverseRequest(
                persona_id=pid, conversation_id="c", user_id=user, text="hi"
            ),
            metadata=TENANT_B,
        ).read(),
        stub.ListConversations(
            persona_pb2.ListConversationsRequest(persona_id=pid, user_id=user), metadata=TENANT_B
        ),
        stub.ListMessages(
            persona_pb2.ListMessagesRequest(persona_id=pid, user_id=user, conversation_id="c"),
            metadata=TENANT_B,
        ),
        stub.GetRelationship(
            persona_pb2.GetRelationshipRequest(persona_id=pid, user_id=user), metadata=TENANT_B
        ),
        stub.UpdateRelationship(
            persona_pb2.UpdateRelationshipRequest(persona_id=pid, user_id=user, notes=["x"]),
            metadata=TENANT_B,
        ),
        stub.CorrectFact(
            persona_pb2.CorrectFactRequest(
                persona_id=pid, user_id=user, attribute="manager", value="Eve"
            ),
            metadata=TENANT_B,
        ),
        stub.DeleteFact(
            persona_pb2.DeleteFactRequest(
                persona_id=pid, user_id=user, fact_id="0190a000-0000-7000-8000-000000000001"
            ),
            metadata=TENANT_B,
        ),
        stub.ForgetRelationship(
            persona_pb2.ForgetRelationshipRequest(persona_id=pid, user_id=user),
            metadata=TENANT_B,
        ),
        stub.ListCoworkers(persona_pb2.ListCoworkersRequest(persona_id=pid), metadata=TENANT_B),
        stub.SetCoworker(
            persona_pb2.SetCoworkerRequest(persona_id=theirs.id, coworker_id=pid),
            metadata=TENANT_B,
        ),
        stub.RemoveCoworker(
            persona_pb2.RemoveCoworkerRequest(persona_id=pid, coworker_id=theirs.id),
            metadata=TENANT_B,
        ),
    ]
    for call in calls:
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND, pid)
    still = await stub.GetPersona(persona_pb2.GetPersonaRequest(id=pid), metadata=TENANT_A)
    assert (still.name, still.status) == ("Mine", persona_pb2.PERSONA_STATUS_ACTIVE)


async def test_coworkers_are_symmetric_and_removable(stub) -> None:
    ada = await create(stub, "Ada", role="analyst")
    bob = await create(stub, "Bob", role="reviewer")
    set_ = await stub.SetCoworker(
        persona_pb2.SetCoworkerRequest(
            persona_id=ada.id,
            coworker_id=bob.id,
            relation="reviews analyses",
            handover="send the draft with sources",
        ),
        metadata=TENANT_A,
    )
    assert (set_.coworker_id, set_.coworker_name, set_.coworker_role) == (bob.id, "Bob", "reviewer")
    from_bob = await stub.ListCoworkers(
        persona_pb2.ListCoworkersRequest(persona_id=bob.id), metadata=TENANT_A
    )
    assert [(c.coworker_id, c.coworker_name, c.relation) for c in from_bob.coworkers] == [
        (ada.id, "Ada", "reviews analyses")
    ]
    # Setting again updates rather than duplicates.
    await stub.SetCoworker(
        persona_pb2.SetCoworkerRequest(persona_id=bob.id, coworker_id=ada.id, relation="pair"),
        metadata=TENANT_A,
    )
    from_ada = await stub.ListCoworkers(
        persona_pb2.ListCoworkersRequest(persona_id=ada.id), metadata=TENANT_A
    )
    assert [(c.coworker_id, c.relation) for c in from_ada.coworkers] == [(bob.id, "pair")]

    await stub.RemoveCoworker(
        persona_pb2.RemoveCoworkerRequest(persona_id=bob.id, coworker_id=ada.id), metadata=TENANT_A
    )
    for pid in (ada.id, bob.id):
        listed = await stub.ListCoworkers(
            persona_pb2.ListCoworkersRequest(persona_id=pid), metadata=TENANT_A
        )
        assert list(listed.coworkers) == []
    await testing.expect_rpc_error(
        stub.RemoveCoworker(
            persona_pb2.RemoveCoworkerRequest(persona_id=ada.id, coworker_id=bob.id),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.NOT_FOUND,
        "has no co-worker",
    )


async def test_coworker_must_be_another_active_persona(stub) -> None:
    ada = await create(stub, "Ada")
    old = await create(stub, "Old")
    await stub.ArchivePersona(persona_pb2.ArchivePersonaRequest(id=old.id), metadata=TENANT_A)
    await testing.expect_rpc_error(
        stub.SetCoworker(
            persona_pb2.SetCoworkerRequest(persona_id=ada.id, coworker_id=ada.id),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "coworker_id must name another persona",
    )
    await testing.expect_rpc_error(
        stub.SetCoworker(
            persona_pb2.SetCoworkerRequest(persona_id=ada.id, coworker_id=old.id),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "archived",
    )
    await testing.expect_rpc_error(
        stub.SetCoworker(
            persona_pb2.SetCoworkerRequest(
                persona_id=ada.id, coworker_id=old.id, relation="r" * 201
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "relation is 201 characters",
    )


async def test_a_peer_that_is_down_is_named(cut_off) -> None:
    ada = await create(cut_off, "Ada")
    await testing.expect_rpc_error(
        cut_off.Converse(
            persona_pb2.ConverseRequest(
                persona_id=ada.id, conversation_id="c", user_id="u", text="hello"
            ),
            metadata=TENANT_A,
        ).read(),
        grpc.StatusCode.UNAVAILABLE,
        "the reasoning service is unavailable",
    )
    await testing.expect_rpc_error(
        cut_off.GetRelationship(
            persona_pb2.GetRelationshipRequest(persona_id=ada.id, user_id="u"), metadata=TENANT_A
        ),
        grpc.StatusCode.UNAVAILABLE,
        "the memory service is unavailable",
    )
    # Nothing was stored for the refused message.
    listed = await cut_off.ListConversations(
        persona_pb2.ListConversationsRequest(persona_id=ada.id, user_id="u"), metadata=TENANT_A
    )
    assert list(listed.conversations) == []


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (persona_pb2.CreatePersonaRequest(name="", role="r"), "name is required"),
        (persona_pb2.CreatePersonaRequest(name="n", role=""), "role is required"),
        (persona_pb2.CreatePersonaRequest(name="n" * 201, role="r"), "name is 201 characters"),
        (
            persona_pb2.CreatePersonaRequest(name="n", role="r", skills=[""]),
            "skills[0] is required",
        ),
    ],
)
async def test_invalid_create_names_the_field(stub, request_, field) -> None:
    await testing.expect_rpc_error(
        stub.CreatePersona(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, field
    )


def _converse(**fields) -> persona_pb2.ConverseRequest:
    values = {
        "persona_id": "0190a000-0000-7000-8000-000000000000",
        "conversation_id": "c-1",
        "user_id": "user-1",
        "text": "hello",
    }
    values.update(fields)
    return persona_pb2.ConverseRequest(**values)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_converse(persona_id="nope"), "persona_id must be a UUID"),
        (_converse(conversation_id=""), "conversation_id must be 1..100 characters"),
        (_converse(conversation_id="a/b"), "conversation_id must be 1..100 characters"),
        (_converse(conversation_id="c" * 101), "conversation_id must be 1..100 characters"),
        (_converse(user_id=""), "user_id is required"),
        (_converse(text="  "), "text is required"),
        (_converse(text="x" * 20_001), "text is 20001 characters long; the limit is 20000"),
        (
            _converse(options=persona_pb2.ConverseOptions(strategy="verify")),
            "options.strategy must be one of direct, chain_of_thought, self_consistency",
        ),
        (
            _converse(options=persona_pb2.ConverseOptions(max_tokens=-1)),
            "options.max_tokens must not be negative",
        ),
        (
            _converse(options=persona_pb2.ConverseOptions(temperature=2.5)),
            "options.temperature must be between 0.0 and 2.0",
        ),
    ],
)
async def test_invalid_converse_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.Converse(request_, metadata=TENANT_A).read(),
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
    )


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(
        stub.ListPersonas(persona_pb2.ListPersonasRequest()),
        stub.Converse(_converse()).read(),
    )


async def test_list_pages_through_every_persona_once(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-paging-{RUN}")
    made = []
    for i in range(7):
        p = await create(stub, f"p{i}", metadata=tenant)
        made.append(p.id)
    personas = await testing.collect_pages(
        stub.ListPersonas, persona_pb2.ListPersonasRequest, "personas", page_size=3, metadata=tenant
    )
    assert [p.id for p in personas] == made


async def test_bad_page_token_is_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.ListPersonas(
            persona_pb2.ListPersonasRequest(page=common_pb2.PageRequest(page_token="garbage!")),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token",
    )
