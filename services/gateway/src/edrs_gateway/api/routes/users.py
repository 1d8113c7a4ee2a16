"""`/api/v1/users`: the users of the caller's tenant. Only admins change users or their roles."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ConfigDict, Field

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    client_ip,
    not_found,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.api.problems import ApiError
from edrs_gateway.api.routes.api_keys import ApiKeyOut
from edrs_gateway.api.routes.audit import AuditEventOut
from edrs_gateway.api.routes.conversations import ConversationOut, MessageOut
from edrs_gateway.api.turns import FactOut, MemoryOut
from edrs_gateway.auth.dependencies import require, require_self_or
from edrs_gateway.auth.passwords import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal, Role
from edrs_gateway.context import Ctx
from edrs_gateway.identity.audit import actor_of
from edrs_gateway.identity.users import User

router = APIRouter(prefix="/users", tags=["users"])

# Deliberately loose: the mail server is the judge of an address; this catches typos and junk.
# Explicit ranges, not \s: the schema is read by ECMA-262 engines (clients, fuzzers) and by Python,
# whose \s also matches characters like U+0085, so the two would disagree about what is valid.
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"
_EXAMPLE_ID = "0190d6a0-0000-7000-8000-000000000001"


class UserOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "email": "ann@example.com",
                    "displayName": "Ann",
                    "role": "member",
                    "lockedUntil": None,
                    "createdAt": "2025-01-01T12:00:00Z",
                    "updatedAt": "2025-01-01T12:00:00Z",
                }
            ]
        }
    )

    id: UUID
    email: str
    display_name: str
    role: Role
    locked_until: datetime | None = Field(description="Set while locked after failed logins")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            role=user.role,
            locked_until=user.locked_until,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class UserPage(PageOf):
    users: list[UserOut]


class CreateUser(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ann@example.com",
                    "displayName": "Ann",
                    "password": "correct horse battery staple",
                    "role": "member",
                }
            ]
        }
    )

    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)
    display_name: str = Field(default="", max_length=200, pattern=SINGLE_LINE)
    password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
    role: Role = Field(default="member", description="Only admins create users, in their tenant")


class UpdateUser(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"displayName": "Ann B.", "role": "viewer"}]}
    )

    display_name: str | None = Field(default=None, max_length=200, pattern=SINGLE_LINE)
    password: str | None = Field(
        default=None,
        min_length=PASSWORD_MIN_LENGTH,
        max_length=PASSWORD_MAX_LENGTH,
        description="A new password also lifts a lockout and ends the user's sessions",
    )
    role: Role | None = Field(default=None, description="A new role ends the user's sessions")


@router.get(
    "",
    response_model=UserPage,
    summary="List users",
    responses=problem_responses(*AUTHENTICATED),
)
async def list_users(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(require(Permission.USERS_READ))],
) -> UserPage:
    users, token = await ctx.users.list(UUID(caller.tenant_id), page.page_token, page.page_size)
    return UserPage(users=[UserOut.of(u) for u in users], next_page_token=token)


@router.post(
    "",
    status_code=201,
    response_model=UserOut,
    summary="Create a user",
    responses=problem_responses(400, *AUTHENTICATED, 409),
)
async def create_user(
    request: Request,
    body: CreateUser,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.USERS_WRITE))],
) -> UserOut:
    user = await ctx.users.create(
        UUID(caller.tenant_id),
        email=body.email.strip(),
        display_name=body.display_name.strip(),
        password_hash=await ctx.passwords.hash(body.password),
        role=body.role,
    )
    await ctx.audit.record(
        caller.tenant_id, "user.created", "success", actor=actor_of(caller),
        target=f"user:{user.id}", details={"role": user.role}, ip=client_ip(request),
    )  # fmt: skip
    return UserOut.of(user)


@router.get(
    "/{userId}",
    response_model=UserOut,
    summary="Get a user",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_user(
    user_id: Annotated[UUID, Path(alias="userId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.USERS_READ))],
) -> UserOut:
    user = await ctx.users.get(UUID(caller.tenant_id), user_id)
    if user is None:
        raise not_found("user", user_id)
    return UserOut.of(user)


@router.patch(
    "/{userId}",
    response_model=UserOut,
    summary="Change a user",
    description="Only the fields given change; an empty body changes nothing.",
    responses=problem_responses(400, *AUTHENTICATED, 404, 409),
)
async def update_user(
    request: Request,
    user_id: Annotated[UUID, Path(alias="userId")],
    body: UpdateUser,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.USERS_WRITE))],
) -> UserOut:
    tenant_id = UUID(caller.tenant_id)
    before = await ctx.users.get(tenant_id, user_id)
    if before is None:
        raise not_found("user", user_id)
    if _is_self(caller, user_id) and (body.role is not None or body.password is not None):
        raise _self_change("change your own role or password")
    changed = sorted(k for k, v in body.model_dump(by_alias=True).items() if v is not None)
    if not changed:
        return UserOut.of(before)
    user = await ctx.users.update(
        tenant_id,
        user_id,
        display_name=body.display_name.strip() if body.display_name is not None else None,
        password_hash=await ctx.passwords.hash(body.password) if body.password else None,
        role=body.role,
    )
    if user is None:
        raise not_found("user", user_id)
    if body.password is not None or (body.role is not None and body.role != before.role):
        await ctx.end_sessions("user", user.id)
    details: dict[str, object] = {"changed": changed}
    if body.role is not None:
        details |= {"roleBefore": before.role, "role": user.role}
    await ctx.audit.record(
        caller.tenant_id, "user.updated", "success", actor=actor_of(caller),
        target=f"user:{user.id}", details=details, ip=client_ip(request),
    )  # fmt: skip
    return UserOut.of(user)


@router.delete(
    "/{userId}",
    status_code=204,
    response_class=Response,
    summary="Delete a user, and erase what the fleet holds about them",
    description="Deletes the user and ends their sessions: their tokens stop working at once. "
    "In the same transaction the gateway publishes `gateway.user_deleted`; memory and persona "
    "then erase the user's episodes, facts, working memory, relationships and conversations "
    "(each publishes `*.user_erased` with what it erased), even if they were down at the time. "
    "Audit entries stay but no longer name the user (`user:erased`).",
    responses=problem_responses(*AUTHENTICATED, 404, 409),
)
async def delete_user(
    request: Request,
    user_id: Annotated[UUID, Path(alias="userId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.USERS_WRITE))],
) -> Response:
    if _is_self(caller, user_id):
        raise _self_change("delete yourself")
    deleted = await ctx.delete_user(
        UUID(caller.tenant_id), user_id, actor=actor_of(caller), ip=client_ip(request)
    )
    if not deleted:
        raise not_found("user", user_id)
    return Response(status_code=204)


# The newest audit entries an export carries (the audit log itself pages through them all).
EXPORT_AUDIT_LIMIT = 1000


class ExportedRelationship(ApiModel):
    """What one persona knows about the user: its notes, interactions and facts."""

    persona_id: UUID
    notes: list[str]
    interaction_count: int
    first_interaction_at: datetime | None
    last_interaction_at: datetime | None
    facts: list[FactOut] = Field(description="Current and superseded, with `validFrom`/`validTo`")


class ExportedEpisode(MemoryOut):
    persona_id: UUID


class ExportedWorkingItem(ApiModel):
    id: UUID
    persona_id: UUID
    conversation_id: str
    text: str
    priority: int
    kind: str
    role: str
    created_at: datetime
    expires_at: datetime


class ExportedConversation(ConversationOut):
    messages: list[MessageOut] = Field(description="Every message, oldest first")


class UserExport(ApiModel):
    """Everything the fleet holds about one user (a data-subject access request)."""

    exported_at: datetime
    user: UserOut
    api_keys: list[ApiKeyOut] = Field(
        description="Metadata of the API keys the user created (never a secret)"
    )
    audit_events: list[AuditEventOut] = Field(
        description=f"Entries naming the user as actor or target, newest first (at most "
        f"{EXPORT_AUDIT_LIMIT})"
    )
    relationships: list[ExportedRelationship] = Field(
        description="One per persona that knows the user"
    )
    episodes: list[ExportedEpisode] = Field(description="Episodic memory, oldest first")
    working_memory: list[ExportedWorkingItem]
    conversations: list[ExportedConversation] = Field(
        description="Every conversation with every persona, with its messages"
    )


def _relationships(
    held: persona_pb2.ExportUserResponse, remembered: memory_pb2.ExportUserResponse
) -> list[ExportedRelationship]:
    """Persona's relationships with memory's facts, by persona (facts may come before any reply)."""
    by_persona: dict[str, ExportedRelationship] = {}
    for r in held.relationships:
        by_persona[r.persona_id] = ExportedRelationship(
            persona_id=UUID(r.persona_id),
            notes=list(r.notes),
            interaction_count=r.interaction_count,
            first_interaction_at=_when(r, "first_interaction_time"),
            last_interaction_at=_when(r, "last_interaction_time"),
            facts=[],
        )
    for f in remembered.facts:
        relationship = by_persona.setdefault(
            f.persona_id,
            ExportedRelationship(
                persona_id=UUID(f.persona_id),
                notes=[],
                interaction_count=0,
                first_interaction_at=None,
                last_interaction_at=None,
                facts=[],
            ),
        )
        relationship.facts.append(FactOut.of(f))
    return list(by_persona.values())


def _when(
    message: persona_pb2.Relationship,
    field: Literal["first_interaction_time", "last_interaction_time"],
) -> datetime | None:
    return getattr(message, field).ToDatetime(tzinfo=UTC) if message.HasField(field) else None


@router.get(
    "/{userId}/export",
    response_model=UserExport,
    summary="Export everything the fleet holds about a user",
    description="A data-subject access request: the user's record (no password hash), the "
    "metadata of API keys they created, the audit entries naming them, and from the persona "
    "and memory services their relationships and facts (with history), episodes, working "
    "memory and conversations with every message. Admins export any user of their tenant; "
    "anyone may export themself.",
    responses={**problem_responses(*AUTHENTICATED, 404), **upstream_responses()},
)
async def export_user(
    user_id: Annotated[UUID, Path(alias="userId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require_self_or(Permission.USERS_READ))],
) -> UserExport:
    tenant_id = UUID(caller.tenant_id)
    user = await ctx.users.get(tenant_id, user_id)
    if user is None:
        raise not_found("user", user_id)
    subject = f"user:{user_id}"
    request = {"user_id": str(user_id)}
    held, remembered, audit_events = await asyncio.gather(
        ctx.runtime.peers.stub(persona_pb2_grpc.PersonaServiceStub).ExportUser(
            persona_pb2.ExportUserRequest(**request)
        ),
        ctx.runtime.peers.stub(memory_pb2_grpc.MemoryServiceStub).ExportUser(
            memory_pb2.ExportUserRequest(**request)
        ),
        ctx.audit.of_subject(
            tenant_id, [subject, f"email:{user.email.lower()}"], EXPORT_AUDIT_LIMIT
        ),
    )
    created_keys = [
        UUID(e.target.removeprefix("api_key:"))
        for e in audit_events
        if e.action == "api_key.created" and e.actor == subject
    ]
    keys = await asyncio.gather(*(ctx.api_keys.get(tenant_id, i) for i in created_keys))
    return UserExport(
        exported_at=datetime.now(UTC),
        user=UserOut.of(user),
        api_keys=[ApiKeyOut.of(k) for k in keys if k is not None],
        audit_events=[AuditEventOut.of(e) for e in audit_events],
        relationships=_relationships(held, remembered),
        episodes=[
            ExportedEpisode(persona_id=UUID(m.persona_id), **MemoryOut.of(m).model_dump())
            for m in remembered.episodes
        ],
        working_memory=[
            ExportedWorkingItem(
                id=UUID(i.id),
                persona_id=UUID(i.persona_id),
                conversation_id=i.conversation_id,
                text=i.text,
                priority=i.priority,
                kind=i.kind,
                role=i.role,
                created_at=i.create_time.ToDatetime(tzinfo=UTC),
                expires_at=i.expire_time.ToDatetime(tzinfo=UTC),
            )
            for i in remembered.working_items
        ],
        conversations=[
            ExportedConversation(
                **ConversationOut.of(c.conversation).model_dump(),
                messages=[MessageOut.of(m) for m in c.messages],
            )
            for c in held.conversations
        ],
    )


def _is_self(caller: Principal, user_id: UUID) -> bool:
    return caller.subject_kind == "user" and caller.subject_id == str(user_id)


def _self_change(what: str) -> ApiError:
    # Either would end the session making the request, halfway through an admin's work;
    # another admin does it (and the last admin is protected anyway).
    return ApiError(
        409, "self_change_not_allowed", f"an admin cannot {what} here; ask another admin"
    )
