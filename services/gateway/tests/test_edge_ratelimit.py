"""Per-tier rate limits against a real Redis: bursts, refill, concurrency caps, several processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from edrs_core.clock import ManualClock
from edrs_core.testing import wait_until
from edrs_gateway.auth.principal import Principal
from edrs_gateway.edge.ratelimit import TIER_LIMITS, RateLimiter, RateLimitMiddleware, TierLimits
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.integration

# A bucket that practically never refills during a test, so the number admitted is exact.
NO_REFILL = TierLimits(per_minute=1, burst=50, concurrency=0)


@pytest.fixture
def clock() -> ManualClock:
    """The limiter's time, still until a test moves it: no refill happens behind a test's back."""
    return ManualClock()


@pytest.fixture
async def redis(redis_engine) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_engine.url(0))
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test:edge:rl:{uuid.uuid4().hex}:"


class FakeAuth:
    """Stands in for AuthenticationMiddleware: `X-Test-Tenant: id/tier` becomes the principal."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = dict(scope.get("headers", [])).get(b"x-test-tenant")
        if raw:
            tenant, tier = raw.decode().split("/")
            scope.setdefault("state", {})["principal"] = Principal(
                tenant_id=tenant, tier=tier, subject_id="u1", subject_kind="user", role="member"
            )
        await self.app(scope, receive, send)


def make_app(limiter: RateLimiter, gate: asyncio.Event, inside: list[int]) -> ASGIApp:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    async def boom(request: Request) -> JSONResponse:
        return JSONResponse({"error": "no"}, status_code=404)

    async def slow(request: Request) -> PlainTextResponse:
        inside.append(1)
        await gate.wait()
        return PlainTextResponse("done")

    api = Starlette(
        routes=[
            Route("/api/v1/hello", hello),
            Route("/api/v1/missing", boom),
            Route("/api/v1/slow", slow),
            Route("/api/v1/open", hello),
        ]
    )
    return FakeAuth(RateLimitMiddleware(api, limiter, exempt_paths=["/api/v1/open"]))


@pytest.fixture
async def client(
    redis, prefix, clock
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Event, list]]:
    gate, inside = asyncio.Event(), []
    app = make_app(RateLimiter(redis, key_prefix=prefix, clock=clock), gate, inside)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c, gate, inside
    gate.set()


def test_tier_table_matches_the_issue() -> None:
    assert TIER_LIMITS["standard"] == TierLimits(60, 10, 5)
    assert TIER_LIMITS["professional"] == TierLimits(300, 30, 15)
    assert TIER_LIMITS["enterprise"] == TierLimits(1200, 100, 50)


async def test_a_burst_above_the_tier_gets_429_with_headers(client) -> None:
    c, _, _ = client
    headers = {"X-Test-Tenant": "t-burst/standard"}
    replies = [await c.get("/api/v1/hello", headers=headers) for _ in range(11)]
    assert [r.status_code for r in replies[:10]] == [200] * 10
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in replies[:10]] == list(range(9, -1, -1))
    assert all(r.headers["X-RateLimit-Limit"] == "10" for r in replies)
    refused = replies[10]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "1"  # 60/min refills one token a second
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["X-RateLimit-Reset"]) <= 10
    assert refused.headers["X-RateLimit-Reset"] == "10"  # the clock held still: ten tokens short


async def test_tenants_and_anonymous_clients_have_separate_buckets(client) -> None:
    c, _, _ = client
    for _ in range(10):
        await c.get("/api/v1/hello", headers={"X-Test-Tenant": "t-a/standard"})
    assert (
        await c.get("/api/v1/hello", headers={"X-Test-Tenant": "t-a/standard"})
    ).status_code == 429
    other = await c.get("/api/v1/hello", headers={"X-Test-Tenant": "t-b/professional"})
    assert other.status_code == 200
    assert other.headers["X-RateLimit-Limit"] == "30"
    anonymous = await c.get("/api/v1/hello")
    assert anonymous.status_code == 200
    assert anonymous.headers["X-RateLimit-Limit"] == "10"  # standard tier for anonymous callers


async def test_error_responses_carry_the_headers_and_exempt_paths_are_not_limited(client) -> None:
    c, _, _ = client
    missing = await c.get("/api/v1/missing", headers={"X-Test-Tenant": "t-err/standard"})
    assert missing.status_code == 404
    assert missing.headers["X-RateLimit-Remaining"] == "9"
    for _ in range(15):
        open_reply = await c.get("/api/v1/open", headers={"X-Test-Tenant": "t-err/standard"})
        assert open_reply.status_code == 200
        assert "X-RateLimit-Limit" not in open_reply.headers


async def test_the_concurrency_cap_refuses_the_sixth_and_frees_slots(client) -> None:
    c, gate, inside = client
    headers = {"X-Test-Tenant": "t-conc/standard"}
    running = [asyncio.create_task(c.get("/api/v1/slow", headers=headers)) for _ in range(5)]

    async def five_inside() -> bool:
        return len(inside) == 5

    await wait_until(five_inside, 30, "five requests inside the app")
    sixth = await c.get("/api/v1/hello", headers=headers)
    assert sixth.status_code == 429
    assert "concurrent" in sixth.json()["detail"]
    gate.set()
    assert [r.status_code for r in await asyncio.gather(*running)] == [200] * 5
    assert (await c.get("/api/v1/hello", headers=headers)).status_code == 200


