"""Ed25519 keys that sign access tokens: stored encrypted, rotated without downtime, published as JWKS.

Rotation: `rotate()` adds a key, which becomes the signer (the newest non-retired key signs).
Older keys keep verifying until every token they signed has expired: a key is retired only once
the key that replaced it has been signing for longer than the access-token lifetime plus a margin
(the margin covers clock skew and processes still signing from their key cache).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from edrs_core.secrets import SecretCipher
from jwt.algorithms import OKPAlgorithm
from pydantic import SecretStr

ALGORITHM = "EdDSA"
RETIREMENT_MARGIN = timedelta(minutes=10)
_KEY_PURPOSE = b"edrs-gateway/token-signing-keys/v1"
_SETTING = "EDRS_GATEWAY_KEY_ENCRYPTION_SECRET"


def signing_key_cipher(secret: SecretStr) -> SecretCipher:
    """The cipher of private signing keys at rest, keyed from `key_encryption_secret`."""
    return SecretCipher(secret, purpose=_KEY_PURPOSE, setting=_SETTING)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    public_jwk: dict[str, Any]
    created_at: datetime


def public_jwk(kid: str, key: Ed25519PublicKey) -> dict[str, Any]:
    """The JWK services use to verify: OKP/Ed25519 with `kid`, `alg` and `use` so they pin it."""
    jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"}


class SigningKeyStore:
    """The `signing_keys` table of the gateway's database."""

    def __init__(self, db: asyncpg.Pool, cipher: SecretCipher) -> None:
        self.db = db
        self.cipher = cipher

    async def active(self) -> list[SigningKey]:
        """Every non-retired key, newest first (the first one signs)."""
        rows = await self.db.fetch(
            "SELECT kid, private_key_encrypted, public_jwk, created_at FROM signing_keys "
            "WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC"
        )
        keys = []
        for row in rows:
            pem = self.cipher.decrypt(row["private_key_encrypted"]).encode()
            private = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise TypeError(f"signing key {row['kid']} is not an Ed25519 key")
            keys.append(
                SigningKey(
                    kid=row["kid"],
                    private_key=private,
                    public_key=private.public_key(),
                    public_jwk=json.loads(row["public_jwk"]),
                    created_at=row["created_at"],
                )
            )
        return keys

    async def public_jwks(self) -> list[dict[str, Any]]:
        """The public JWK of every non-retired key, newest first."""
        rows = await self.db.fetch(
            "SELECT public_jwk FROM signing_keys WHERE retired_at IS NULL "
            "ORDER BY created_at DESC, kid DESC"
        )
        return [json.loads(row["public_jwk"]) for row in rows]

    async def add(self) -> str:
        """Generate a key, store it encrypted and return its kid; it signs from now on."""
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        # The RFC 7638 thumbprint would do too; a time-ordered id makes the rotation readable.
        kid = (
            f"k{time.time_ns() // 1_000_000:x}-{private.public_key().public_bytes_raw()[:4].hex()}"
        )
        await self.db.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_key_encrypted, public_jwk) "
            "VALUES ($1, $2, $3, $4::jsonb)",
            kid,
            ALGORITHM,
            self.cipher.encrypt(pem),
            json.dumps(public_jwk(kid, private.public_key())),
        )
        return kid

    async def ensure_one(self) -> None:
        """Create the first key when there is none (first start); replicas racing make two, harmless."""
        if (
            await self.db.fetchval("SELECT count(*) FROM signing_keys WHERE retired_at IS NULL")
            == 0
        ):
            await self.add()

    async def rotate(self, access_token_ttl: timedelta) -> tuple[str, list[str]]:
        """Add a signing key and retire keys whose tokens have all expired; (new kid, retired kids).

        A key stops signing when a newer one is created; it is retired once that newer key is older
        than `access_token_ttl` plus RETIREMENT_MARGIN.
        """
        kid = await self.add()
        retired = await self.db.fetch(
            """
            UPDATE signing_keys AS old SET retired_at = now()
            WHERE old.retired_at IS NULL AND old.kid <> $1 AND EXISTS (
                SELECT 1 FROM signing_keys AS newer
                WHERE newer.created_at > old.created_at AND newer.created_at < now() - $2::interval
            )
            RETURNING old.kid
            """,
            kid,
            access_token_ttl + RETIREMENT_MARGIN,
        )
        return kid, sorted(row["kid"] for row in retired)


class KeyRing:
    """A process's cache of the active keys: re-read after `cache_seconds`, or at once (at most
    every `min_reload_seconds`) when a token names a kid it does not know, e.g. just after another
    process rotated."""

    def __init__(
        self, store: SigningKeyStore, *, cache_seconds: float, min_reload_seconds: float = 1.0
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.min_reload_seconds = min(min_reload_seconds, cache_seconds)
        self._keys: list[SigningKey] = []
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _reload_if_older_than(self, seconds: float) -> None:
        if time.monotonic() - self._loaded_at <= seconds and self._keys:
            return
        async with self._lock:
            # Another request may have reloaded while this one waited for the lock.
            if time.monotonic() - self._loaded_at <= seconds and self._keys:
                return
            self._keys = await self.store.active()
            self._loaded_at = time.monotonic()

    async def signer(self) -> SigningKey:
        await self._reload_if_older_than(self.cache_seconds)
        if not self._keys:
            raise RuntimeError("no signing key: the gateway creates one at start-up")
        return self._keys[0]

    async def verifier(self, kid: str) -> Ed25519PublicKey | None:
        """The public key named `kid`, or None when it is unknown or retired."""
        await self._reload_if_older_than(self.cache_seconds)
        key = self._find(kid)
        if key is None:
            # Rate-limited so a flood of made-up kids cannot turn into a flood of queries.
            await self._reload_if_older_than(self.min_reload_seconds)
            key = self._find(kid)
        return key

    def _find(self, kid: str) -> Ed25519PublicKey | None:
        for key in self._keys:
            if key.kid == kid:
                return key.public_key
        return None
