"""Encryption of connector secrets and the settings that key it, without I/O."""

from __future__ import annotations

import pytest
from edrs_core import SettingsError, load_settings
from edrs_core.testing import test_issuer
from edrs_integration.config import IntegrationSettings
from edrs_integration.credentials import CredentialsError, SecretCipher, derive_fernet_key
from pydantic import SecretStr

KEY = SecretStr("unit-test-credentials-key-0123456789")


def test_secret_round_trips_and_ciphertext_hides_it() -> None:
    cipher = SecretCipher(KEY)
    token = cipher.encrypt("sk-live-abc123")
    assert "sk-live-abc123" not in token
    assert cipher.decrypt(token) == "sk-live-abc123"
    # Fernet tokens carry a random IV: the same secret never encrypts to the same text twice.
    assert cipher.encrypt("sk-live-abc123") != token


def test_key_derivation_is_stable_across_processes_and_depends_on_the_setting() -> None:
    assert derive_fernet_key(KEY) == derive_fernet_key(SecretStr(KEY.get_secret_value()))
    assert derive_fernet_key(KEY) != derive_fernet_key(
        SecretStr("another-credentials-key-0123456789")
    )


def test_decrypting_with_another_key_says_which_setting_is_wrong() -> None:
    token = SecretCipher(KEY).encrypt("hunter2")
    other = SecretCipher(SecretStr("another-credentials-key-0123456789"))
    with pytest.raises(CredentialsError, match="EDRS_INTEGRATION_CREDENTIALS_KEY"):
        other.decrypt(token)


def test_production_names_the_secret_store_token_it_needs() -> None:
    # The credentials key is no longer required (secrets live in the secret store); the secret
    # store's credentials are.
    with pytest.raises(SettingsError, match="EDRS_INTEGRATION_VAULT_TOKEN required"):
        load_settings(
            IntegrationSettings,
            EDRS_ENVIRONMENT="production",
            database_url="postgresql://db/integration",
            **test_issuer().settings("integration"),
        )


def test_the_former_credentials_key_is_optional_and_kept_when_given() -> None:
    dev = load_settings(
        IntegrationSettings,
        EDRS_ENVIRONMENT="development",
        database_url="postgresql://db/i",
        vault_token="dev-token",
    )
    assert dev.credentials_key is None
    prod = load_settings(
        IntegrationSettings,
        EDRS_ENVIRONMENT="production",
        database_url="postgresql://db/i",
        vault_auth_method="kubernetes",
        vault_kubernetes_role="edrs-integration",
        credentials_key=KEY.get_secret_value(),
        # Production also needs the fleet's trust settings (edrs_core.identity).
        **test_issuer().settings("integration"),
    )
    assert prod.credentials_key == KEY
    assert prod.vault_config().auth_method == "kubernetes"


def test_short_credentials_key_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="EDRS_INTEGRATION_CREDENTIALS_KEY"):
        load_settings(
            IntegrationSettings,
            EDRS_ENVIRONMENT="production",
            database_url="postgresql://db/i",
            vault_token="t",
            credentials_key="short",
        )
