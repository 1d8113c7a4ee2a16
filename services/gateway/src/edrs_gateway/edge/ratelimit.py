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
from dataclasses import dataclass, field
from typing import Literal, cast

from edrs_core.clock import Clock
from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError, RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edrs_gateway.api.problems import problem_response
from edrs_gateway.auth.principal import Principal, Tier
from edrs_gateway.auth.revocations import TokenRevocations
from edrs_gateway.auth.tokens import VerifiedToken
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
_TAKE = """
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
_ACQUIRE = _NOW + _TAKE

# The authentication middleware's revocation check and the acquire above in one script, so an
# authenticated request costs one Redis round trip before its route runs, not two. KEYS[3] and
# KEYS[4] are the token's revocation entries (auth/revocations.py) and ARGV[6] its `iat`; the rule
# is TokenRevocations.is_revoked's: a revoked token id, or a subject revoked after the token was
# issued. A revoked token takes nothing from its tenant (its request is then limited by client IP
# like any anonymous one) and returns {-1}. All keys are named by the caller, as scripts must; the
# gateway's Redis client is a single-node one, and a Redis Cluster would need the revocation keys
# in the tenant's hash slot first.
_ADMIT = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1}
end
local revoked_since = redis.call('GET', KEYS[4])
if revoked_since and tonumber(ARGV[6]) < tonumber(revoked_since) then
  return {-1}
end
"""
    + _TAKE
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


@dataclass
class _Releases:
    """Slots waiting to be freed (inflight key → request ids and their waiters) and the task
    sending them, on one event loop."""

    loop: asyncio.AbstractEventLoop
    pending: dict[str, list[tuple[str, asyncio.Future[None]]]] = field(default_factory=dict)
    sending: asyncio.Task[None] | None = None


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
        self._admit = redis.register_script(_ADMIT)
        self._extend = redis.register_script(_EXTEND)
        self._releases: _Releases | None = None

    def _keys(self, subject: str) -> tuple[str, str]:
        # The hash tag keeps both keys of a subject in one Redis Cluster slot.
        base = f"{self.key_prefix}{{{subject}}}"
        return f"{base}:bucket", f"{base}:inflight"

    async def acquire(self, subject: str, tier: Tier, request_id: str) -> Decision:
        """Take one token and one concurrency slot for `request_id`, or neither."""
        limits = self.limits[tier]
        async with self._calls:
            reply = await self._acquire(
                keys=list(self._keys(subject)),
                args=[*self._args(limits, request_id), self._now_ms()],
            )
        return self._decision(limits, reply)

    async def admit(
        self,
        subject: str,
        tier: Tier,
        request_id: str,
        revocation_keys: tuple[str, str],
        issued_at: float,
    ) -> Decision | None:
        """`acquire`, unless the token behind the request is revoked (None: nothing was taken).

        `revocation_keys` are TokenRevocations.keys of the token, `issued_at` its `iat`: one
        Redis round trip answers both questions."""
        limits = self.limits[tier]
        async with self._calls:
            reply = await self._admit(
                keys=[*self._keys(subject), *revocation_keys],
                args=[*self._args(limits, request_id), repr(issued_at), self._now_ms()],
            )
        if int(reply[0]) < 0:
            return None
        return self._decision(limits, reply)

    def _args(self, limits: TierLimits, request_id: str) -> list[str | int]:
        return [
            repr(limits.per_minute / 60_000),  # refill per millisecond
            limits.burst,
            limits.concurrency,
            request_id,
            self.lease_ms,
        ]

    @staticmethod
    def _decision(limits: TierLimits, reply: Sequence[object]) -> Decision:
        allowed, reason, remaining, full_ms, retry_ms = reply
        reason_text = reason.decode() if isinstance(reason, bytes) else str(reason)
        return Decision(
            allowed=bool(allowed),
            reason=reason_text,  # type: ignore[arg-type]
            limit=limits.burst,
            remaining=int(cast(int, remaining)),
            reset=math.ceil(int(cast(int, full_ms)) / 1000),
            retry_after=max(1, math.ceil(int(cast(int, retry_ms)) / 1000)) if not allowed else 0,
        )

    async def release(self, subject: str, request_id: str) -> None:
        """Free the concurrency slot of a finished request; returns once Redis has freed it.

        Requests that finish while an earlier release is on its way to Redis are freed together
        in the next round trip (one ZREM per subject), so under load most requests share one; a
        release that finds none on its way goes at once."""
        loop = asyncio.get_running_loop()
        releases = self._releases
        if releases is None or releases.loop is not loop:
            releases = self._releases = _Releases(loop)
        future: asyncio.Future[None] = loop.create_future()
        releases.pending.setdefault(self._keys(subject)[1], []).append((request_id, future))
        if releases.sending is None:
            releases.sending = loop.create_task(self._send_releases(releases))
        await future

    async def _send_releases(self, releases: _Releases) -> None:
        try:
            while releases.pending:
                batch, releases.pending = releases.pending, {}
                futures = [future for entries in batch.values() for _, future in entries]
                try:
                    async with self._calls:
                        if len(batch) == 1:
                            [(key, entries)] = batch.items()
                            await self.redis.zrem(key, *(request_id for request_id, _ in entries))
                        else:
                            async with self.redis.pipeline(transaction=False) as pipe:
                                for key, entries in batch.items():
                                    pipe.zrem(key, *(request_id for request_id, _ in entries))
                                await pipe.execute()
                except Exception as exc:
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for future in futures:
                        if not future.done():
                            future.set_result(None)
                finally:
                    for future in futures:  # cancelled mid-send: its waiters must not hang
                        future.cancel()
        finally:
            releases.sending = None

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


