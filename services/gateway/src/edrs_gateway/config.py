"""Gateway service settings (`EDRS_GATEWAY_*`)."""

from typing import ClassVar

from edrs_core import ServiceSettings
from pydantic_settings import SettingsConfigDict


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_GATEWAY_")
    service_name: ClassVar[str] = "gateway"
