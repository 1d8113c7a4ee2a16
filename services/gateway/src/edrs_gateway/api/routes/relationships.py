"""`/api/v1/personas/{personaId}/relationships/me`: what a persona knows about the caller, which the
caller may read, correct, or have forgotten."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_proto.persona.v1 import persona_pb2
from fastapi import APIRouter, Depends, Path, Response
from pydantic import ConfigDict, Field

from edrs_gateway.api.common import AUTHENTICATED, problem_responses, upstream_responses
from edrs_gateway.api.models import REQUIRED_LINE, ApiModel
from edrs_gateway.api.routes.conversations import ConversationOut
from edrs_gateway.api.routes.personas import PersonaId, persona_stub
from edrs_gateway.api.turns import FactOut, user_id_of
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx

router = APIRouter(prefix="/personas", tags=["relationships"])

read_own = require(Permission.CONVERSATIONS_READ)
write_own = require(Permission.CONVERSE)

# The persona service's limits (UpdateRelationshipRequest, memory's AssertFact).
NOTES_MAX, NOTE_MAX = 50, 500
ATTRIBUTE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
VALUE_MAX = 500

Note = Annotated[str, Field(min_length=1, max_length=NOTE_MAX, pattern=REQUIRED_LINE)]


class RelationshipOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "personaId": "0190d6a0-0000-7000-8000-0000000000a1",
                    "userId": "0190d6a0-0000-7000-8000-000000000001",
                    "preferences": ["bullet points"],
                    "likes": [],
                    "dislikes": [],
                    "notes": ["Prefers short answers."],
                    "facts": [
                        {
                            "id": "0190d6a0-0000-7000-8000-0000000000f2",
                            "attribute": "manager",
                            "value": "Omar",
                            "statement": "my manager is now Omar",
                            "source": "rule",
                            "validFrom": "2025-01-02T09:00:00Z",
                            "validTo": None,
                            "supersededBy": None,
                            "status": "current",
                        }
                    ],
                    "interactionCount": 4,
                    "firstInteractionAt": "2025-01-01T09:00:00Z",
                    "lastInteractionAt": "2025-01-02T09:00:00Z",
                    "recentConversations": [],
                }
            ]
        }
    )

    persona_id: UUID
    user_id: str = Field(description="You: your user id, or the API key's id")
    preferences: list[str]
    likes: list[str]
    dislikes: list[str]
    notes: list[str] = Field(description="Personality notes the persona keeps; yours to edit")
    facts: list[FactOut] = Field(
        description="Every fact, current and superseded (with `validFrom`/`validTo`)"
    )
    interaction_count: int
    first_interaction_at: datetime | None
    last_interaction_at: datetime | None
    recent_conversations: list[ConversationOut]

    @classmethod
    def of(cls, r: persona_pb2.Relationship) -> RelationshipOut:
        def when(
            field: Literal["first_interaction_time", "last_interaction_time"],
        ) -> datetime | None:
            return getattr(r, field).ToDatetime(tzinfo=UTC) if r.HasField(field) else None

        return cls(
            persona_id=UUID(r.persona_id),
            user_id=r.user_id,
            preferences=list(r.preferences),
            likes=list(r.likes),
            dislikes=list(r.dislikes),
            notes=list(r.notes),
            facts=[FactOut.of(f) for f in r.facts],
            interaction_count=r.interaction_count,
            first_interaction_at=when("first_interaction_time"),
            last_interaction_at=when("last_interaction_time"),
            recent_conversations=[ConversationOut.of(c) for c in r.recent_conversations],
        )


class UpdateRelationship(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"notes": ["Likes dry humour."]}]})

    notes: list[Note] = Field(max_length=NOTES_MAX, description="Replaces the notes")


class StateFact(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"attribute": "manager", "value": "Omar"}]}
    )

    attribute: str = Field(
        pattern=ATTRIBUTE_PATTERN,
        description="snake_case: `manager`, `name`, `employer`, `job_title`, `location`, "
        "`timezone` (one current value each), `preference`, `like`, `dislike`, or your own",
    )
    value: str = Field(min_length=1, max_length=VALUE_MAX, pattern=REQUIRED_LINE)


class ForgottenOut(ApiModel):
    facts_deleted: int
    episodes_deleted: int
    messages_deleted: int


_ERRORS = {**problem_responses(*AUTHENTICATED, 404, 409), **upstream_responses()}


@router.get(
    "/{personaId}/relationships/me",
    response_model=RelationshipOut,
    summary="What the persona knows about you",
    description="Preferences, likes, dislikes, notes, facts with their history, and your recent "
    "conversations. Empty (not 404) before your first conversation.",
    responses=_ERRORS,
)
async def get_relationship(
    persona_id: PersonaId, ctx: Ctx, caller: Annotated[Principal, Depends(read_own)]
) -> RelationshipOut:
    request = persona_pb2.GetRelationshipRequest(
        persona_id=str(persona_id), user_id=user_id_of(caller)
    )
    return RelationshipOut.of(await persona_stub(ctx).GetRelationship(request))


@router.patch(
    "/{personaId}/relationships/me",
    response_model=RelationshipOut,
    summary="Replace the persona's notes about you",
    responses=_ERRORS,
)
async def update_relationship(
    persona_id: PersonaId,
    body: UpdateRelationship,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_own)],
) -> RelationshipOut:
    request = persona_pb2.UpdateRelationshipRequest(
        persona_id=str(persona_id), user_id=user_id_of(caller), notes=body.notes
    )
    return RelationshipOut.of(await persona_stub(ctx).UpdateRelationship(request))


@router.delete(
    "/{personaId}/relationships/me",
    response_model=ForgottenOut,
    summary="Make the persona forget you",
    description="Deletes your relationship, facts, memories, and your conversations with this "
    "persona. Cannot be undone.",
    responses=_ERRORS,
)
async def forget_relationship(
    persona_id: PersonaId, ctx: Ctx, caller: Annotated[Principal, Depends(write_own)]
) -> ForgottenOut:
    request = persona_pb2.ForgetRelationshipRequest(
        persona_id=str(persona_id), user_id=user_id_of(caller)
    )
    done = await persona_stub(ctx).ForgetRelationship(request)
    return ForgottenOut(
        facts_deleted=done.facts_deleted,
        episodes_deleted=done.episodes_deleted,
        messages_deleted=done.messages_deleted,
    )


@router.post(
    "/{personaId}/relationships/me/facts",
    response_model=RelationshipOut,
    summary="State or correct a fact about you",
    description="The new fact becomes current; a current fact it contradicts (same single-valued "
    "attribute) is superseded, kept with its `validTo`, not deleted.",
    responses=_ERRORS,
)
async def correct_fact(
    persona_id: PersonaId,
    body: StateFact,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_own)],
) -> RelationshipOut:
    request = persona_pb2.CorrectFactRequest(
        persona_id=str(persona_id),
        user_id=user_id_of(caller),
        attribute=body.attribute,
        value=body.value.strip(),
    )
    return RelationshipOut.of(await persona_stub(ctx).CorrectFact(request))


@router.delete(
    "/{personaId}/relationships/me/facts/{factId}",
    status_code=204,
    response_class=Response,
    summary="Delete a fact about you",
    responses=_ERRORS,
)
async def delete_fact(
    persona_id: PersonaId,
    fact_id: Annotated[UUID, Path(alias="factId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_own)],
) -> Response:
    request = persona_pb2.DeleteFactRequest(
        persona_id=str(persona_id), user_id=user_id_of(caller), fact_id=str(fact_id)
    )
    await persona_stub(ctx).DeleteFact(request)
    return Response(status_code=204)