# Where the authentication middleware leaves the decision it took with the revocation check, for
# RateLimitMiddleware (right inside it) to apply instead of asking Redis again.
ADMISSION = "rate_limit_admission"


@dataclass(frozen=True)
class Admission:
    subject: str
    request_id: str
    decision: Decision


def tenant_subject(principal: Principal) -> str:
    return f"tenant:{principal.tenant_id}"


class RevocationCheckWithLimit:
    """The authentication middleware's revocation check (auth/middleware.py, RevocationCheck)
    that also takes the request's rate-limit decision in the same Redis round trip.

    Only for requests RateLimitMiddleware limits (not its exempt paths), so every slot taken here
    is released there. Revocations are still read from Redis on every request, never cached."""

    def __init__(
        self, limiter: RateLimiter, revocations: TokenRevocations, exempt_paths: Sequence[str]
    ) -> None:
        self.limiter = limiter
        self.revocations = revocations
        self.exempt_paths = tuple(exempt_paths)

    async def __call__(self, scope: Scope, token: VerifiedToken) -> bool:
        if is_exempt(scope["path"], self.exempt_paths):
            return await self.revocations.is_revoked(token)
        principal = token.principal
        subject, request_id = tenant_subject(principal), uuid.uuid4().hex
        decision = await self.limiter.admit(
            subject, principal.tier, request_id, self.revocations.keys(token), token.issued_at
        )
        if decision is None:
            return True
        scope.setdefault("state", {})[ADMISSION] = Admission(subject, request_id, decision)
        return False


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
        admitted: Admission | None = scope.get("state", {}).pop(ADMISSION, None)
        if admitted is not None:
            # Taken with the revocation check (RevocationCheckWithLimit).
            subject, request_id = admitted.subject, admitted.request_id
            decision = admitted.decision
        else:
            try:
                subject, request_id, decision = await self._acquire(scope)
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

    async def _acquire(self, scope: Scope) -> tuple[str, str, Decision]:
        principal = principal_of(scope)
        if principal is not None:
            subject, tier = tenant_subject(principal), principal.tier
        else:
            subject, tier = f"ip:{client_ip(scope)}", ANONYMOUS_TIER
        request_id = uuid.uuid4().hex
        return subject, request_id, await self.limiter.acquire(subject, tier, request_id)

    @staticmethod
    async def _quietly(call: Awaitable[object]) -> None:
        try:
            await call
        except RedisError:
            # The lease expires on its own; a failed release only delays the slot's return.
            log.warning("rate limiter lease update failed", exc_info=True)
