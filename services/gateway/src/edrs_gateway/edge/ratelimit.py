"""Per-tier rate limits: a token bucket and a concurrency cap per tenant, updated atomically in Redis.

One Lua script does the whole decision, so any number of gateway processes sharing the Redis
share the bucket exactly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from edrs_core.clock import Clock
from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError, RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edrs_gateway.api.problems import problem_response
from edrs_gateway.auth.principal import Tier
from edrs_gateway.edge._asgi import client_ip, is_exempt, principal_of

log = logging.getLogger("edrs.gateway.ratelimit")


@dataclass(frozen=True)
class TierLimits:
    per_minute: int
    burst: int
    concurrency: int


# The one table of per-tier limits (issue 4, item 4).
TIER_LIMITS: Mapping[Tier, TierLimits] = {
    "standard": TierLimits(per_minute=60, burst=10, concurrency=5),
    "professional": TierLimits(per_minute=300, burst=30, concurrency=15),
    "enterprise": TierLimits(per_minute=1200, burst=100, concurrency=50),
}

# Anonymous callers are limited per client IP with the smallest tier.
ANONYMOUS_TIER: Tier = "standard"

Reason = Literal["ok", "rate", "concurrency"]


@dataclass(frozen=True)
class Decision:
    """The outcome of one acquire. `limit` is the bucket's capacity (the burst), `remaining` the
    whole tokens left, `reset` seconds until the bucket is full again, `retry_after` seconds to
    wait before retrying (0 when allowed)."""

    allowed: bool
    reason: Reason
    limit: int
    remaining: int
    reset: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out

    def refusal(self) -> str:
        """Why a refused request was refused, for the 429 problem's detail (HTTP and WebSocket)."""
        why = (
            f"more than {self.limit} concurrent requests"
            if self.reason == "concurrency"
            else "request rate above your tier's limit"
        )
        return f"{why}; retry after {self.retry_after}s"


# KEYS[1] bucket hash {tokens, ts}; KEYS[2] sorted set of in-flight request ids scored by the
# time their lease expires. ARGV: refill tokens per ms, capacity, concurrency cap (0 = none),
# request id, lease ms, and the time in ms, or '' for Redis's own clock, which is what every
# gateway uses so that processes with skewed clocks agree (a test passes a clock it holds still).
_NOW = """
local now
if ARGV[#ARGV] ~= '' then
  now = tonumber(ARGV[#ARGV])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
_ACQUIRE = (
    _NOW
    + """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local lease = tonumber(ARGV[5])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local reason = 'ok'
local retry_ms = 0
if tokens < 1 then
  reason = 'rate'
  retry_ms = math.ceil((1 - tokens) / rate)
elseif cap > 0 then
  -- Leases of crashed processes expire; count only live ones.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then
    reason = 'concurrency'
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    retry_ms = math.min(1000, tonumber(first[2]) - now)
  end
end
if reason == 'ok' then
  tokens = tokens - 1
  if cap > 0 then
    redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
    redis.call('PEXPIRE', KEYS[2], lease)
  end
end
local full_ms = math.ceil((capacity - tokens) / rate)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], full_ms + 1000)
local allowed = 0
if reason == 'ok' then allowed = 1 end
return {allowed, reason, math.floor(tokens), full_ms, retry_ms}
"""
)

# Extends a still-running request's lease (long responses); no-op once released.
# ARGV: request id, lease ms, the time as in _ACQUIRE.
_EXTEND = (
    _NOW
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
"""
)


