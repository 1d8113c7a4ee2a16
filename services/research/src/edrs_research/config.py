"""Research service settings (`EDRS_RESEARCH_*`)."""

from typing import ClassVar

from edrs_core.outbound import OutboundServiceSettings
from pydantic_settings import SettingsConfigDict


class ResearchSettings(OutboundServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_RESEARCH_")
    service_name: ClassVar[str] = "research"
    uses_redis: ClassVar[bool] = False
