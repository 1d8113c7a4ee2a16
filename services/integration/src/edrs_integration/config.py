"""Integration service settings (`EDRS_INTEGRATION_*`)."""

from typing import ClassVar

from edrs_core.outbound import OutboundServiceSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class IntegrationSettings(OutboundServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_INTEGRATION_")
    service_name: ClassVar[str] = "integration"
    uses_redis: ClassVar[bool] = False

    # The runtime refuses this default unless EDRS_ENVIRONMENT=development. Changing the key
    # makes stored connector secrets unreadable, so keep it stable (see credentials.py).
    credentials_key: SecretStr = Field(
        default=SecretStr("development-only-credentials-key-do-not-use"),
        min_length=32,
        description="Secret from which the key encrypting connector secrets at rest is derived",
    )