class RateLimiter:
    """Token buckets and concurrency slots per subject (a tenant id or a client IP)."""

    def __init__(
        self,
        redis: Redis,
        *,
        limits: Mapping[Tier, TierLimits] = TIER_LIMITS,
        key_prefix: str = "edrs:gateway:ratelimit:",
        lease_seconds: float = 60.0,
        max_concurrent_calls: int = 50,
        clock: Clock | None = None,
    ) -> None:
        """`clock`: None reads Redis's clock, shared by every gateway process."""
        self.redis = redis
        self.clock = clock
        # Queue here rather than exhaust the shared Redis connection pool (100 by default) when
        # hundreds of requests arrive at once.
        self._calls = asyncio.Semaphore(max_concurrent_calls)
        self.limits = limits
        self.key_prefix = key_prefix
        self.lease_ms = int(lease_seconds * 1000)
        # register_script keeps the SHA and runs EVALSHA, loading the script only when Redis
        # answers NOSCRIPT (first use, or after a Redis restart).
        self._acquire = redis.register_script(_ACQUIRE)
        self._extend = redis.register_script(_EXTEND)

    def _keys(self, subject: str) -> tuple[str, str]:
        # The hash tag keeps both keys of a subject in one Redis Cluster slot.
        base = f"{self.key_prefix}{{{subject}}}"
        return f"{base}:bucket", f"{base}:inflight"

    async def acquire(self, subject: str, tier: Tier, request_id: str) -> Decision:
        """Take one token and one concurrency slot for `request_id`, or neither."""
        limits = self.limits[tier]
        rate_per_ms = limits.per_minute / 60_000
        async with self._calls:
            allowed, reason, remaining, full_ms, retry_ms = await self._acquire(
                keys=list(self._keys(subject)),
                args=[
                    repr(rate_per_ms),
                    limits.burst,
                    limits.concurrency,
                    request_id,
                    self.lease_ms,
                    self._now_ms(),
                ],
            )
        reason_text = reason.decode() if isinstance(reason, bytes) else str(reason)
        return Decision(
            allowed=bool(allowed),
            reason=reason_text,  # type: ignore[arg-type]
            limit=limits.burst,
            remaining=int(remaining),
            reset=math.ceil(int(full_ms) / 1000),
            retry_after=max(1, math.ceil(int(retry_ms) / 1000)) if not allowed else 0,
        )

    async def release(self, subject: str, request_id: str) -> None:
        """Free the concurrency slot of a finished request."""
        async with self._calls:
            await self.redis.zrem(self._keys(subject)[1], request_id)

    async def extend(self, subject: str, request_id: str) -> None:
        """Renew the lease of a request that is still running."""
        async with self._calls:
            await self._extend(
                keys=[self._keys(subject)[1]], args=[request_id, self.lease_ms, self._now_ms()]
            )

    def _now_ms(self) -> str:
        if self.clock is None:
            return ""
        return str(int(self.clock.now().timestamp() * 1000))


class RateLimitMiddleware:
    """Pure ASGI: limit each request by its tenant and tier (anonymous: by client IP, standard tier).

    Every response carries X-RateLimit-Limit/Remaining/Reset; a refused one is 429 `rate_limited`
    with Retry-After. The concurrency slot is held until the response body has been sent.
    When Redis is unreachable the request is let through (fail_open) or refused with 503.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        *,
        exempt_paths: Sequence[str] = (),
        fail_open: bool = True,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt_paths = tuple(exempt_paths)
        self.fail_open = fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"], self.exempt_paths):
            await self.app(scope, receive, send)
            return
        principal = principal_of(scope)
        if principal is not None:
            subject, tier = f"tenant:{principal.tenant_id}", principal.tier
        else:
            subject, tier = f"ip:{client_ip(scope)}", ANONYMOUS_TIER
        request_id = uuid.uuid4().hex
        try:
            decision = await self.limiter.acquire(subject, tier, request_id)
        except RedisError as exc:
            log.warning("rate limiter unavailable; fail_open=%s", self.fail_open, exc_info=True)
            # An exhausted connection pool means load, not an outage: letting those requests
            # through would let a flood bypass the limit.
            if self.fail_open and not isinstance(exc, MaxConnectionsError):
                await self.app(scope, receive, send)
            else:
                await problem_response(
                    503,
                    "rate_limiter_unavailable",
                    "rate limiting is unavailable; retry shortly",
                    headers={"Retry-After": "1"},
                )(scope, receive, send)
            return
        headers = decision.headers()
        if not decision.allowed:
            await problem_response(
                429,
                "rate_limited",
                decision.refusal(),
                title="Too many requests",
                instance=scope["path"],
                headers=headers,
            )(scope, receive, send)
            return

        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *raw]}
            await send(message)

        loop = asyncio.get_running_loop()
        renewal: asyncio.TimerHandle | None = None
        pending: set[asyncio.Task[None]] = set()

        def renew() -> None:
            # A long response (a stream) keeps its slot: renew at half the lease.
            nonlocal renewal
            task = loop.create_task(self._quietly(self.limiter.extend(subject, request_id)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            renewal = loop.call_later(self.limiter.lease_ms / 2000, renew)

        renewal = loop.call_later(self.limiter.lease_ms / 2000, renew)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            renewal.cancel()
            # Shielded so a cancelled request (client gone) still frees its slot.
            await asyncio.shield(self._quietly(self.limiter.release(subject, request_id)))

    @staticmethod
    async def _quietly(call: Awaitable[object]) -> None:
        try:
            await call
        except RedisError:
            # The lease expires on its own; a failed release only delays the slot's return.
            log.warning("rate limiter lease update failed", exc_info=True)
