"""`/api/v1/personas`: the caller's tenant's personas, served by the persona service over gRPC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ConfigDict, Field, JsonValue, StrictInt, field_validator

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import MULTI_LINE, REQUIRED_LINE, SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(prefix="/personas", tags=["personas"])

# Module-level so tests (and only tests) can swap them with `app.dependency_overrides`.
read_personas = require(Permission.PERSONAS_READ)
write_personas = require(Permission.PERSONAS_WRITE)

# The persona service's limits (edrs_persona.server), so a bad body is refused here, naming the
# field, before any call. Control characters are refused as well: a name is shown on screens.
NAME_MAX, ROLE_MAX, TONE_MAX, INSTRUCTIONS_MAX = 200, 200, 500, 20_000
LIST_MAX_ITEMS, RESPONSIBILITY_MAX, SKILL_MAX = 50, 500, 200
KNOWLEDGE_COLLECTIONS_MAX = 20
_COLLECTIONS_DESCRIPTION = (
    "The knowledge collections the persona answers from: every turn searches them and the reply "
    "cites what it used"
)
_COLLECTIONS_IN = (
    f"{_COLLECTIONS_DESCRIPTION}. Ids or names, at most 20, each once, each existing in your "
    "tenant (a name is stored as its collection's id)"
)
CollectionRef = Annotated[str, Field(min_length=1, max_length=100, pattern=REQUIRED_LINE)]

_EXAMPLE_ID = "0190d6a0-0000-7000-8000-0000000000a1"
_EXAMPLE_BODY: dict[str, JsonValue] = {
    "name": "Ada",
    "role": "research analyst",
    "responsibilities": ["weekly market summary"],
    "skills": ["research", "sql"],
    "tone": "warm, concise",
    "instructions": "Cite a source for every figure.",
    "voice": {"name": "en_US-joe-medium", "speed": 1.1},
    "tools": ["knowledge_search"],
    "toolPolicy": {
        "write": "required",
        "destructive": "required",
        "maxRounds": 0,
        "choice": "auto",
    },
    "knowledgeCollections": ["0190d6a0-0000-7000-8000-0000000000d1"],
}

Responsibility = Annotated[
    str, Field(min_length=1, max_length=RESPONSIBILITY_MAX, pattern=REQUIRED_LINE)
]
Skill = Annotated[str, Field(min_length=1, max_length=SKILL_MAX, pattern=REQUIRED_LINE)]
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
TOOLS_MAX = 32
Approval = Literal["allowed", "required"]

_APPROVAL_TO_PROTO = {
    "allowed": persona_pb2.TOOL_APPROVAL_ALLOWED,
    "required": persona_pb2.TOOL_APPROVAL_REQUIRED,
}
_APPROVAL_OF: dict[int, Approval] = {
    persona_pb2.TOOL_APPROVAL_ALLOWED: "allowed",
    persona_pb2.TOOL_APPROVAL_REQUIRED: "required",
    persona_pb2.TOOL_APPROVAL_UNSPECIFIED: "required",
}
_CHOICE_TO_PROTO = {
    "auto": persona_pb2.TOOL_CHOICE_AUTO,
    "required": persona_pb2.TOOL_CHOICE_REQUIRED,
}


class ToolPolicy(ApiModel):
    """What the persona may do with its tools without a human (docs/integration.md, "Tool use in
    a turn"). Read-only tools always run."""

    write: Approval = Field(
        default="required",
        description="Calls of write tools: `allowed` runs them, `required` holds them for a "
        "human's approval",
    )
    destructive: Approval = Field(default="required", description="Calls of destructive tools")
    # Strict: pydantic would read `false` as 0 and "2" as 2.
    max_rounds: StrictInt = Field(
        default=0, ge=0, le=8, description="Rounds of tool calls per turn; 0 = the default (3)"
    )
    choice: Literal["auto", "required"] = Field(
        default="auto", description="`required`: the first round must call a tool"
    )

    def proto(self) -> persona_pb2.ToolPolicy:
        return persona_pb2.ToolPolicy(
            write=_APPROVAL_TO_PROTO[self.write],
            destructive=_APPROVAL_TO_PROTO[self.destructive],
            max_rounds=self.max_rounds,
            choice=_CHOICE_TO_PROTO[self.choice],
        )

    @classmethod
    def of(cls, p: persona_pb2.ToolPolicy) -> ToolPolicy:
        return cls(
            write=_APPROVAL_OF.get(p.write, "required"),
            destructive=_APPROVAL_OF.get(p.destructive, "required"),
            max_rounds=p.max_rounds,
            choice="required" if p.choice == persona_pb2.TOOL_CHOICE_REQUIRED else "auto",
        )


class PersonaVoice(ApiModel):
    """How the persona's replies are spoken in a turn by voice."""

    name: str = Field(
        default="",
        max_length=100,
        pattern=SINGLE_LINE,
        description="A voice the reasoning service offers (`GET /audio/voices` lists them); "
        "empty: its default voice",
    )
    speed: float = Field(default=1.0, ge=0.25, le=4.0, description="Speaking rate; 1 is normal")

    def to_proto(self) -> persona_pb2.PersonaVoice:
        return persona_pb2.PersonaVoice(name=self.name, speed=self.speed)


def _each_once(ids: list[str] | None) -> list[str] | None:
    if ids is not None and len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"collection {repeated} is named more than once")
    return ids


