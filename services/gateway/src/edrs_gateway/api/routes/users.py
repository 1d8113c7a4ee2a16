"""`/api/v1/users`: the users of the caller's tenant. Only admins change users or their roles."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ConfigDict, Field

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    client_ip,
    not_found,
    page_request,
    problem_responses,
)
from edrs_gateway.api.models import SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.api.problems import ApiError
from edrs_gateway.auth.dependencies import require
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
    summary="Delete a user",
    description="Deletes the user and ends their sessions: their tokens stop working at once.",
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
    if not await ctx.users.delete(UUID(caller.tenant_id), user_id):
        raise not_found("user", user_id)
    await ctx.end_sessions("user", user_id)
    await ctx.audit.record(
        caller.tenant_id, "user.deleted", "success", actor=actor_of(caller),
        target=f"user:{user_id}", ip=client_ip(request),
    )  # fmt: skip
    return Response(status_code=204)


def _is_self(caller: Principal, user_id: UUID) -> bool:
    return caller.subject_kind == "user" and caller.subject_id == str(user_id)


def _self_change(what: str) -> ApiError:
    # Either would end the session making the request, halfway through an admin's work;
    # another admin does it (and the last admin is protected anyway).
    return ApiError(
        409, "self_change_not_allowed", f"an admin cannot {what} here; ask another admin"
    )
