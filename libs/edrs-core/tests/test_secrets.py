"""Encryption at rest of small secrets, without I/O."""

from __future__ import annotations

import pytest
from edrs_core.secrets import SecretCipher, SecretDecryptionError
from pydantic import SecretStr

SECRET = SecretStr("unit-test-secret-0123456789abcdef")


def test_round_trip_hides_the_value() -> None:
    cipher = SecretCipher(SECRET, purpose=b"test/a", setting="EDRS_TEST_SECRET")
    token = cipher.encrypt("private key material")
    assert "private key material" not in token
    assert cipher.decrypt(token) == "private key material"


def test_one_setting_gives_unrelated_keys_per_purpose_and_errors_name_the_setting() -> None:
    token = SecretCipher(SECRET, purpose=b"test/a", setting="EDRS_TEST_SECRET").encrypt("x")
    other_use = SecretCipher(SECRET, purpose=b"test/b", setting="EDRS_TEST_SECRET")
    with pytest.raises(SecretDecryptionError, match="EDRS_TEST_SECRET"):
        other_use.decrypt(token)
