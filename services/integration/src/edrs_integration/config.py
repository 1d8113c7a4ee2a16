"""Integration service settings (`EDRS_INTEGRATION_*`)."""

from typing import Annotated, Any, ClassVar

from edrs_core.outbound import OutboundServiceSettings
from edrs_core.secretstore import SecretStoreServiceSettings
from edrs_core.settings import comma_or_json_list
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

# A retry of a keyed call must find its outcome: an hour at least; ten years at most.
MIN_KEY_RETENTION_HOURS = 1
MAX_KEY_RETENTION_HOURS = 87_600
MAX_SWEEP_INTERVAL_SECONDS = 86_400.0


class IntegrationSettings(OutboundServiceSettings, SecretStoreServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_INTEGRATION_")
    service_name: ClassVar[str] = "integration"
    uses_redis: ClassVar[bool] = False

    # Secrets live in the secret store (EDRS_INTEGRATION_VAULT_*). This key only opens connector
    # secrets that releases before the secret store sealed into the database, so that start-up
    # can move them there (docs/decisions/0011-secrets-in-openbao.md); unset once that is done.
    credentials_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Former key of connector secrets sealed in the database; only read to move "
        "them into the secret store",
    )

    # Tools and MCP servers (docs/integration.md, "Tools").
    mcp_stdio_commands: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Executables a tenant may run as stdio MCP servers on the integration host, "
        "comma-separated or a JSON list of absolute paths; empty = stdio servers refused",
    )
    mcp_connect_timeout_seconds: float = Field(
        default=20.0, gt=0, le=300, description="Connecting to an MCP server and listing its tools"
    )
    mcp_health_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often an idle MCP session is pinged (a stdio "
        "server's process that exited is restarted when the ping fails)",
    )
    tool_call_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Default longest tool call (an MCP server's own "
        "limit may be set per server, up to 600 s)",
    )
    tool_result_max_chars: int = Field(
        default=20_000, ge=100, description="A tool's result is cut to this many characters"
    )

    # Keyed tool calls' retention (docs/integration.md, "Idempotency key").
    tool_call_key_retention_hours: int = Field(
        default=168,
        description="A keyed tool call's outcome is kept this many hours after it finished (a "
        "repeat of its key within that time replays it; later, the tool runs again)",
    )
    tool_call_key_sweep_interval_seconds: float = Field(
        default=300.0,
        description="How often expired keyed tool calls are deleted (in batches)",
    )

    # Webhooks out (docs/integration.md, "Webhooks out").
    webhook_concurrency: int = Field(
        default=32, ge=1, le=1000, description="Deliveries sent at once by one replica"
    )
    webhook_timeout_seconds: float = Field(
        default=15.0, gt=0, le=120, description="Longest wait for a receiver's answer"
    )
    webhook_idle_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest sleep of the dispatcher between looks for due deliveries (it is "
        "woken at once by new ones)",
    )

    @field_validator("mcp_stdio_commands", mode="before")
    @classmethod
    def _split_commands(cls, value: Any) -> Any:
        return comma_or_json_list(value)

    @field_validator("mcp_stdio_commands")
    @classmethod
    def _absolute_commands(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for command in value:
            if not command.startswith("/"):
                raise ValueError(f"{command!r} must be an absolute path")
        return value

    @field_validator("tool_call_key_retention_hours")
    @classmethod
    def _retention(cls, value: int) -> int:
        if not MIN_KEY_RETENTION_HOURS <= value <= MAX_KEY_RETENTION_HOURS:
            raise ValueError(
                f"must be a whole number of hours from {MIN_KEY_RETENTION_HOURS} to "
                f"{MAX_KEY_RETENTION_HOURS} (ten years), got {value}: keyed tool calls are kept "
                "this long after they finish, so a retried key replays its first outcome"
            )
        return value

    @field_validator("tool_call_key_sweep_interval_seconds")
    @classmethod
    def _sweep_interval(cls, value: float) -> float:
        if not 0 < value <= MAX_SWEEP_INTERVAL_SECONDS:
            raise ValueError(
                f"must be more than 0 and at most {MAX_SWEEP_INTERVAL_SECONDS:g} seconds (a "
                f"day), got {value:g}"
            )
        return value
