"""The persona service over real gRPC, against embedded PostgreSQL, Redis and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_persona.app import definition
from edrs_proto.common.v1 import common_pb2
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc

pytestmark = pytest.mark.integration

TENANT_A = [("x-edrs-client-id", "tenant-a")]
TENANT_B = [("x-edrs-client-id", "tenant-b")]


@pytest.fixture(scope="module")
async def persona(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_persona", redis_db=1
    )
    async with testing.running_service(definition, **settings) as svc:
        yield svc


@pytest.fixture
def stub(persona: testing.RunningService) -> persona_pb2_grpc.PersonaServiceStub:
    return persona_pb2_grpc.PersonaServiceStub(persona.channel)


async def test_create_then_get_returns_what_was_stored(stub) -> None:
    created = await stub.CreatePersona(
        persona_pb2.CreatePersonaRequest(
            name="  Ada ", role="Data analyst", skills=["sql", "python"], tone="warm"
        ),
        metadata=TENANT_A,
    )
    assert created.name == "Ada"
    assert created.status == persona_pb2.PERSONA_STATUS_ACTIVE
    fetched = await stub.GetPersona(persona_pb2.GetPersonaRequest(id=created.id), metadata=TENANT_A)
    assert fetched == created
    assert list(fetched.skills) == ["sql", "python"]


async def test_other_tenant_cannot_see_the_persona(stub) -> None:
    created = await stub.CreatePersona(
        persona_pb2.CreatePersonaRequest(name="Private", role="r"), metadata=TENANT_A
    )
    await testing.expect_rpc_error(
        stub.GetPersona(persona_pb2.GetPersonaRequest(id=created.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListPersonas(persona_pb2.ListPersonasRequest(), metadata=TENANT_B)
    assert created.id not in {p.id for p in listed.personas}


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


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(
        stub.ListPersonas(persona_pb2.ListPersonasRequest())
    )


async def test_list_pages_through_every_persona_once(stub) -> None:
    tenant = [("x-edrs-client-id", "tenant-paging")]
    made = []
    for i in range(7):
        p = await stub.CreatePersona(
            persona_pb2.CreatePersonaRequest(name=f"p{i}", role="r"), metadata=tenant
        )
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
