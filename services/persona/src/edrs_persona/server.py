"""The persona gRPC servicer: validates requests, scopes them to the caller's tenant."""

from __future__ import annotations

import grpc
from edrs_core import NotFound, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc

from edrs_persona.store import NewPersona, Persona, PersonaStore

_STATUS = {
    "active": persona_pb2.PERSONA_STATUS_ACTIVE,
    "archived": persona_pb2.PERSONA_STATUS_ARCHIVED,
}


def to_proto(p: Persona) -> persona_pb2.Persona:
    return persona_pb2.Persona(
        id=str(p.id),
        name=p.name,
        role=p.role,
        responsibilities=p.responsibilities,
        skills=p.skills,
        tone=p.tone,
        instructions=p.instructions,
        status=_STATUS[p.status],
        create_time=timestamp(p.created_at),
        update_time=timestamp(p.updated_at),
    )


class PersonaServicer(persona_pb2_grpc.PersonaServiceServicer):
    def __init__(self, store: PersonaStore) -> None:
        self.store = store

    async def CreatePersona(  # noqa: N802 (gRPC method name)
        self, request: persona_pb2.CreatePersonaRequest, context: grpc.aio.ServicerContext
    ) -> persona_pb2.Persona:
        client_id = require_client_id()
        new = NewPersona(
            name=validation.text(request.name, "name", max_length=200),
            role=validation.text(request.role, "role", max_length=200),
            responsibilities=validation.text_list(
                request.responsibilities, "responsibilities", max_items=50, max_length=500
            ),
            skills=validation.text_list(request.skills, "skills", max_items=50, max_length=200),
            tone=validation.text(request.tone, "tone", max_length=500, required=False),
            instructions=validation.text(
                request.instructions, "instructions", max_length=20_000, required=False
            ),
        )
        return to_proto(await self.store.create(client_id, new))

    async def GetPersona(  # noqa: N802
        self, request: persona_pb2.GetPersonaRequest, context: grpc.aio.ServicerContext
    ) -> persona_pb2.Persona:
        client_id = require_client_id()
        persona = await self.store.get(client_id, parse_id(request.id))
        if persona is None:
            raise NotFound(f"persona {request.id} not found")
        return to_proto(persona)

    async def ListPersonas(  # noqa: N802
        self, request: persona_pb2.ListPersonasRequest, context: grpc.aio.ServicerContext
    ) -> persona_pb2.ListPersonasResponse:
        client_id = require_client_id()
        personas, token = await self.store.list(
            client_id, request.page.page_token, request.page.page_size
        )
        return persona_pb2.ListPersonasResponse(
            personas=[to_proto(p) for p in personas],
            page=common_pb2.PageInfo(next_page_token=token),
        )