async def test_a_bucket_refills_over_time(redis, prefix, clock) -> None:
    per_second = TierLimits(per_minute=60, burst=2, concurrency=0)  # one token a second
    limiter = RateLimiter(redis, key_prefix=prefix, limits={"standard": per_second}, clock=clock)
    assert (await limiter.acquire("s", "standard", "r1")).allowed
    assert (await limiter.acquire("s", "standard", "r2")).allowed
    refused = await limiter.acquire("s", "standard", "r3")
    assert (refused.allowed, refused.reason, refused.retry_after) == (False, "rate", 1)
    clock.advance(timedelta(milliseconds=999))
    assert not (await limiter.acquire("s", "standard", "r4")).allowed, "refilled too early"
    clock.advance(timedelta(milliseconds=1))
    refilled = await limiter.acquire("s", "standard", "r5")
    assert (refilled.allowed, refilled.remaining) == (True, 0)
    assert not (await limiter.acquire("s", "standard", "r6")).allowed, "only one token refilled"


async def test_a_crashed_request_slot_expires(redis, prefix, clock) -> None:
    capped = TierLimits(per_minute=60_000, burst=100, concurrency=1)
    limiter = RateLimiter(
        redis, key_prefix=prefix, limits={"standard": capped}, lease_seconds=60, clock=clock
    )
    assert (await limiter.acquire("s", "standard", "never-released")).allowed
    refused = await limiter.acquire("s", "standard", "second")
    assert (refused.allowed, refused.reason) == (False, "concurrency")
    clock.advance(timedelta(seconds=59, milliseconds=999))
    assert not (await limiter.acquire("s", "standard", "third")).allowed, "the lease is 60 s"
    clock.advance(timedelta(milliseconds=1))
    assert (await limiter.acquire("s", "standard", "fourth")).allowed, "the leaked slot expired"


async def test_many_tasks_get_exactly_the_burst(redis, prefix, clock) -> None:
    limiter = RateLimiter(redis, key_prefix=prefix, limits={"standard": NO_REFILL}, clock=clock)
    decisions = await asyncio.gather(
        *(limiter.acquire("shared", "standard", f"r{i}") for i in range(300))
    )
    assert sum(d.allowed for d in decisions) == NO_REFILL.burst


async def test_slots_released_together_are_all_freed(redis, prefix, clock) -> None:
    """Releases that meet while one is on its way to Redis go in one round trip; every one of
    them, for every subject, frees its slot, and each caller returns only once it is freed."""
    roomy = TierLimits(per_minute=60_000, burst=1_000, concurrency=100)
    limiter = RateLimiter(redis, key_prefix=prefix, limits={"standard": roomy}, clock=clock)
    subjects = ("tenant:a", "tenant:b", "ip:203.0.113.8")
    for subject in subjects:
        for i in range(30):
            assert (await limiter.acquire(subject, "standard", f"{subject}-{i}")).allowed

    async def inflight(subject: str) -> int:
        return int(await redis.zcard(limiter._keys(subject)[1]))

    assert [await inflight(s) for s in subjects] == [30, 30, 30]
    # Everything but one slot of the last subject, released at once.
    await asyncio.gather(
        *(
            limiter.release(subject, f"{subject}-{i}")
            for subject in subjects
            for i in range(30)
            if (subject, i) != (subjects[-1], 29)
        )
    )
    assert [await inflight(s) for s in subjects] == [0, 0, 1]
    await limiter.release(subjects[-1], f"{subjects[-1]}-29")
    assert await inflight(subjects[-1]) == 0


HAMMER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import datetime
    from redis.asyncio import Redis
    from edrs_core.clock import ManualClock
    from edrs_gateway.edge.ratelimit import RateLimiter, TierLimits

    async def main(url, prefix, n, now):
        redis = Redis.from_url(url)
        limiter = RateLimiter(redis, key_prefix=prefix,
                              limits={"standard": TierLimits(per_minute=1, burst=50, concurrency=0)},
                              clock=ManualClock(datetime.fromisoformat(now)))
        print("ready", flush=True)
        sys.stdin.readline()
        got = await asyncio.gather(*(limiter.acquire("shared", "standard", f"p{i}") for i in range(n)))
        print(sum(d.allowed for d in got), flush=True)
        await redis.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    """
)


async def test_two_processes_sharing_a_bucket_get_exactly_the_burst(
    redis, redis_engine, prefix, clock
) -> None:
    # Both processes read the same held clock, so however long the hammering takes on a busy
    # machine, no token refills in between.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HAMMER,
        redis_engine.url(0),
        prefix,
        "150",
        clock.now().isoformat(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        limiter = RateLimiter(redis, key_prefix=prefix, limits={"standard": NO_REFILL}, clock=clock)
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        mine = await asyncio.gather(
            *(limiter.acquire("shared", "standard", f"m{i}") for i in range(150))
        )
        theirs = int(await asyncio.wait_for(proc.stdout.readline(), 30))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert sum(d.allowed for d in mine) + theirs == NO_REFILL.burst
