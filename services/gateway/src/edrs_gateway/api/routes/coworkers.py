"""`/api/v1/personas/{personaId}/coworkers`: which personas work together and how they hand over."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from edrs_proto.persona.v1 import persona_pb2
from fastapi import APIRouter, Depends, Path, Response
from pydantic import ConfigDict, Field

from edrs_gateway.api.common import AUTHENTICATED, problem_responses, upstream_responses
from edrs_gateway.api.models import MULTI_LINE, SINGLE_LINE, ApiModel
from edrs_gateway.api.routes.personas import PersonaId, persona_stub, read_personas, write_personas
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx

router = APIRouter(prefix="/personas", tags=["personas"])

# The persona service's limits (Coworker).
RELATION_MAX, HANDOVER_MAX = 200, 2000


class SetCoworker(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "relation": "reviews my analyses",
                    "handover": "Send the draft with its sources; ask for a review by Friday.",
                }
            ]
        }
    )

    relation: str = Field(default="", max_length=RELATION_MAX, pattern=SINGLE_LINE)
    handover: str = Field(
        default="",
        max_length=HANDOVER_MAX,
        pattern=MULTI_LINE,
        description="When and how to hand work over to the co-worker",
    )


class CoworkerOut(ApiModel):
    persona_id: UUID
    coworker_id: UUID
    coworker_name: str
    coworker_role: str
    relation: str
    handover: str
    created_at: datetime

    @classmethod
    def of(cls, c: persona_pb2.Coworker) -> CoworkerOut:
        return cls(
            persona_id=UUID(c.persona_id),
            coworker_id=UUID(c.coworker_id),
            coworker_name=c.coworker_name,
            coworker_role=c.coworker_role,
            relation=c.relation,
            handover=c.handover,
            created_at=c.create_time.ToDatetime(tzinfo=UTC),
        )


class CoworkerList(ApiModel):
    coworkers: list[CoworkerOut]


CoworkerId = Annotated[UUID, Path(alias="coworkerId", description="The other persona's id")]
_ERRORS = {**problem_responses(*AUTHENTICATED, 404, 409), **upstream_responses()}


@router.get(
    "/{personaId}/coworkers",
    response_model=CoworkerList,
    summary="List a persona's co-workers",
    responses=_ERRORS,
)
async def list_coworkers(
    persona_id: PersonaId, ctx: Ctx, caller: Annotated[Principal, Depends(read_personas)]
) -> CoworkerList:
    reply = await persona_stub(ctx).ListCoworkers(
        persona_pb2.ListCoworkersRequest(persona_id=str(persona_id))
    )
    return CoworkerList(coworkers=[CoworkerOut.of(c) for c in reply.coworkers])


@router.put(
    "/{personaId}/coworkers/{coworkerId}",
    response_model=CoworkerOut,
    summary="Make two personas co-workers",
    description="Both directions; setting it again replaces `relation` and `handover`. 422 when "
    "a persona would be its own co-worker.",
    responses=_ERRORS,
)
async def set_coworker(
    persona_id: PersonaId,
    coworker_id: CoworkerId,
    body: SetCoworker,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_personas)],
) -> CoworkerOut:
    request = persona_pb2.SetCoworkerRequest(
        persona_id=str(persona_id),
        coworker_id=str(coworker_id),
        relation=body.relation.strip(),
        handover=body.handover.strip(),
    )
    return CoworkerOut.of(await persona_stub(ctx).SetCoworker(request))


@router.delete(
    "/{personaId}/coworkers/{coworkerId}",
    status_code=204,
    response_class=Response,
    summary="End a co-worker relation",
    description="Both directions; 404 when there is none.",
    responses=_ERRORS,
)
async def remove_coworker(
    persona_id: PersonaId,
    coworker_id: CoworkerId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_personas)],
) -> Response:
    request = persona_pb2.RemoveCoworkerRequest(
        persona_id=str(persona_id), coworker_id=str(coworker_id)
    )
    await persona_stub(ctx).RemoveCoworker(request)
    return Response(status_code=204)
