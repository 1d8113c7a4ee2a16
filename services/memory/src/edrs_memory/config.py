"""Memory service settings (`EDRS_MEMORY_*`)."""

from typing import ClassVar

from edrs_core import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class MemorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_MEMORY_")
    service_name: ClassVar[str] = "memory"

    recall_half_life_days: float = Field(
        default=7.0, gt=0, description="Age at which a memory's recency score halves"
    )
    recall_candidates: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most recent memories, and best full-text matches, scored per recall",
    )
