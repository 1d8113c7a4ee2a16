"""`/api/v1/api-keys`: the caller's tenant's API keys. The key itself is shown once, at creation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ConfigDict, Field, StrictInt, field_validator

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    client_ip,
    not_found,
    page_request,
    problem_responses,
)
from edrs_gateway.api.models import REQUIRED_LINE, ApiModel, PageOf
from edrs_gateway.api.problems import ApiError
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import ROLE_PERMISSIONS, Permission
from edrs_gateway.auth.principal import Principal, Role
from edrs_gateway.context import Ctx
from edrs_gateway.identity.api_keys import ApiKey
from edrs_gateway.identity.audit import actor_of

router = APIRouter(prefix="/api-keys", tags=["api keys"])

_EXAMPLE: dict[str, Any] = {
    "id": "0190d6a0-0000-7000-8000-000000000002",
    "name": "CI publisher",
    "prefix": "1a2b3c4d5e6f",
    "role": "integrator",
    "scopes": ["events:publish"],
    "expiresAt": "2099-01-01T00:00:00Z",
    "lastUsedAt": None,
    "createdAt": "2025-01-01T12:00:00Z",
}


class ApiKeyOut(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: UUID
    name: str
    prefix: str = Field(description="The part after `edrs_`: tells keys apart, not secret")
    role: Role
    scopes: list[Permission] = Field(description="Empty: everything the role allows")
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            role=key.role,
            scopes=[Permission(s) for s in key.scopes],
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            created_at=key.created_at,
        )


class CreatedApiKey(ApiKeyOut):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_EXAMPLE, "apiKey": "edrs_1a2b3c4d5e6f_Jx4...secret"}]}
    )

    api_key: str = Field(description="The key: shown this once, store it now")


class ApiKeyPage(PageOf):
    api_keys: list[ApiKeyOut]


class CreateApiKey(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "CI publisher",
                    "role": "integrator",
                    "scopes": ["events:publish"],
                    "expiresInDays": 90,
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200, pattern=REQUIRED_LINE)
    role: Role = "integrator"
    scopes: list[Permission] = Field(
        default_factory=list,
        max_length=len(Permission),
        description="Narrow the role's permissions to these; empty means all of the role's",
    )
    # Strict: JSON true is not the number 1.
    expires_in_days: StrictInt | None = Field(
        default=None, ge=1, le=3650, description="Expire this many days from now; none: never"
    )

    @field_validator("name")
    @classmethod
    def _stripped(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()


@router.get(
    "",
    response_model=ApiKeyPage,
    summary="List API keys",
    description="Active keys (revoked ones are gone), oldest first.",
    responses=problem_responses(*AUTHENTICATED),
)
async def list_api_keys(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(require(Permission.API_KEYS_READ))],
) -> ApiKeyPage:
    keys, token = await ctx.api_keys.list(UUID(caller.tenant_id), page.page_token, page.page_size)
    return ApiKeyPage(api_keys=[ApiKeyOut.of(k) for k in keys], next_page_token=token)


@router.post(
    "",
    status_code=201,
    response_model=CreatedApiKey,
    summary="Create an API key",
    description="The response holds the key itself, this once; only its SHA-256 is stored.",
    responses=problem_responses(400, *AUTHENTICATED),
)
async def create_api_key(
    request: Request,
    body: CreateApiKey,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.API_KEYS_WRITE))],
) -> CreatedApiKey:
    beyond = sorted(s.value for s in body.scopes if s not in ROLE_PERMISSIONS[body.role])
    if beyond:
        raise ApiError(
            422,
            "validation_failed",
            f"/scopes: the role {body.role!r} does not allow {', '.join(beyond)}",
            errors=[{"in": "body", "pointer": "/scopes", "detail": "scope beyond the role"}],
        )
    key, plaintext = await ctx.api_keys.create(
        UUID(caller.tenant_id),
        name=body.name,
        role=body.role,
        scopes=tuple(sorted({s.value for s in body.scopes})),
        expires_at=(
            datetime.now(UTC) + timedelta(days=body.expires_in_days)
            if body.expires_in_days
            else None
        ),
    )
    await ctx.audit.record(
        caller.tenant_id, "api_key.created", "success", actor=actor_of(caller),
        target=f"api_key:{key.id}",
        details={"name": key.name, "prefix": key.prefix, "role": key.role,
                 "scopes": list(key.scopes)},
        ip=client_ip(request),
    )  # fmt: skip
    return CreatedApiKey(**ApiKeyOut.of(key).model_dump(), api_key=plaintext)


@router.get(
    "/{apiKeyId}",
    response_model=ApiKeyOut,
    summary="Get an API key",
    description="Its description; the key itself is never shown again.",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_api_key(
    api_key_id: Annotated[UUID, Path(alias="apiKeyId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.API_KEYS_READ))],
) -> ApiKeyOut:
    key = await ctx.api_keys.get(UUID(caller.tenant_id), api_key_id)
    if key is None:
        raise not_found("API key", api_key_id)
    return ApiKeyOut.of(key)


@router.delete(
    "/{apiKeyId}",
    status_code=204,
    response_class=Response,
    summary="Revoke an API key",
    description="The key stops working at once, and so do the access tokens it obtained.",
    responses=problem_responses(*AUTHENTICATED, 404, 409),
)
async def revoke_api_key(
    request: Request,
    api_key_id: Annotated[UUID, Path(alias="apiKeyId")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(require(Permission.API_KEYS_WRITE))],
) -> Response:
    if caller.subject_kind == "api_key" and caller.subject_id == str(api_key_id):
        raise ApiError(
            409,
            "self_change_not_allowed",
            "a key cannot revoke itself; use another credential (or /auth/revoke for this token)",
        )
    key = await ctx.api_keys.revoke(UUID(caller.tenant_id), api_key_id)
    if key is None:
        raise not_found("API key", api_key_id)
    await ctx.end_sessions("api_key", key.id)
    await ctx.audit.record(
        caller.tenant_id, "api_key.revoked", "success", actor=actor_of(caller),
        target=f"api_key:{key.id}", details={"name": key.name, "prefix": key.prefix},
        ip=client_ip(request),
    )  # fmt: skip
    return Response(status_code=204)
