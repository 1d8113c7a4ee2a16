"""The revocation check and the rate-limit acquire taken in one Redis round trip
(RevocationCheckWithLimit) against a real Redis: the same verdicts as TokenRevocations.is_revoked,
a revoked token takes nothing from its tenant, every slot it takes is released, exempt paths take
none, and revocations are read on every request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edrs_gateway.auth.fleet_tokens import FleetTokens
from edrs_gateway.auth.middleware import AUTH_ERROR, PRINCIPAL, AuthenticationMiddleware
from edrs_gateway.auth.principal import Principal
from edrs_gateway.auth.revocations import TokenRevocations
from edrs_gateway.auth.signing_keys import KeyRing, SigningKey, public_jwk
from edrs_gateway.auth.tokens import TokenService
from edrs_gateway.edge.ratelimit import (
    RateLimiter,
    RateLimitMiddleware,
    RevocationCheckWithLimit,
    TierLimits,
)
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

pytestmark = pytest.mark.integration

BURST = 3
# Practically no refill during a test, so the tokens left are exact.
LIMITS = TierLimits(per_minute=1, burst=BURST, concurrency=2)
EXEMPT = "/api/v1/stream"


class Keys:
    """The active keys a KeyRing reads (the signing_keys table in the service)."""

    def __init__(self) -> None:
        private = Ed25519PrivateKey.generate()
        self.key = SigningKey(
            kid="k1",
            private_key=private,
            public_key=private.public_key(),
            public_jwk=public_jwk("k1", private.public_key()),
            created_at=datetime.now(UTC),
        )

    async def active(self) -> list[SigningKey]:
        return [self.key]


@dataclass
class Edge:
    client: httpx.AsyncClient
    redis: Redis
    tokens: TokenService
    revocations: TokenRevocations
    limiter: RateLimiter
    tenant: str

    def principal(self, subject: str = "u1") -> Principal:
        return Principal(
            tenant_id=self.tenant,
            subject_id=subject,
            subject_kind="user",
            tier="standard",
            role="member",
        )

    async def token(self, subject: str = "u1") -> str:
        return (await self.tokens.issue(self.principal(subject))).token

    async def get(self, token: str, path: str = "/api/v1/hello") -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {token}"})

    async def in_flight(self, subject: str) -> int:
        return int(await self.redis.zcard(self.limiter._keys(subject)[1]))

    async def tokens_left(self, subject: str) -> float | None:
        raw = await self.redis.hget(self.limiter._keys(subject)[0], "tokens")
        return None if raw is None else float(raw)


@pytest.fixture
async def edge(redis_engine) -> AsyncIterator[Edge]:
    redis = Redis.from_url(redis_engine.url(0))
    run = uuid.uuid4().hex
    ring = KeyRing(Keys(), cache_seconds=0.0, min_reload_seconds=0.0)  # type: ignore[arg-type]
    tokens = TokenService(ring, issuer="edrs", audience="edrs-api", ttl_seconds=900)
    revocations = TokenRevocations(redis, prefix=f"test:admission:{run}:auth")
    limiter = RateLimiter(
        redis, key_prefix=f"test:admission:{run}:rl:", limits={"standard": LIMITS}
    )

    async def whoami(request: Request) -> JSONResponse:
        principal = request.scope["state"][PRINCIPAL]
        return JSONResponse(
            {
                "tenant": principal.tenant_id if principal else None,
                "error": request.scope["state"][AUTH_ERROR],
            }
        )

    api = Starlette(routes=[Route("/api/v1/hello", whoami), Route(EXEMPT, whoami)])
    app = AuthenticationMiddleware(
        RateLimitMiddleware(api, limiter, exempt_paths=[EXEMPT]),
        tokens=tokens,
        revocations=revocations,
        fleet_tokens=FleetTokens(ring, issuer="edrs", audience="edrs-fleet", ttl_seconds=300),
        revocation_check=RevocationCheckWithLimit(limiter, revocations, [EXEMPT]),
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield Edge(client, redis, tokens, revocations, limiter, f"t-{run}")
    await redis.aclose()


async def test_an_admitted_request_is_limited_by_its_tenant_and_frees_its_slot(edge) -> None:
    token = await edge.token()
    tenant = f"tenant:{edge.tenant}"
    for left in range(BURST - 1, -1, -1):
        reply = await edge.get(token)
        assert reply.status_code == 200
        assert reply.json() == {"tenant": edge.tenant, "error": None}
        assert reply.headers["X-RateLimit-Limit"] == str(BURST)
        assert reply.headers["X-RateLimit-Remaining"] == str(left)
        assert await edge.in_flight(tenant) == 0  # the slot came back with the response
    refused = await edge.get(token)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60  # one token a minute
    assert await edge.in_flight(tenant) == 0


async def test_a_revoked_token_takes_nothing_from_its_tenant(edge) -> None:
    token = await edge.token()
    assert (await edge.get(token)).status_code == 200
    left = await edge.tokens_left(f"tenant:{edge.tenant}")
    verified = await edge.tokens.verify(token)
    await edge.revocations.revoke_token(verified.principal.token_id, verified.expires_at)
    # Revocations are read on every request, never remembered: the same token is refused now.
    refused = await edge.get(token)
    assert refused.json() == {"tenant": None, "error": "the token has been revoked"}
    assert await edge.tokens_left(f"tenant:{edge.tenant}") == left
    # It was limited like any anonymous request, by the client's address.
    assert refused.headers["X-RateLimit-Remaining"] == str(BURST - 1)
    assert await edge.tokens_left("ip:203.0.113.9") is not None
    assert await edge.in_flight(f"tenant:{edge.tenant}") == 0


async def test_subject_revocations_give_the_verdicts_of_is_revoked(edge) -> None:
    """The script repeats TokenRevocations.is_revoked's rule in Lua: a token issued before the
    subject's revocation is refused, one issued in the very millisecond of it is not."""
    token = await edge.token("u2")
    verified = await edge.tokens.verify(token)
    key = edge.revocations.keys(verified)[1]
    for revoked_at, revoked in (
        (verified.issued_at, False),
        (verified.issued_at - 0.001, False),
        (round(verified.issued_at + 0.001, 3), True),
    ):
        await edge.redis.set(key, repr(revoked_at).encode(), ex=60)
        assert await edge.revocations.is_revoked(verified) is revoked
        reply = await edge.get(token)
        assert reply.json()["error"] == ("the token has been revoked" if revoked else None)
    await edge.revocations.revoke_subject("user", "u2", ttl_seconds=60)
    assert (await edge.get(token)).json()["error"] == "the token has been revoked"
    # A token issued since (even in the same millisecond) is not refused.
    assert (await edge.get(await edge.token("u2"))).json()["error"] is None


async def test_exempt_paths_check_revocation_but_take_no_slot(edge) -> None:
    token = await edge.token()
    tenant = f"tenant:{edge.tenant}"
    for _ in range(BURST + 2):
        reply = await edge.get(token, EXEMPT)
        assert reply.json() == {"tenant": edge.tenant, "error": None}
        assert "X-RateLimit-Limit" not in reply.headers
    assert await edge.tokens_left(tenant) is None  # the bucket was never touched
    verified = await edge.tokens.verify(token)
    await edge.revocations.revoke_token(verified.principal.token_id, verified.expires_at)
    assert (await edge.get(token, EXEMPT)).json()["error"] == "the token has been revoked"
