"""TokenService remembers tokens it verified (a client sends the same one with every request); the
memory must never accept what a fresh verification would refuse: an expired token, a token whose
key was retired, a token it has not seen."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edrs_gateway.auth import tokens as tokens_module
from edrs_gateway.auth.principal import Principal
from edrs_gateway.auth.signing_keys import KeyRing, SigningKey, public_jwk
from edrs_gateway.auth.tokens import VERIFIED_CACHE_SIZE, InvalidToken, TokenService


class Keys:
    """The active keys a KeyRing reads (the signing_keys table in the service)."""

    def __init__(self) -> None:
        private = Ed25519PrivateKey.generate()
        self.key = SigningKey(
            kid="k1",
            private_key=private,
            public_key=private.public_key(),
            public_jwk=public_jwk("k1", private.public_key()),
            created_at=datetime.now(UTC),
        )
        self.active_keys = [self.key]

    async def active(self) -> list[SigningKey]:
        return list(self.active_keys)


def service(keys: Keys) -> TokenService:
    ring = KeyRing(keys, cache_seconds=0.0, min_reload_seconds=0.0)  # type: ignore[arg-type]
    return TokenService(ring, issuer="edrs", audience="edrs-api", ttl_seconds=900)


def principal() -> Principal:
    return Principal(
        tenant_id="t1",
        subject_id="u1",
        subject_kind="user",
        tier="standard",
        role="admin",
        scopes=frozenset(),
    )


def shift_clocks(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move both clocks a verification reads (ours and PyJWT's) `seconds` ahead."""
    real_time, real_datetime = time.time, datetime

    class Later(real_datetime):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return real_datetime.fromtimestamp(real_time() + seconds, tz)

    monkeypatch.setattr(tokens_module.time, "time", lambda: real_time() + seconds)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)


async def test_a_token_verifies_the_same_from_memory() -> None:
    tokens = service(Keys())
    issued = await tokens.issue(principal())
    first = await tokens.verify(issued.token)
    again = await tokens.verify(issued.token)
    assert again == first
    assert again.principal.tenant_id == "t1" and again.principal.role == "admin"


async def test_a_remembered_token_is_refused_once_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = service(Keys())
    issued = await tokens.issue(principal())
    await tokens.verify(issued.token)
    shift_clocks(monkeypatch, 900 + 31)  # past exp and the 30 s leeway
    with pytest.raises(InvalidToken, match="expired"):
        await tokens.verify(issued.token)


async def test_a_remembered_token_is_refused_once_its_key_is_retired() -> None:
    keys = Keys()
    tokens = service(keys)
    issued = await tokens.issue(principal())
    await tokens.verify(issued.token)
    keys.active_keys = []
    with pytest.raises(InvalidToken, match="unknown or retired key"):
        await tokens.verify(issued.token)


async def test_a_tampered_copy_of_a_remembered_token_is_verified_and_refused() -> None:
    tokens = service(Keys())
    issued = await tokens.issue(principal())
    await tokens.verify(issued.token)
    header, payload, signature = issued.token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        await tokens.verify(f"{header}.{payload}.{flipped}")


async def test_the_memory_is_bounded() -> None:
    tokens = service(Keys())
    issued = [await tokens.issue(principal()) for _ in range(VERIFIED_CACHE_SIZE + 10)]
    for token in issued:
        await tokens.verify(token.token)
    assert len(tokens._verified) == VERIFIED_CACHE_SIZE
    # The oldest were let go, and still verify (from scratch) when they come back.
    assert issued[0].token not in tokens._verified
    assert (await tokens.verify(issued[0].token)).principal.subject_id == "u1"
