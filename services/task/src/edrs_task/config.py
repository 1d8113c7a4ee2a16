"""Task service settings (`EDRS_TASK_*`); `EDRS_TASK_PEERS` must name the persona service (and the
reasoning service, for decomposition), `EDRS_TASK_TEMPORAL_ADDRESS` the Temporal frontend its
workers poll."""

from typing import ClassVar

from edrs_core import ServiceSettings
from edrs_core.temporal import TemporalConnection
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict


class ModelPrice(BaseModel):
    """What one model costs, in millionths of a US dollar per 1,000 tokens."""

    prompt_micros_per_1k: int = Field(default=0, ge=0)
    completion_micros_per_1k: int = Field(default=0, ge=0)


class TaskSettings(TemporalConnection, ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_TASK_")
    service_name: ClassVar[str] = "task"
    uses_redis: ClassVar[bool] = False

    # Budgets (docs/tasks.md, "Budgets and usage").
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='Price table per model, JSON: {"gpt-4o": {"prompt_micros_per_1k": 2500, '
        '"completion_micros_per_1k": 10000}}',
    )
    default_model_price: ModelPrice = Field(
        default_factory=ModelPrice,
        description="Price of a model missing from model_prices (free by default: local models)",
    )
    tool_call_micros: int = Field(default=0, ge=0, description="Price of one tool call")

    # Decomposition.
    decomposition_max_tokens: int = Field(
        default=512, ge=64, description="Longest proposal the model may write"
    )
    decomposition_timeout_seconds: float = Field(default=300.0, gt=0)

    # Durable execution (docs/tasks.md): the workflow and activity workers run in this process.
    temporal_address: str = Field(
        min_length=1,
        description="The Temporal frontend, host:port (`edrs dev up` starts one and sets it)",
    )
    temporal_task_queue: str = Field(
        default="edrs-task",
        min_length=1,
        description="The task queue this service's workers poll and its workflows start on",
    )
    # Namespace, TLS and API key: edrs_core.temporal.TemporalConnection.
    workflow_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Heartbeat timeout of step activities: how soon a step whose worker died "
        "is retried on another",
    )
