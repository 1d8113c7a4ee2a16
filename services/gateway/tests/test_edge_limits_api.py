"""Rate limits as the running gateway applies them: operator overrides, the event stream outside
the concurrency cap, anonymous callers limited per IP apart from tenants (docs/api.md)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from edrs_core.testing import HTTP_TIMEOUT, RunningService, engine_settings, running_service
from edrs_gateway.app import definition
from edrs_gateway.auth.principal import Principal
from edrs_gateway.config import GatewaySettings, RateLimitTier
from edrs_gateway.context import GatewayContext
from edrs_gateway.edge.ratelimit import TIER_LIMITS, RateLimiter
from edrs_gateway.store import NewTenant
from redis.asyncio import Redis

pytestmark = pytest.mark.integration

KEY_SECRET = "test-key-encryption-secret-0123456789abcdef"
REDIS_DB = 14
# One token a minute: no request of a test is admitted by a refill, however slow the machine.
PROFESSIONAL = RateLimitTier(per_minute=1, burst=4, concurrency=1)


@pytest.fixture(scope="module")
async def gateway(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    settings = engine_settings(
        postgres_engine,
        redis_engine,
        nats_engine,
        database="test_gateway_limits",
        redis_db=REDIS_DB,
    )
    async with running_service(
        definition,
        **settings,
        key_encryption_secret=KEY_SECRET,
        rate_limits_enabled=True,
        rate_limit_overrides={"professional": PROFESSIONAL.model_dump(by_alias=True)},
    ) as svc:
        yield svc


@pytest.fixture
def ctx(gateway: RunningService) -> GatewayContext:
    rt = gateway.runner.runtime
    assert rt is not None
    return GatewayContext.build(rt.settings, rt)


async def bearer_of_new_tenant(ctx: GatewayContext, tier: str) -> tuple[str, dict[str, str]]:
    """(tenant id, Authorization header of a member): the token is issued directly, so the
    logins of these tests do not spend the anonymous bucket they test."""
    tenant = await ctx.tenants.create(NewTenant(name=f"L {uuid.uuid4().hex[:10]}", tier=tier))  # type: ignore[arg-type]
    token = await ctx.tokens.issue(
        Principal(
            tenant_id=str(tenant.id),
            tier=tenant.tier,
            subject_id=str(uuid.uuid4()),
            subject_kind="user",
            role="member",
        )
    )
    return str(tenant.id), {"Authorization": f"Bearer {token.token}"}


def test_overrides_are_read_from_the_environment_as_json(monkeypatch) -> None:
    monkeypatch.setenv(
        "EDRS_GATEWAY_RATE_LIMIT_OVERRIDES",
        '{"professional": {"perMinute": 1, "burst": 4, "concurrency": 1}}',
    )
    settings = GatewaySettings(
        environment="development", database_url="postgresql://x/y", redis_url="redis://x"
    )
    assert settings.rate_limit_overrides == {"professional": PROFESSIONAL}


async def test_an_override_replaces_its_tier_and_leaves_the_others(gateway, ctx) -> None:
    _, professional = await bearer_of_new_tenant(ctx, "professional")
    _, enterprise = await bearer_of_new_tenant(ctx, "enterprise")
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as client:
        replies = [await client.get("/api/v1/tenant", headers=professional) for _ in range(5)]
        other = await client.get("/api/v1/tenant", headers=enterprise)
    assert [r.status_code for r in replies] == [200] * 4 + [429]
    assert {r.headers["X-RateLimit-Limit"] for r in replies} == {"4"}
    assert replies[4].json()["code"] == "rate_limited"
    assert other.status_code == 200
    assert other.headers["X-RateLimit-Limit"] == str(TIER_LIMITS["enterprise"].burst)


async def test_an_open_event_stream_takes_no_concurrency_slot(gateway, ctx, redis_engine) -> None:
    tenant_id, headers = await bearer_of_new_tenant(ctx, "professional")
    async with (
        httpx.AsyncClient(base_url=gateway.http_url, timeout=30) as client,
        client.stream("GET", "/api/v1/events/stream", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        # The professional tier here allows one request at a time; the stream is open, yet:
        during = await client.get("/api/v1/tenant", headers=headers)
        assert during.status_code == 200, during.text
        # The cap itself is live: with its one slot taken, the next request is refused.
        redis = Redis.from_url(redis_engine.url(REDIS_DB))
        limiter = RateLimiter(redis, limits={"professional": TIER_LIMITS["enterprise"]})
        try:
            held = await limiter.acquire(f"tenant:{tenant_id}", "professional", "held-by-test")
            assert held.allowed
            refused = await client.get("/api/v1/tenant", headers=headers)
            assert refused.status_code == 429
            assert "concurrent" in refused.json()["detail"]
        finally:
            await limiter.release(f"tenant:{tenant_id}", "held-by-test")
            await redis.aclose()


async def test_anonymous_callers_are_limited_per_ip_apart_from_tenants(
    gateway, ctx, api_of
) -> None:
    # Anonymous callers get the standard tier; overridden here to one token a minute so that
    # only the bucket, not the machine's speed, decides.
    standard = RateLimitTier(per_minute=1, burst=3, concurrency=5)
    ip = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    _, tenant = await bearer_of_new_tenant(ctx, "enterprise")
    overrides = {"standard": standard, "professional": PROFESSIONAL}
    async with api_of(
        gateway, client_ip=ip, rate_limits_enabled=True, rate_limit_overrides=overrides
    ) as from_ip:
        anonymous = [await from_ip.get("/api/v1/.well-known/jwks.json") for _ in range(4)]
        assert [r.status_code for r in anonymous] == [200, 200, 200, 429]
        assert anonymous[3].json()["code"] == "rate_limited"
        # The same address with a token is counted in its tenant's bucket, not the IP's.
        authenticated = await from_ip.get("/api/v1/tenant", headers=tenant)
        assert authenticated.status_code == 200
        assert authenticated.headers["X-RateLimit-Limit"] == str(TIER_LIMITS["enterprise"].burst)
    async with api_of(
        gateway, client_ip=_other_ip(ip), rate_limits_enabled=True, rate_limit_overrides=overrides
    ) as elsewhere:
        assert (await elsewhere.get("/api/v1/.well-known/jwks.json")).status_code == 200


def _other_ip(ip: str) -> str:
    head, last = ip.rsplit(".", 1)
    return f"{head}.{(int(last) % 254) + 1}"
