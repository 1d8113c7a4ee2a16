"""Access tokens refused before their expiry, kept in Redis so every gateway process sees them.

Two kinds of entry, each expiring when the tokens it refuses would have expired anyway:
one token (by jti, after `/auth/revoke`), and every token of a subject issued before a moment
(a user deleted or given another role, an API key revoked).
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from edrs_gateway.auth.tokens import VerifiedToken, millisecond


class TokenRevocations:
    def __init__(self, redis: Redis, *, prefix: str = "edrs:gateway:auth") -> None:
        self.redis = redis
        self.prefix = prefix

    def _token_key(self, jti: str) -> str:
        return f"{self.prefix}:revoked-token:{jti}"

    def _subject_key(self, kind: str, subject_id: str) -> str:
        return f"{self.prefix}:revoked-subject:{kind}:{subject_id}"

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        ttl = max(1, int(expires_at - time.time()) + 60)
        await self.redis.set(self._token_key(jti), b"1", ex=ttl)

    async def revoke_subject(self, kind: str, subject_id: str, ttl_seconds: int) -> None:
        """Refuse every access token of the subject issued until now; `ttl_seconds` is the
        access-token lifetime, after which those tokens have expired anyway."""
        await self.redis.set(
            self._subject_key(kind, subject_id),
            repr(millisecond(time.time())).encode(),
            ex=ttl_seconds + 60,
        )

    def keys(self, token: VerifiedToken) -> tuple[str, str]:
        """The two entries that would refuse `token`: its own, and its subject's."""
        p = token.principal
        return self._token_key(p.token_id), self._subject_key(p.subject_kind, p.subject_id)

    async def is_revoked(self, token: VerifiedToken) -> bool:
        # One round trip for both checks: this runs on every authenticated request. Where rate
        # limits are on, the same rule runs inside the limiter's script instead
        # (edge/ratelimit.py, _ADMIT), in the round trip that takes the request's token.
        by_token, by_subject = await self.redis.mget(list(self.keys(token)))
        if by_token is not None:
            return True
        # A token issued in the very millisecond of the revocation survives; one issued before
        # it does not.
        return by_subject is not None and token.issued_at < float(by_subject)
