"""Encryption at rest of small secrets (connector credentials, signing keys): Fernet with a key
derived by HKDF from an operator-chosen setting, one derivation for the whole fleet."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted: the setting is not the one it was written with."""


def derive_fernet_key(secret: SecretStr, purpose: bytes) -> bytes:
    """The Fernet key for `secret`: HKDF-SHA256 to 32 bytes, url-safe base64 as Fernet wants.

    The setting is an operator-chosen string of any length, not 32 random bytes, hence the KDF.
    `purpose` is HKDF's `info`: it binds the derived key to one use, so the same setting could
    feed several keys without them being equal; changing it makes stored secrets unreadable.
    No salt: the key must be the same on every replica and after every restart.
    """
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.get_secret_value().encode()
    )
    return base64.urlsafe_b64encode(raw)


class SecretCipher:
    """Fernet (AES-128-CBC + HMAC-SHA256) keyed from `secret` for one `purpose`.

    `setting` names the environment variable holding `secret`, so a failed decryption tells the
    operator what to fix.
    """

    def __init__(self, secret: SecretStr, *, purpose: bytes, setting: str) -> None:
        self._fernet = Fernet(derive_fernet_key(secret, purpose))
        self._setting = setting

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptionError(
                f"a stored secret cannot be decrypted: {self._setting} is not the key it was "
                "encrypted with"
            ) from None
