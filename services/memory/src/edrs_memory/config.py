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
        default=50,
        ge=1,
        le=1_000,
        description="Nearest episodes by embedding scored per recall",
    )
    recall_recent: int = Field(
        default=50,
        ge=0,
        le=1_000,
        description="Most recent episodes scored per recall, besides the nearest ones",
    )
    embedding_cache_size: int = Field(
        default=1024,
        ge=0,
        le=1_000_000,
        description="Vectors of recent texts kept in memory (0: none); a turn embeds its message twice",
    )
    late_embedding_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often episodes still without an embedding (a reply not yet embedded "
        "when the process stopped, or when the reasoning service was down) are embedded",
    )
    embedding_dimensions: int = Field(
        default=384,
        ge=1,
        description="Length of the reasoning service's embeddings (the episodes column's type)",
    )
    working_ttl_seconds: int = Field(
        default=3_600, ge=1, le=604_800, description="Default lifetime of a working-memory item"
    )
    working_max_items: int = Field(
        default=1_000, ge=1, le=100_000, description="Working-memory items kept per conversation"
    )
    episode_retention_days: int = Field(
        default=90, ge=1, description="Episodes older than this are deleted by the maintenance job"
    )
    maintenance_interval_seconds: float = Field(
        default=3_600.0, gt=0, description="How often partitions and expiry are maintained"
    )
