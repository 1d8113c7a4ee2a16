"""Who is calling: identity tokens verified against the fleet's JWKS before a handler runs, and the
service tokens a service signs for work that belongs to no user (event handlers, jobs).

Two kinds of signer, one key set. The gateway signs the identity of a user or API key (and the
operator tokens of `edrs admin`) with its token-signing keys; each service signs its own service
tokens with its own Ed25519 key, whose public half the gateway publishes in the same fleet JWKS
with an `edrs_service` member naming the service. A service key can only vouch for that service:
its tokens must say `knd: service` and `sub`/`iss` = the service's name (docs/decisions/0012-fleet-identity.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from edrs_core.ids import new_id

log = logging.getLogger("edrs.identity")

ALGORITHM = "EdDSA"
# gRPC metadata key of the identity token (`Bearer <jwt>`), as HTTP's Authorization header.
AUTHORIZATION_KEY = "authorization"
SERVICE_KIND = "service"
OPERATOR_ROLE = "operator"
# The JWK member that marks a service's own key and names the only service it may speak for.
SERVICE_JWK_MEMBER = "edrs_service"
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "iat", "tid", "role", "knd"]
# Tolerated clock difference between the signer and the verifier.
LEEWAY_SECONDS = 30


class InvalidIdentity(Exception):
    """The call's identity token is not acceptable; the message says why, for the caller."""


class KeysUnavailable(Exception):
    """The fleet's keys cannot be fetched, so a token naming an uncached key cannot be checked."""


@dataclass(frozen=True)
class Identity:
    """A verified caller. `tenant_id` is empty for an identity that belongs to no tenant
    (an operator, or a service working for no tenant)."""

    tenant_id: str
    subject: str
    role: str
    kind: str
    expires_at: float
    scopes: frozenset[str] = frozenset()
    # The verified token itself, forwarded unchanged to the next hop.
    token: str = field(default="", repr=False)

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR_ROLE


