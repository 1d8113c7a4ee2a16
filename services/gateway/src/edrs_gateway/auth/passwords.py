"""Password hashing with Argon2id (argon2-cffi), run off the event loop because it is slow on purpose."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PASSWORD_MIN_LENGTH = 8
# Argon2 reads the whole password; a cap keeps a 10 MiB "password" from costing a core.
PASSWORD_MAX_LENGTH = 1024


class Passwords:
    """Hash and verify passwords; `verify_or_burn` costs the same whether or not a hash exists."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Verified against when the user does not exist, so "no such user" takes as long as
        # "wrong password" and response times do not reveal which emails are registered.
        self._decoy = self._hasher.hash("edrs-decoy-password-never-matches")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify_or_burn(self, stored_hash: str | None, password: str) -> bool:
        """True when `password` matches `stored_hash`; None hashes burn the same time, then fail."""
        return await asyncio.to_thread(self._verify, stored_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            matched = self._hasher.verify(stored_hash or self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matched and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with weaker parameters than today's defaults."""
        return self._hasher.check_needs_rehash(stored_hash)
