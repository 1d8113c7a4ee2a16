"""`require(permission)`: the FastAPI dependency every protected route declares.

401 (with `WWW-Authenticate: Bearer`) when the caller is not authenticated, 403 (audited) when
their role or the API key's scopes do not allow `permission`; else the caller's Principal, whose
tenant every call the route makes to a fleet service then carries (`act_as`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

from edrs_core.context import client_id_var
from fastapi import Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edrs_gateway.api.problems import ApiError
from edrs_gateway.auth.middleware import AUTH_ERROR, PRINCIPAL
from edrs_gateway.auth.permissions import Permission, allowed
from edrs_gateway.auth.principal import Principal
from edrs_gateway.identity.audit import actor_of

# Only documents the scheme in OpenAPI (and the docs' "Authorize" button); the middleware has
# already verified the token by the time a dependency runs.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="An access token from `POST /api/v1/auth/token`.",
)


def current_principal(request: Request) -> Principal | None:
    """The verified caller, or None when the request carries no valid token."""
    principal: Principal | None = request.scope.get("state", {}).get(PRINCIPAL)
    return principal


def may(principal: Principal, permission: Permission) -> bool:
    """The role allows it, and the token's scopes (when it has any) include it."""
    return allowed(principal.role, permission) and (
        not principal.scopes or permission.value in principal.scopes
    )


def unauthenticated(request: Request) -> ApiError:
    reason = request.scope.get("state", {}).get(AUTH_ERROR)
    # RFC 6750: say `invalid_token` only when a token was presented.
    quoted = str(reason).replace('"', "'")
    challenge = (
        f'Bearer error="invalid_token", error_description="{quoted}"' if reason else "Bearer"
    )
    return ApiError(
        401,
        "unauthenticated",
        reason or "this endpoint needs an access token: Authorization: Bearer <token>",
        headers={"WWW-Authenticate": challenge},
    )


def act_as(principal: Principal) -> None:
    """Bind the principal's tenant for the rest of the request. Calls to fleet services carry the
    principal's fleet identity token, which the authentication middleware bound and which names
    this same tenant (never a value the client sent). Set, not reset: the binding lives in the request's own context, which ends with it.
    Must run in the request's task (an `async def` dependency), not in a thread."""
    client_id_var.set(principal.tenant_id)


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    ) -> Principal:
        principal = current_principal(request)
        if principal is None:
            raise unauthenticated(request)
        if not may(principal, permission):
            ctx = request.app.state.ctx
            await ctx.audit.record(
                principal.tenant_id,
                "permission.denied",
                "denied",
                actor=actor_of(principal),
                target=f"{request.method} {request.url.path}",
                details={"permission": permission.value, "role": principal.role},
                ip=request.client.host if request.client else None,
            )
            raise ApiError(
                403,
                "forbidden",
                f"the role {principal.role!r} (or this key's scopes) does not allow "
                f"{permission.value!r}",
            )
        act_as(principal)
        return principal

    return dependency


def require_self_or(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """As `require(permission)`, except that a user acting on their own record (the route's
    `userId` path parameter) needs no permission: anyone may see what is held about them."""
    checked = require(permission)

    async def dependency(
        request: Request,
        user_id: Annotated[UUID, Path(alias="userId")],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    ) -> Principal:
        principal = current_principal(request)
        if (
            principal is not None
            and principal.subject_kind == "user"
            and principal.subject_id == str(user_id)
        ):
            act_as(principal)
            return principal
        return await checked(request, credentials)

    return dependency
