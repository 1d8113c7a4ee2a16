"""Research service settings (`EDRS_RESEARCH_*`).

Jobs (docs/research.md) run as Temporal workflows hosted by this service: they need
`EDRS_RESEARCH_TEMPORAL_ADDRESS` (the task service's Temporal, same namespace) and the peers
`knowledge` and `reasoning`; `task` (budgets, persona tasks) is optional: without it budgets are not
enforced and a job started with a persona is refused."""

from typing import ClassVar, Literal

from edrs_core.outbound import OutboundServiceSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class ResearchSettings(OutboundServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_RESEARCH_")
    service_name: ClassVar[str] = "research"
    uses_redis: ClassVar[bool] = False

    # Durable jobs. Without an address the job RPCs answer FAILED_PRECONDITION.
    temporal_address: str | None = Field(
        default=None,
        description="The Temporal frontend, host:port, the one the task service uses; unset: "
        "research jobs are unavailable",
    )
    temporal_namespace: str = Field(default="default", min_length=1)
    temporal_task_queue: str = Field(
        default="edrs-research",
        min_length=1,
        description="The task queue the research worker polls and its jobs start on",
    )
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    job_heartbeat_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Heartbeat timeout of a job's activities: how soon a step whose worker died "
        "is retried on another",
    )

    # Planning.
    planner: Literal["model", "fallback"] = Field(
        default="model",
        description="model: the reasoning service's model writes the plan (validated, the "
        "deterministic planner when it is not valid); fallback: the deterministic planner only",
    )
    plan_max_tokens: int = Field(
        default=256, ge=32, le=4096, description="Longest plan the model may write"
    )
    model_timeout_seconds: float = Field(default=300.0, gt=0)

    # Synthesis.
    claims_per_section: int = Field(default=5, ge=1, le=20)
    passages_per_query: int = Field(default=8, ge=1, le=50)
    min_credibility: float = Field(
        default=0.35,
        ge=0,
        le=1,
        description="A claim whose only sources score below this is flagged, never stated as fact",
    )
