"""Gateway service settings (`EDRS_GATEWAY_*`)."""

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from edrs_core import ServiceSettings
from edrs_core.identity import load_public_key
from edrs_core.settings import comma_or_json_list
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import NoDecode, SettingsConfigDict


class RateLimitTier(BaseModel):
    """A tier's limits as settings carry them (camelCase JSON in the environment)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    per_minute: int = Field(gt=0)
    burst: int = Field(gt=0)
    concurrency: int = Field(gt=0)


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_GATEWAY_")
    service_name: ClassVar[str] = "gateway"
    jwks_path: ClassVar[str | None] = "/api/v1/.well-known/fleet-jwks.json"

    # The runtime refuses this default unless EDRS_ENVIRONMENT=development. Changing it makes the
    # stored signing keys unreadable: rotate the signing key after changing it.
    key_encryption_secret: SecretStr = Field(
        default=SecretStr("development-only-key-encryption-secret-do-not-use"),
        min_length=32,
        description="Secret from which the key encrypting token-signing keys at rest is derived",
    )
    token_issuer: str = Field(default="edrs-gateway", min_length=1, description="JWT `iss`")
    token_audience: str = Field(default="edrs-api", min_length=1, description="JWT `aud`")
    access_token_ttl_seconds: int = Field(default=3600, ge=60, le=86_400)
    refresh_token_ttl_days: int = Field(default=30, ge=1, le=365)
    lockout_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed logins that lock a user"
    )
    lockout_minutes: int = Field(
        default=15, ge=1, description="How long a locked user stays locked"
    )
    signing_key_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a process trusts its cached signing keys before re-reading them; "
        "a token with an unknown kid re-reads them at once",
    )
    fleet_token_ttl_seconds: int = Field(
        default=900,
        ge=60,
        le=3600,
        description="Lifetime of the identity token the gateway forwards to services for a caller; "
        "one is reused while more than half of it is left, so it must exceed twice the turn "
        "timeout (a turn's last peer call still carries a valid token)",
    )
    service_keys: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description='Public keys of the services\' own service-token keys, JSON: {"persona": '
        '"<PEM or base64url of the raw Ed25519 key>"} (a list during a rotation); published in '
        "the fleet JWKS",
    )
    # Only read when EDRS_ENVIRONMENT=development, to create the first admin; a plain default
    # would have to be overridden in production for nothing, so None means the built-in one.
    dev_admin_password: SecretStr | None = Field(
        default=None,
        description="Password of admin@edrs.local, created on the first development start",
    )

    # Edge protections (edrs_gateway.edge).
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Largest request body accepted, in bytes"
    )
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Per-request deadline; streaming endpoints are exempt"
    )
    audio_max_upload_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1,
        description="Largest audio upload (POST /audio/transcriptions), in bytes; the reasoning "
        "service limits its length (EDRS_REASONING_MAX_AUDIO_SECONDS)",
    )
    audio_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Deadline of one transcription or synthesis (the audio routes are exempt from "
        "the request timeout: a long recording takes longer to transcribe)",
    )
    knowledge_max_upload_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1,
        description="Largest body of a knowledge file upload or bulk import (POST "
        "/knowledge/collections/{id}/files and /imports), in bytes; counted as it streams in",
    )
    knowledge_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Deadline of one knowledge upload or bulk import (those routes are exempt "
        "from the request timeout: 100 MB take longer than 30 s to send and store)",
    )
    turn_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Deadline of one conversation turn, queueing included (the persona service's "
        "Converse call); a JSON reply is also bound by the request timeout",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed by CORS, comma-separated or a JSON list; empty = none",
    )
    rate_limits_enabled: bool = Field(default=True, description="Per-tier token buckets in Redis")
    console_dir: Path | None = Field(
        default=None,
        description="The web console's built files, served at /console; default: where "
        "`make console` builds them (edrs_gateway/console_dist)",
    )
    turn_journal_seconds: int = Field(
        default=600,
        ge=60,
        le=86_400,
        description="How long the events of a streamed turn are kept after its last one, for a "
        "client that reconnects to resume it (Last-Event-ID)",
    )
    rate_limit_overrides: dict[Literal["standard", "professional", "enterprise"], RateLimitTier] = (
        Field(
            default_factory=dict,
            description='Replace a tier\'s limits, JSON: {"enterprise": {"perMinute": 6000, '
            '"burst": 500, "concurrency": 200}}; tiers not named keep the defaults',
        )
    )

    @field_validator("service_keys")
    @classmethod
    def _parse_service_keys(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for service, keys in value.items():
            for key in [keys] if isinstance(keys, str) else keys:
                load_public_key(key, f"EDRS_GATEWAY_SERVICE_KEYS[{service}]")
        return value

    @model_validator(mode="after")
    def _fleet_tokens_outlive_a_turn(self) -> Self:
        if self.fleet_token_ttl_seconds <= 2 * self.turn_timeout_seconds:
            raise ValueError(
                f"EDRS_GATEWAY_FLEET_TOKEN_TTL_SECONDS ({self.fleet_token_ttl_seconds}) must exceed "
                f"twice EDRS_GATEWAY_TURN_TIMEOUT_SECONDS ({self.turn_timeout_seconds:g})"
            )
        return self

    def service_public_keys(self) -> dict[str, list[str]]:
        return {s: [k] if isinstance(k, str) else list(k) for s, k in self.service_keys.items()}

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return comma_or_json_list(value)
