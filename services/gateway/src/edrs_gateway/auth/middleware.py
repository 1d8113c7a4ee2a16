"""ASGI middleware that verifies a `Bearer` token and records who is calling in the request scope.

It never answers by itself: it stores the Principal in `scope["state"]["principal"]`, or why the
token was refused in `scope["state"]["auth_error"]`, and lets the request through. Routes decide
with `require(...)`; the rate-limit, idempotency and DLP middlewares read the principal from there.
For an authenticated request it also binds the principal's fleet identity (auth/fleet_tokens.py),
so every call to a service made while serving the request carries it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from edrs_core.context import acting_as
from starlette.types import ASGIApp, Receive, Scope, Send

from edrs_gateway.auth.fleet_tokens import FleetTokens
from edrs_gateway.auth.principal import Principal
from edrs_gateway.auth.revocations import TokenRevocations
from edrs_gateway.auth.tokens import InvalidToken, TokenService, VerifiedToken

PRINCIPAL = "principal"
AUTH_ERROR = "auth_error"


class RevocationCheck(Protocol):
    """Whether a verified token of this request is revoked. The rate limiter's
    (edge/ratelimit.py, RevocationCheckWithLimit) also takes the request's rate-limit decision in
    the same Redis round trip."""

    async def __call__(self, scope: Scope, token: VerifiedToken, /) -> bool: ...


class AuthenticationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenService,
        revocations: TokenRevocations,
        fleet_tokens: FleetTokens,
        api_key_paths: tuple[str, ...] = (),
        api_keys: Callable[[str], Awaitable[Principal | None]] | None = None,
        revocation_check: RevocationCheck | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.revocations = revocations
        self.is_revoked = revocation_check or self._is_revoked
        self.fleet_tokens = fleet_tokens
        # Paths whose bearer may be an API key itself (/api/v1/mcp: MCP clients send a static
        # header), checked as `POST /auth/token` checks a key.
        self.api_key_paths = api_key_paths
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A WebSocket authenticates itself (header, query or subprotocol: api/routes/ws.py).
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            state[PRINCIPAL] = None
            state[AUTH_ERROR] = None
            header = _authorization(scope)
            if header is not None:
                try:
                    if scope.get("path") in self.api_key_paths:
                        state[PRINCIPAL] = await self._api_key(header)
                    else:
                        state[PRINCIPAL] = await self._authenticate(scope, header)
                except InvalidToken as exc:
                    state[AUTH_ERROR] = str(exc)
            if (principal := state[PRINCIPAL]) is not None:
                with acting_as(await self.fleet_tokens.for_principal(principal)):
                    await self.app(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _api_key(self, header: str) -> Principal:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip() or self.api_keys is None:
            raise InvalidToken("the Authorization header must be 'Bearer <API key>'")
        principal = await self.api_keys(key.strip())
        if principal is None:
            raise InvalidToken("the API key is not valid (unknown, revoked or expired)")
        return principal

    async def _authenticate(self, scope: Scope, header: str) -> Principal:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
        verified = await self.tokens.verify(token.strip())
        if await self.is_revoked(scope, verified):
            raise InvalidToken("the token has been revoked")
        return verified.principal

    async def _is_revoked(self, scope: Scope, token: VerifiedToken) -> bool:
        return await self.revocations.is_revoked(token)


async def verify_unrevoked(
    tokens: TokenService, revocations: TokenRevocations, token: str
) -> VerifiedToken:
    """The token's claims if it is valid and not revoked; InvalidToken saying why otherwise."""
    verified = await tokens.verify(token)
    if await revocations.is_revoked(verified):
        raise InvalidToken("the token has been revoked")
    return verified


def _authorization(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None