class CreatePersona(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_BODY]})

    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=REQUIRED_LINE)
    role: str = Field(
        min_length=1, max_length=ROLE_MAX, pattern=REQUIRED_LINE, description="Job title or role"
    )
    responsibilities: list[Responsibility] = Field(
        default_factory=list, max_length=LIST_MAX_ITEMS, description="What it is accountable for"
    )
    skills: list[Skill] = Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description="What it can do; used to route work to it",
    )
    tone: str = Field(
        default="", max_length=TONE_MAX, pattern=SINGLE_LINE, description="Voice of its replies"
    )
    instructions: str = Field(
        default="",
        max_length=INSTRUCTIONS_MAX,
        pattern=MULTI_LINE,
        description="Standing instructions prepended to its reasoning",
    )
    voice: PersonaVoice = Field(
        default_factory=PersonaVoice, description="How its replies are spoken"
    )
    tools: list[ToolName] = Field(
        default_factory=list,
        max_length=TOOLS_MAX,
        description="Names of the tenant's tools (`/api/v1/tools`) it may call",
    )
    tool_policy: ToolPolicy = Field(default_factory=ToolPolicy)
    knowledge_collections: list[CollectionRef] = Field(
        default_factory=list, max_length=KNOWLEDGE_COLLECTIONS_MAX, description=_COLLECTIONS_IN
    )

    _unique_collections = field_validator("knowledge_collections")(_each_once)


