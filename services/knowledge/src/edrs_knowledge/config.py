"""Knowledge service settings (`EDRS_KNOWLEDGE_*`)."""

from typing import ClassVar

from edrs_core import ServiceSettings
from pydantic_settings import SettingsConfigDict


class KnowledgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_KNOWLEDGE_")
    service_name: ClassVar[str] = "knowledge"
    uses_redis: ClassVar[bool] = False