def identity_claims(
    *,
    issuer: str,
    audience: str,
    subject: str,
    tenant_id: str,
    role: str,
    kind: str,
    ttl_seconds: float,
    scopes: frozenset[str] | set[str] = frozenset(),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of an identity token (the one format gateway and services both sign)."""
    now = time.time()
    return {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + ttl_seconds),
        "jti": str(new_id()),
        "tid": tenant_id,
        "role": role,
        "knd": kind,
        "scp": sorted(scopes),
        **(extra or {}),
    }


def sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    return jwt.encode(dict(claims), key, algorithm=ALGORITHM, headers={"kid": kid})


def public_jwk(kid: str, key: Ed25519PublicKey, *, service: str | None = None) -> dict[str, Any]:
    """The JWK verifiers use: OKP/Ed25519 with `kid`, `alg` and `use` pinned; a service key also
    names its service."""
    jwk: dict[str, Any] = {**OKPAlgorithm.to_jwk(key, as_dict=True), "kid": kid}
    jwk.update({"alg": ALGORITHM, "use": "sig"})
    if service is not None:
        jwk[SERVICE_JWK_MEMBER] = service
    return jwk


def service_kid(service: str, key: Ed25519PublicKey) -> str:
    """A service key's kid: its service and the start of its public key (stable across restarts)."""
    return f"svc-{service}-{key.public_bytes_raw()[:6].hex()}"


def load_private_key(text: str, setting: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, as `openssl genpkey -algorithm ed25519` writes), or
    from the base64url of its 32 raw bytes (one line, for env files)."""
    try:
        if text.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
            key = Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{setting} is not a PEM private key nor a base64url Ed25519 key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{setting} must be an Ed25519 key")
    return key


def load_public_key(text: str, setting: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, or from the base64url of its 32 raw bytes (a JWK's `x`)."""
    try:
        if text.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
            key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{setting}: not an Ed25519 public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{setting}: must be an Ed25519 key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class VerificationKey:
    key: Ed25519PublicKey
    # The service this key may speak for; None for the gateway's keys.
    service: str | None


class JwksKeys:
    """The fleet's public keys, fetched from a JWKS URL and cached.

    Re-fetched after `cache_seconds`, and at once when a token names a kid the cache does not
    know (a key rotated in since), but at most once per `min_refresh_seconds`: a flood of made-up
    kids cannot become a flood of fetches.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 5.0,
        timeout: float = 3.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min(min_refresh_seconds, cache_seconds)
        self.timeout = timeout
        self.tls = tls
        self.fetches = 0
        self._keys: dict[str, VerificationKey] = {}
        self._error: str | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> VerificationKey | None:
        await self._refresh_if_older_than(self.cache_seconds)
        found = self._keys.get(kid)
        if found is None:
            await self._refresh_if_older_than(self.min_refresh_seconds)
            found = self._keys.get(kid)
        if found is None and self._error is not None:
            raise KeysUnavailable(f"cannot fetch the fleet's keys from {self.url}: {self._error}")
        return found

    async def _refresh_if_older_than(self, seconds: float) -> None:
        if time.monotonic() - self._fetched_at < seconds:
            return
        async with self._lock:
            # Another call may have fetched while this one waited for the lock.
            if time.monotonic() - self._fetched_at < seconds:
                return
            try:
                self._keys = await self._fetch()
                self._error = None
            except (httpx.HTTPError, ValueError) as exc:
                # Keep the keys already known: a gateway restart must not fail calls whose key
                # is cached. A kid not in the cache fails as UNAVAILABLE until a fetch works.
                self._error = str(exc) or type(exc).__name__
                log.warning("cannot fetch the fleet's keys from %s: %s", self.url, self._error)
            finally:
                self._fetched_at = time.monotonic()

    async def _fetch(self) -> dict[str, VerificationKey]:
        self.fetches += 1
        verify: ssl.SSLContext | bool = self.tls if self.tls is not None else True
        async with httpx.AsyncClient(timeout=self.timeout, verify=verify) as client:
            reply = await client.get(self.url)
            reply.raise_for_status()
            document = reply.json()
        return parse_jwks(document)


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """kid → key of every EdDSA signing key in a JWKS document; other keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("alg") != ALGORITHM or jwk.get("kty") != "OKP":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        key = OKPAlgorithm.from_jwk(json.dumps(jwk))
        if not isinstance(key, Ed25519PublicKey):
            continue
        service = jwk.get(SERVICE_JWK_MEMBER)
        keys[kid] = VerificationKey(key, service if isinstance(service, str) else None)
    return keys


class KeySource:
    """Where a verifier finds the key named by a kid (JwksKeys, or a fixed set in tests)."""

    async def key(self, kid: str) -> VerificationKey | None:
        raise NotImplementedError


class TokenVerifier:
    """Verifies identity tokens: EdDSA pinned, signature, audience, issuer, expiry; a service key
    only for its own service. Verified tokens are remembered until they expire (a bounded LRU), so a
    token the gateway reuses across requests costs one signature check, not one per call."""

    def __init__(
        self,
        keys: JwksKeys | KeySource,
        *,
        issuer: str,
        audience: str,
        cache_size: int = 10_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.cache_size = cache_size
        self._verified: OrderedDict[str, Identity] = OrderedDict()

    async def verify(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at + LEEWAY_SECONDS > time.time():
                self._verified.move_to_end(token)
                return cached
            del self._verified[token]
        identity = await self._verify(token)
        self._verified[token] = identity
        if len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidIdentity("the identity token is not a well-formed JWT") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidIdentity(f"the identity token's algorithm must be {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidIdentity("the identity token has no key id (kid)")
        found = await self.keys.key(kid)
        if found is None:
            raise InvalidIdentity("the identity token was signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                found.key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": _REQUIRED_CLAIMS, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidIdentity("the identity token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidIdentity("the identity token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise InvalidIdentity(
                f"the identity token is for another audience (expected '{self.audience}')"
            ) from None
        except jwt.InvalidSignatureError:
            raise InvalidIdentity("the identity token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise InvalidIdentity(f"the identity token is invalid: {exc}") from None
        return _identity(claims, token, found.service, self.issuer)


def _identity(claims: dict[str, Any], token: str, service: str | None, issuer: str) -> Identity:
    tenant, role, kind, scopes = claims["tid"], claims["role"], claims["knd"], claims.get("scp", [])
    if not all(isinstance(v, str) for v in (tenant, role, kind, claims["sub"])) or not isinstance(
        scopes, list
    ):
        raise InvalidIdentity("the identity token's tenant, subject, role or kind are not valid")
    if service is None:
        if claims["iss"] != issuer:
            raise InvalidIdentity("the identity token was issued by someone else")
        if kind == SERVICE_KIND:
            raise InvalidIdentity("a service token must be signed by that service's key")
    elif (claims["iss"], claims["sub"], kind, role) != (service, service, SERVICE_KIND, "service"):
        # A service's key vouches for that service only: never a user, an operator or a peer.
        raise InvalidIdentity(f"the key of service '{service}' can only sign its own service token")
    return Identity(
        tenant_id=tenant,
        subject=claims["sub"],
        role=role,
        kind=kind,
        expires_at=float(claims["exp"]),
        scopes=frozenset(str(s) for s in scopes),
        token=token,
    )


class ServiceTokens:
    """Signs this service's own identity tokens, one per tenant, reused while they have more than
    half their lifetime left (a signature per tenant per half-lifetime, not per call)."""

    def __init__(
        self,
        service: str,
        key: Ed25519PrivateKey,
        *,
        audience: str,
        ttl_seconds: float = 600.0,
        cache_size: int = 10_000,
    ) -> None:
        self.service = service
        self.key = key
        self.kid = service_kid(service, key.public_key())
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self.cache_size = cache_size
        self._tokens: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.kid, self.key.public_key(), service=self.service)

    def token_for(self, tenant_id: str) -> str:
        """A service token for work in `tenant_id` ("" for work that belongs to no tenant)."""
        now = time.time()
        cached = self._tokens.get(tenant_id)
        if cached is not None and cached[0] - now > self.ttl_seconds / 2:
            return cached[1]
        token = sign(
            identity_claims(
                issuer=self.service,
                audience=self.audience,
                subject=self.service,
                tenant_id=tenant_id,
                role="service",
                kind=SERVICE_KIND,
                ttl_seconds=self.ttl_seconds,
            ),
            self.key,
            self.kid,
        )
        self._tokens[tenant_id] = (now + self.ttl_seconds, token)
        self._tokens.move_to_end(tenant_id)
        if len(self._tokens) > self.cache_size:
            self._tokens.popitem(last=False)
        return token


def bearer(token: str) -> str:
    return f"Bearer {token}"


def token_from_metadata(value: str | None) -> str | None:
    """The token of an `authorization: Bearer <token>` value; None when absent or blank."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidIdentity("the 'authorization' metadata must be 'Bearer <identity token>'")
    return token.strip()
