"""Access tokens: JWTs signed with EdDSA (Ed25519) only, carrying the caller's tenant, tier and role.

Claims: iss, aud, sub, exp, nbf, iat, jti and `tid` (tenant id), `tier`, `role`, `scp` (scopes;
empty means everything the role allows), `knd` (user | api_key). The algorithm is pinned on both
sides, so `alg: none` or an HMAC token signed with the public key is refused before any key is used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, get_args

import jwt
from edrs_core.ids import new_id

from edrs_gateway.auth.principal import Principal, Role, Tier
from edrs_gateway.auth.signing_keys import ALGORITHM, KeyRing

_REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "nbf", "iat", "jti", "tid", "tier", "role", "knd"]
# Tolerated clock difference between the gateway replicas that sign and those that verify.
_LEEWAY_SECONDS = 30
# Tokens verified recently, by their exact text: a client sends the same token with every request,
# and checking its Ed25519 signature and claims again each time was a tenth of a GET's CPU.
VERIFIED_CACHE_SIZE = 4096


def millisecond(moment: float) -> float:
    """`moment` truncated to the millisecond: the precision of `iat` and of subject revocations."""
    return math.floor(moment * 1000) / 1000


class InvalidToken(Exception):
    """The bearer token is not one this gateway accepts; the message says why, for the client."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_in: int


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    # Fractional, so a revocation at t refuses every token issued before t, even within a second.
    issued_at: float
    expires_at: int


class TokenService:
    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        # token text -> (what it verified to, its key id); oldest first, bounded.
        self._verified: dict[str, tuple[VerifiedToken, str]] = {}

    async def issue(self, subject: Principal) -> IssuedToken:
        """An access token for `subject` (its `token_id` is ignored: every token gets a new jti)."""
        key = await self.keys.signer()
        now = time.time()
        jti = str(new_id())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject.subject_id,
            "iat": millisecond(now),
            "nbf": int(now),
            "exp": int(now) + self.ttl_seconds,
            "jti": jti,
            "tid": subject.tenant_id,
            "tier": subject.tier,
            "role": subject.role,
            "scp": sorted(subject.scopes),
            "knd": subject.subject_kind,
        }
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(token=token, jti=jti, expires_in=self.ttl_seconds)

    async def verify(self, token: str) -> VerifiedToken:
        """The verified token, or InvalidToken saying what is wrong with it.

        A token verified before answers from memory while it has not expired and its signing key
        is still known (a retired key refuses it at once); revocations are not cached here
        (TokenRevocations checks them on every request)."""
        cached = self._verified.get(token)
        if cached is not None:
            verified, kid = cached
            if (
                time.time() < verified.expires_at + _LEEWAY_SECONDS
                and await self.keys.verifier(kid) is not None
            ):
                return verified
            self._verified.pop(token, None)
        verified, kid = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (verified, kid)
        return verified

    async def _verify(self, token: str) -> tuple[VerifiedToken, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a well-formed JWT") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"the token's algorithm must be {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token has no key id (kid)")
        key = await self.keys.verifier(kid)
        if key is None:
            raise InvalidToken("the token was signed with an unknown or retired key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token was issued by someone else") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is invalid: {exc}") from None
        verified = VerifiedToken(
            principal=_principal(claims), issued_at=float(claims["iat"]), expires_at=claims["exp"]
        )
        return verified, kid


def _principal(claims: dict[str, Any]) -> Principal:
    role, tier, kind, scopes = claims["role"], claims["tier"], claims["knd"], claims.get("scp", [])
    if (
        role not in get_args(Role)
        or tier not in get_args(Tier)
        or kind not in ("user", "api_key")
        or not isinstance(scopes, list)
    ):
        raise InvalidToken("the token's role, tier, kind or scopes are not valid")
    return Principal(
        tenant_id=str(claims["tid"]),
        tier=tier,
        subject_id=str(claims["sub"]),
        subject_kind=kind,
        role=role,
        scopes=frozenset(str(s) for s in scopes),
        token_id=str(claims["jti"]),
    )
