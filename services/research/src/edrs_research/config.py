"""Research service settings (`EDRS_RESEARCH_*`).

Jobs (docs/research.md) run as Temporal workflows hosted by this service: they need
`EDRS_RESEARCH_TEMPORAL_ADDRESS` (the task service's Temporal, same namespace) and the peers
`knowledge` and `reasoning`; `task` (budgets, persona tasks) is optional: without it budgets are not
enforced and a job started with a persona is refused."""

from pathlib import Path
from typing import ClassVar, Literal, Self

from edrs_core.outbound import OutboundClient, OutboundServiceSettings
from edrs_core.temporal import TemporalConnection
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from edrs_research.credibility import DomainTiers, TiersError
from edrs_research.web.fetch import DEFAULT_USER_AGENT, FetchLimits
from edrs_research.web.search import SearchProvider, build_provider, static_key


class ResearchSettings(TemporalConnection, OutboundServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_RESEARCH_")
    service_name: ClassVar[str] = "research"
    uses_redis: ClassVar[bool] = False

    search_provider: Literal["searxng", "brave", "tavily", "none"] = Field(
        default="none",
        description="The web search provider: searxng (a SearxNG instance, search_url), brave "
        "or tavily (their APIs, search_api_key), none (no web search)",
    )
    search_url: str = Field(
        default="",
        description="Base URL of the search provider: required for searxng; brave and tavily "
        "default to their public APIs",
    )
    search_api_key: SecretStr | None = Field(
        default=None, description="API key of the brave or tavily search provider"
    )
    fetch_max_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=1024,
        description="Largest page read, in bytes: a larger page is cut there and marked truncated",
    )
    fetch_host_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Least time between two requests to one host (robots.txt's Crawl-delay, "
        "when longer, wins up to 60 s)",
    )
    fetch_robots_ttl_seconds: float = Field(
        default=3600.0, gt=0, description="How long a host's robots.txt is cached"
    )
    fetch_timeout_seconds: float = Field(
        default=20.0, gt=0, description="Whole-request time limit of one page fetch"
    )
    fetch_user_agent: str = Field(
        default=DEFAULT_USER_AGENT,
        min_length=1,
        description="User-Agent of page fetches; robots.txt groups are matched on EDRS-Research",
    )
    domain_tiers_file: Path | None = Field(
        default=None,
        description="The operator's domain tiers (YAML or JSON: tier name -> weight and "
        "domains) over the built-in ones; docs/research.md shows the format",
    )

    # Durable jobs. Without an address the job RPCs answer FAILED_PRECONDITION.
    temporal_address: str | None = Field(
        default=None,
        description="The Temporal frontend, host:port, the one the task service uses; unset: "
        "research jobs are unavailable",
    )
    temporal_task_queue: str = Field(
        default="edrs-research",
        min_length=1,
        description="The task queue the research worker polls and its jobs start on",
    )
    # Namespace, TLS (a CA, a client certificate for mutual TLS) and API key: the task service's
    # settings, edrs_core.temporal.TemporalConnection.
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
    web_results_per_query: int = Field(
        default=8, ge=1, le=50, description="Search provider results read per query"
    )
    min_credibility: float = Field(
        default=0.35,
        ge=0,
        le=1,
        description="A claim whose only sources score below this is flagged, never stated as fact",
    )

    @model_validator(mode="after")
    def _check_search(self) -> Self:
        if self.search_provider == "searxng" and not self.search_url:
            raise ValueError(
                f"{self.env_name('search_url')} is required with the searxng search provider"
            )
        if self.search_provider in ("brave", "tavily") and self.search_api_key is None:
            raise ValueError(
                f"{self.env_name('search_api_key')} is required with the "
                f"{self.search_provider} search provider"
            )
        if self.domain_tiers_file is not None:
            try:
                DomainTiers.load(self.domain_tiers_file)
            except TiersError as exc:
                raise ValueError(f"{self.env_name('domain_tiers_file')}: {exc}") from None
        return self

    def fetch_limits(self) -> FetchLimits:
        return FetchLimits(
            max_bytes=self.fetch_max_bytes,
            host_interval_seconds=self.fetch_host_interval_seconds,
            robots_ttl_seconds=self.fetch_robots_ttl_seconds,
            timeout_seconds=self.fetch_timeout_seconds,
            user_agent=self.fetch_user_agent,
        )

    def domain_tiers(self) -> DomainTiers:
        return DomainTiers.load(self.domain_tiers_file)

    def search(self, client: OutboundClient) -> SearchProvider:
        key = None if self.search_api_key is None else static_key(self.search_api_key)
        return build_provider(self.search_provider, client, url=self.search_url, key=key)
