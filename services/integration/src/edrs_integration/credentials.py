"""Encryption at rest of connector secrets, keyed from the `EDRS_INTEGRATION_CREDENTIALS_KEY`
setting; the cipher itself lives in `edrs_core.secrets`."""

from __future__ import annotations

from edrs_core import secrets
from pydantic import SecretStr

# HKDF `info` binds the derived key to this one use, so the same setting could later feed other
# keys (e.g. webhook signing) without them being equal. Changing it makes stored secrets unreadable.
_KEY_PURPOSE = b"edrs-integration/connector-config/v1"
_SETTING = "EDRS_INTEGRATION_CREDENTIALS_KEY"

CredentialsError = secrets.SecretDecryptionError
"""A stored secret cannot be decrypted: the credentials key is not the one it was written with."""


def derive_fernet_key(credentials_key: SecretStr) -> bytes:
    return secrets.derive_fernet_key(credentials_key, _KEY_PURPOSE)


class SecretCipher(secrets.SecretCipher):
    """The cipher of connector secrets."""

    def __init__(self, credentials_key: SecretStr) -> None:
        super().__init__(credentials_key, purpose=_KEY_PURPOSE, setting=_SETTING)
