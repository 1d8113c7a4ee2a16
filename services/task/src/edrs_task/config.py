"""Task service settings (`EDRS_TASK_*`); `EDRS_TASK_PEERS` must name the persona service."""

from typing import ClassVar

from edrs_core import ServiceSettings
from pydantic_settings import SettingsConfigDict


class TaskSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_TASK_")
    service_name: ClassVar[str] = "task"
    uses_redis: ClassVar[bool] = False
