"""Identity tokens the gateway forwards to the fleet on behalf of an authenticated caller.

The caller's access token is never forwarded: it is for the public API (`aud: edrs-api`), lives an
hour, and only the gateway can tell it was revoked. Instead, once the gateway has verified it (and
checked revocation), it signs a short-lived fleet token (`aud: edrs-fleet`) for the same principal
with the same signing keys, published in the fleet JWKS. One token per principal is reused while
more than half its lifetime is left, so a request costs a dictionary look-up, not a signature.
Operator tokens (`edrs admin operator-token`) are signed here too.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from edrs_core.identity import OPERATOR_ROLE, Identity, identity_claims, sign

from edrs_gateway.auth.principal import Principal
from edrs_gateway.auth.signing_keys import KeyRing


def _cache_key(p: Principal) -> tuple[object, ...]:
    # Everything the token says; the access token's own id is not part of it.
    return (p.tenant_id, p.subject_id, p.subject_kind, p.role, p.tier, p.scopes)


class FleetTokens:
    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: float,
        cache_size: int = 10_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[object, ...], Identity] = OrderedDict()

    async def for_principal(self, principal: Principal) -> Identity:
        """The fleet identity of `principal`, signed at most once per half-lifetime."""
        key = _cache_key(principal)
        cached = self._cache.get(key)
        if cached is not None and cached.expires_at - time.time() > self.ttl_seconds / 2:
            self._cache.move_to_end(key)
            return cached
        identity = await self._sign(
            tenant_id=principal.tenant_id,
            subject=principal.subject_id,
            role=principal.role,
            kind=principal.subject_kind,
            scopes=principal.scopes,
            tier=principal.tier,
            ttl_seconds=self.ttl_seconds,
        )
        self._cache[key] = identity
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return identity

    async def operator(self, subject: str, ttl_seconds: float) -> Identity:
        """An operator's identity (tenant administration), for `edrs admin` and ops tooling."""
        return await self._sign(
            tenant_id="",
            subject=subject,
            role=OPERATOR_ROLE,
            kind="operator",
            scopes=frozenset(),
            tier=None,
            ttl_seconds=ttl_seconds,
        )

    async def webhook_sender(self, tenant_id: str, connector_id: str) -> Identity:
        """Who posts to a connector's inbound URL: nobody we know yet. The integration service
        authenticates the request by the connector's signature; this identity only carries the
        tenant named in the URL, with no role that may do anything else."""
        return await self._sign(
            tenant_id=tenant_id,
            subject=f"webhook:{connector_id}",
            role="webhook",
            kind="webhook",
            scopes=frozenset(),
            tier=None,
            ttl_seconds=60,
        )

    async def _sign(
        self,
        *,
        tenant_id: str,
        subject: str,
        role: str,
        kind: str,
        scopes: frozenset[str],
        tier: str | None,
        ttl_seconds: float,
    ) -> Identity:
        signer = await self.keys.signer()
        claims = identity_claims(
            issuer=self.issuer,
            audience=self.audience,
            subject=subject,
            tenant_id=tenant_id,
            role=role,
            kind=kind,
            ttl_seconds=ttl_seconds,
            scopes=scopes,
            extra={"tier": tier} if tier else None,
        )
        return Identity(
            tenant_id=tenant_id,
            subject=subject,
            role=role,
            kind=kind,
            expires_at=float(claims["exp"]),
            scopes=scopes,
            token=sign(claims, signer.private_key, signer.kid),
        )
