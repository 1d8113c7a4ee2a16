"""`/api/v1/personas/{personaId}/memories`: what a persona remembers of the caller, best match first."""

from __future__ import annotations

from typing import Annotated

from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2
from fastapi import APIRouter, Depends, Query

from edrs_gateway.api.common import AUTHENTICATED, problem_responses, upstream_responses
from edrs_gateway.api.models import SINGLE_LINE, ApiModel
from edrs_gateway.api.routes.personas import PersonaId, persona_stub
from edrs_gateway.api.turns import ScoredMemoryOut, user_id_of
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx

router = APIRouter(prefix="/personas", tags=["relationships"])

read_own = require(Permission.CONVERSATIONS_READ)

QUERY_MAX, LIMIT_MAX = 2000, 50


class MemoryList(ApiModel):
    memories: list[ScoredMemoryOut]


@router.get(
    "/{personaId}/memories",
    response_model=MemoryList,
    summary="What the persona remembers of you",
    description="Your episodes with this persona that best answer `query`, best first, with the "
    "parts of each score (recency, importance, relevance). Without a query, by recency and "
    "importance.",
    responses={**problem_responses(*AUTHENTICATED, 404), **upstream_responses()},
)
async def recall(
    persona_id: PersonaId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_own)],
    query: Annotated[
        str, Query(max_length=QUERY_MAX, pattern=SINGLE_LINE, description="What to look for")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX, description="At most this many")] = 10,
) -> MemoryList:
    # Memory keeps no personas: asking the persona service first makes another tenant's (or
    # an unknown) persona a 404 here as on every other route, rather than an empty list.
    await persona_stub(ctx).GetPersona(persona_pb2.GetPersonaRequest(id=str(persona_id)))
    request = memory_pb2.RecallRequest(
        persona_id=str(persona_id), user_id=user_id_of(caller), query=query, limit=limit
    )
    reply = await ctx.runtime.peers.stub(memory_pb2_grpc.MemoryServiceStub).Recall(request)
    return MemoryList(memories=[ScoredMemoryOut.of(m) for m in reply.memories])