class UpdatePersona(ApiModel):
    """Fields left out (or null) keep their value; lists are replaced whole."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"tone": "formal", "skills": ["research", "python"]}]}
    )

    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX, pattern=REQUIRED_LINE)
    role: str | None = Field(default=None, min_length=1, max_length=ROLE_MAX, pattern=REQUIRED_LINE)
    responsibilities: list[Responsibility] | None = Field(default=None, max_length=LIST_MAX_ITEMS)
    skills: list[Skill] | None = Field(default=None, max_length=LIST_MAX_ITEMS)
    tone: str | None = Field(default=None, max_length=TONE_MAX, pattern=SINGLE_LINE)
    instructions: str | None = Field(default=None, max_length=INSTRUCTIONS_MAX, pattern=MULTI_LINE)
    voice: PersonaVoice | None = Field(default=None, description="Replaced whole")
    tools: list[ToolName] | None = Field(default=None, max_length=TOOLS_MAX)
    tool_policy: ToolPolicy | None = None
    knowledge_collections: list[CollectionRef] | None = Field(
        default=None,
        max_length=KNOWLEDGE_COLLECTIONS_MAX,
        description="Replaces the attached collections (ids or names); `[]` detaches them all",
    )

    _unique_collections = field_validator("knowledge_collections")(_each_once)


class PersonaOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    **_EXAMPLE_BODY,
                    "status": "active",
                    "createdAt": "2025-01-01T12:00:00Z",
                    "updatedAt": "2025-01-01T12:00:00Z",
                }
            ]
        }
    )

    id: UUID
    name: str
    role: str
    responsibilities: list[str]
    skills: list[str]
    tone: str
    instructions: str
    voice: PersonaVoice
    tools: list[str]
    tool_policy: ToolPolicy
    knowledge_collections: list[UUID] = Field(description=f"{_COLLECTIONS_DESCRIPTION}, by id")
    status: Literal["active", "archived"] = Field(
        description="`archived` personas are kept for history and take no new work"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p: persona_pb2.Persona) -> PersonaOut:
        return cls(
            id=UUID(p.id),
            name=p.name,
            role=p.role,
            responsibilities=list(p.responsibilities),
            skills=list(p.skills),
            tone=p.tone,
            instructions=p.instructions,
            voice=PersonaVoice(name=p.voice.name, speed=p.voice.speed or 1.0),
            tools=list(p.tools),
            tool_policy=ToolPolicy.of(p.tool_policy),
            knowledge_collections=[UUID(c) for c in p.knowledge_collections],
            status=_STATUS[p.status],
            created_at=_time(p.create_time),
            updated_at=_time(p.update_time),
        )


class PersonaPage(PageOf):
    personas: list[PersonaOut]


_STATUS: dict[int, Literal["active", "archived"]] = {
    persona_pb2.PERSONA_STATUS_ACTIVE: "active",
    persona_pb2.PERSONA_STATUS_ARCHIVED: "archived",
}


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def persona_stub(ctx: GatewayContext) -> persona_pb2_grpc.PersonaServiceAsyncStub:
    return ctx.runtime.peers.stub(persona_pb2_grpc.PersonaServiceStub)


# The `{personaId}` path parameter of every route under a persona.
PersonaId = Annotated[UUID, Path(alias="personaId", examples=[_EXAMPLE_ID])]


_STRING = {"schema": {"type": "string"}}
_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}


@router.get(
    "",
    response_model=PersonaPage,
    summary="List personas",
    description="The tenant's active personas (and archived ones with `includeArchived=true`), "
    "oldest first, one page at a time.",
    responses=_ERRORS,
)
async def list_personas(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_personas)],
    include_archived: Annotated[
        bool, Query(alias="includeArchived", description="Also list archived personas")
    ] = False,
) -> PersonaPage:
    request = persona_pb2.ListPersonasRequest(include_archived=include_archived)
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await persona_stub(ctx).ListPersonas(request)
    return PersonaPage(
        personas=[PersonaOut.of(p) for p in reply.personas],
        next_page_token=reply.page.next_page_token,
    )


@router.post(
    "",
    status_code=201,
    response_model=PersonaOut,
    summary="Create a persona",
    description="Creates an active persona; `Location` names it.",
    responses={
        201: {"headers": {"Location": {"description": "Path of the new persona", **_STRING}}},
        **_ERRORS,
    },
)
async def create_persona(
    body: CreatePersona,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_personas)],
) -> PersonaOut:
    message = persona_pb2.CreatePersonaRequest(
        name=body.name,
        role=body.role,
        responsibilities=body.responsibilities,
        skills=body.skills,
        tone=body.tone,
        instructions=body.instructions,
        voice=body.voice.to_proto(),
        tools=body.tools,
        tool_policy=body.tool_policy.proto(),
        knowledge_collections=body.knowledge_collections,
    )
    created = PersonaOut.of(await persona_stub(ctx).CreatePersona(message))
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.id}"
    return created


@router.get(
    "/{personaId}",
    response_model=PersonaOut,
    summary="Get a persona",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_persona(
    persona_id: PersonaId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_personas)],
) -> PersonaOut:
    return PersonaOut.of(
        await persona_stub(ctx).GetPersona(persona_pb2.GetPersonaRequest(id=str(persona_id)))
    )


@router.patch(
    "/{personaId}",
    response_model=PersonaOut,
    summary="Change a persona",
    description="Only the fields given change (lists are replaced whole); an empty body changes "
    "nothing. An archived persona cannot be changed (409 `failed_precondition`).",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def update_persona(
    persona_id: PersonaId,
    body: UpdatePersona,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_personas)],
) -> PersonaOut:
    changed = sorted(k for k, v in body.model_dump().items() if v is not None)
    if not changed:
        persona = await persona_stub(ctx).GetPersona(
            persona_pb2.GetPersonaRequest(id=str(persona_id))
        )
        return PersonaOut.of(persona)
    update = persona_pb2.UpdatePersonaRequest(
        persona=persona_pb2.Persona(
            id=str(persona_id),
            name=body.name or "",
            role=body.role or "",
            responsibilities=body.responsibilities or [],
            skills=body.skills or [],
            tone=body.tone or "",
            instructions=body.instructions or "",
            voice=body.voice.to_proto() if body.voice else None,
            tools=body.tools or [],
            tool_policy=body.tool_policy.proto() if body.tool_policy else None,
            knowledge_collections=body.knowledge_collections or [],
        ),
        update_mask=FieldMask(paths=changed),
    )
    return PersonaOut.of(await persona_stub(ctx).UpdatePersona(update))


@router.post(
    "/{personaId}/archive",
    response_model=PersonaOut,
    summary="Archive a persona",
    description="Kept for history, takes no new conversations; archiving twice changes nothing.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def archive_persona(
    persona_id: PersonaId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_personas)],
) -> PersonaOut:
    archived = await persona_stub(ctx).ArchivePersona(
        persona_pb2.ArchivePersonaRequest(id=str(persona_id))
    )
    return PersonaOut.of(archived)
