"""Reasoning service settings (`EDRS_REASONING_*`)."""

from typing import ClassVar

from edrs_core import ServiceSettings
from pydantic_settings import SettingsConfigDict


class ReasoningSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_REASONING_")
    service_name: ClassVar[str] = "reasoning"
    uses_redis: ClassVar[bool] = False
