"""`/api/v1/auth`: exchange credentials for tokens, and revoke tokens."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Request, Response
from pydantic import ConfigDict, Field

from edrs_gateway.api.common import client_ip, problem_responses
from edrs_gateway.api.models import ApiModel
from edrs_gateway.api.problems import ApiError
from edrs_gateway.api.routes.users import EMAIL_PATTERN
from edrs_gateway.auth.dependencies import current_principal
from edrs_gateway.auth.login import LoginFailed
from edrs_gateway.auth.passwords import PASSWORD_MAX_LENGTH
from edrs_gateway.context import Ctx
from edrs_gateway.identity.bootstrap import (
    DEV_ADMIN_EMAIL,
    DEV_ADMIN_PASSWORD,
    development_tenant_id,
)

router = APIRouter(prefix="/auth", tags=["auth"])


class PasswordGrant(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "grantType": "password",
                    "tenantId": "0190d6a0-0000-7000-8000-000000000000",
                    "email": "admin@edrs.local",
                    "password": "correct horse battery staple",
                }
            ]
        }
    )

    grant_type: Literal["password"]
    tenant_id: UUID
    email: str = Field(min_length=1, max_length=254, pattern=EMAIL_PATTERN)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)


class ApiKeyGrant(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"grantType": "apiKey", "apiKey": "edrs_1a2b3c4d5e6f_s3cr3t..."}]
        }
    )

    grant_type: Literal["apiKey"]
    api_key: str = Field(min_length=1, max_length=200)


class RefreshTokenGrant(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"grantType": "refreshToken", "refreshToken": "q5Yc...opaque"}]
        }
    )

    grant_type: Literal["refreshToken"]
    refresh_token: str = Field(min_length=1, max_length=200)


TokenRequest = Annotated[
    PasswordGrant | ApiKeyGrant | RefreshTokenGrant, Field(discriminator="grant_type")
]


class TokenResponse(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accessToken": "eyJhbGciOiJFZERTQSIsImtpZCI6Ii4uLiJ9...",
                    "tokenType": "Bearer",
                    "expiresIn": 3600,
                    "refreshToken": "q5Yc...opaque",
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str | None = Field(
        default=None,
        description="Single use: each refresh returns a new one. None for API-key grants, "
        "which log in again with the key",
    )


class RevokeRequest(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"token": "q5Yc...opaque"}]})

    token: str = Field(min_length=1, max_length=4096, description="An access or refresh token")


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Get an access token",
    description="Exchange a password, an API key or a refresh token for a 1-hour access token. "
    "A password grant also returns a refresh token (single use, rotated on every refresh, its "
    "family lives 30 days at most); presenting a used refresh token revokes its whole family. "
    "Any failure is the same 401, whatever was wrong.",
    responses=problem_responses(400, 401, 422, 429),
)
async def issue_token(
    request: Request,
    grant: Annotated[TokenRequest, Body()],
    ctx: Ctx,
) -> TokenResponse:
    try:
        if isinstance(grant, PasswordGrant):
            issued = await ctx.authenticator.password_grant(
                grant.tenant_id, grant.email.strip(), grant.password, client_ip(request)
            )
        elif isinstance(grant, ApiKeyGrant):
            issued = await ctx.authenticator.api_key_grant(grant.api_key, client_ip(request))
        else:
            issued = await ctx.authenticator.refresh_grant(grant.refresh_token, client_ip(request))
    except LoginFailed as exc:
        raise ApiError(
            401, "invalid_grant", str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from None
    return TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
    )


@router.post(
    "/revoke",
    status_code=204,
    response_class=Response,
    summary="Revoke a token",
    description="Revoke an access token (refused everywhere until it expires) or a refresh "
    "token (its whole family). As RFC 7009 says, an unknown token is not an error.",
    responses=problem_responses(400, 422, 429),
)
async def revoke_token(
    request: Request,
    body: RevokeRequest,
    ctx: Ctx,
) -> Response:
    await ctx.authenticator.revoke(body.token, current_principal(request), client_ip(request))
    return Response(status_code=204)


class DevelopmentLogin(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenantId": "0190d6a0-0000-7000-8000-000000000000",
                    "email": "admin@edrs.local",
                    "password": "edrs-development-admin",
                }
            ]
        }
    )

    tenant_id: UUID
    email: str
    password: str | None = Field(
        description="The public default password while EDRS_GATEWAY_DEV_ADMIN_PASSWORD is unset; "
        "null when that variable sets another (never disclosed)"
    )


@router.get(
    "/development-login",
    response_model=DevelopmentLogin,
    summary="The development admin's login",
    description="Only while the gateway runs with EDRS_ENVIRONMENT=development (404 otherwise): "
    "the tenant and email of the admin it created on its first development start, for a "
    "password grant. `edrs chat` and `edrs dev up` log in with it beside a local fleet.",
    responses=problem_responses(404, 429),
)
async def development_login(ctx: Ctx) -> DevelopmentLogin:
    if ctx.settings.environment != "development":
        raise ApiError(
            404,
            "not_found",
            "there is no development login: the gateway does not run with "
            "EDRS_ENVIRONMENT=development",
        )
    tenant_id = await development_tenant_id(ctx.runtime.db)
    if tenant_id is None:
        raise ApiError(
            404,
            "not_found",
            "there is no development admin: tenants existed before the gateway's first "
            "development start",
        )
    return DevelopmentLogin(
        tenant_id=tenant_id,
        email=DEV_ADMIN_EMAIL,
        password=None if ctx.settings.dev_admin_password is not None else DEV_ADMIN_PASSWORD,
    )
