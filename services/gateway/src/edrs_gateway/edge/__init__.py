"""Edge protections in front of every route: rate limits, idempotency, DLP, body limit, timeouts,
security headers and CORS. Each is a pure ASGI middleware the app wires in."""

from edrs_core.dlp import DlpPolicy, DlpScanner, Hit

from edrs_gateway.edge.dlp import DlpGuard, DlpMiddleware, Verdict, blocked_problem
from edrs_gateway.edge.idempotency import IdempotencyMiddleware, IdempotencyStore
from edrs_gateway.edge.policies import TenantPolicies
from edrs_gateway.edge.ratelimit import (
    TIER_LIMITS,
    RateLimiter,
    RateLimitMiddleware,
    RevocationCheckWithLimit,
    TierLimits,
)
from edrs_gateway.edge.security import (
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    TimeoutMiddleware,
    cors_middleware,
)

__all__ = [
    "TIER_LIMITS",
    "BodyLimitMiddleware",
    "DlpGuard",
    "DlpMiddleware",
    "DlpPolicy",
    "DlpScanner",
    "Hit",
    "IdempotencyMiddleware",
    "IdempotencyStore",
    "RateLimitMiddleware",
    "RateLimiter",
    "RevocationCheckWithLimit",
    "SecurityHeadersMiddleware",
    "TenantPolicies",
    "TierLimits",
    "TimeoutMiddleware",
    "Verdict",
    "blocked_problem",
    "cors_middleware",
]
