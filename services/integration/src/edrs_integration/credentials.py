"""Encryption at rest of connector secrets: Fernet (AES-128-CBC + HMAC-SHA256) with a key derived
from the `EDRS_INTEGRATION_CREDENTIALS_KEY` setting."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

# HKDF `info` binds the derived key to this one use, so the same setting could later feed other
# keys (e.g. webhook signing) without them being equal. Changing it makes stored secrets unreadable.
_KEY_PURPOSE = b"edrs-integration/connector-config/v1"


class CredentialsError(Exception):
    """A stored secret cannot be decrypted: the credentials key is not the one it was written with."""


def derive_fernet_key(credentials_key: SecretStr) -> bytes:
    """The Fernet key for `credentials_key`: HKDF-SHA256 to 32 bytes, url-safe base64 as Fernet wants.

    The setting is an operator-chosen string of any length, not 32 random bytes, hence the KDF.
    No salt: the key must be the same on every replica and after every restart.
    """
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_PURPOSE).derive(
        credentials_key.get_secret_value().encode()
    )
    return base64.urlsafe_b64encode(raw)


class SecretCipher:
    def __init__(self, credentials_key: SecretStr) -> None:
        self._fernet = Fernet(derive_fernet_key(credentials_key))

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise CredentialsError(
                "a stored connector secret cannot be decrypted: EDRS_INTEGRATION_CREDENTIALS_KEY is "
                "not the key it was encrypted with"
            ) from None
