"""Settings every service shares; each service subclasses it with its own `EDRS_<SERVICE>_` prefix."""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

from edrs_events.bus import check_bus_url
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

if TYPE_CHECKING:
    from edrs_core.tls import TlsFiles

S = TypeVar("S", bound="ServiceSettings")


def comma_or_json_list(value: Any) -> Any:
    """A list setting's raw value as a list: an env var arrives as one string, and "a,b" is
    accepted as well as a JSON list. For a `mode="before"` validator of a `NoDecode` field."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class SettingsError(Exception):
    """Start-up configuration is unusable; the message names the environment variables to fix."""


class ServiceSettings(BaseSettings):
    """Runtime settings common to every service.

    A subclass sets `service_name` and `model_config = SettingsConfigDict(env_prefix="EDRS_<NAME>_")`.
    `EDRS_ENVIRONMENT` and the OpenTelemetry variables are shared by the whole fleet, so they carry
    no service prefix.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    service_name: ClassVar[str] = "service"
    uses_redis: ClassVar[bool] = True
    # The HTTP path where this service publishes the fleet JWKS (the gateway): it verifies its own
    # gRPC calls against it when JWKS_URL is not set.
    jwks_path: ClassVar[str | None] = None

    environment: Environment = Field(default="production", validation_alias="EDRS_ENVIRONMENT")
    host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=8081, ge=0, le=65535)
    database_url: str = Field(description="PostgreSQL DSN of the service's own database")
    database_pool_size: int = Field(default=10, ge=1, le=200)
    redis_url: str | None = None
    # `EDRS_<S>_BUS_URL` (`EDRS_<S>_NATS_URL` still works): the aliases carry the subclass's
    # prefix, so __init_subclass__ declares them for each service.
    bus_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="the event bus: nats://, pulsar:// or memory://<name> (in-process)",
    )
    peers: dict[str, str] = Field(
        default_factory=dict,
        description='gRPC address of every peer service, JSON: {"persona": "host:port"}',
    )
    rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    startup_timeout_seconds: float = Field(default=30.0, gt=0)
    readiness_cache_seconds: float = Field(default=2.0, ge=0)
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    # Trust inside the fleet (docs/decisions/0012-fleet-identity.md).
    jwks_url: str | None = Field(
        default=None,
        description="The gateway's fleet JWKS (…/api/v1/.well-known/fleet-jwks.json): the keys "
        "every identity token on a gRPC call is verified with; required outside development",
    )
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwks_min_refresh_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Least time between two fetches of the JWKS when a token names an unknown kid",
    )
    identity_issuer: str = Field(
        default="edrs-gateway", min_length=1, description="`iss` of the gateway's identity tokens"
    )
    identity_audience: str = Field(
        default="edrs-fleet", min_length=1, description="`aud` of every identity token in the fleet"
    )
    service_key: SecretStr | None = Field(
        default=None,
        description="This service's Ed25519 private key (PEM), which signs its service tokens "
        "(work that belongs to no user); the gateway publishes its public half",
    )
    service_token_ttl_seconds: float = Field(default=600.0, ge=60, le=3600)
    # Mutual TLS for gRPC (both sides) and for HTTP calls to other services; unset = plaintext.
    tls_cert_path: Path | None = Field(default=None, description="This service's certificate (PEM)")
    tls_key_path: Path | None = Field(default=None, description="Its private key (PEM)")
    tls_ca_path: Path | None = Field(
        default=None, description="The CA every service certificate chains to (PEM)"
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs before pydantic collects the subclass's fields, with its merged model_config, so
        # redeclaring the field here gives every service its own prefixed pair of names.
        super().__init_subclass__(**kwargs)
        own = inspect.get_annotations(cls)
        if "bus_url" in own:
            return
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        cls.__annotations__ = {**own, "bus_url": str}
        cls.bus_url = Field(
            default="nats://127.0.0.1:4222",
            validation_alias=AliasChoices(f"{prefix}BUS_URL", f"{prefix}NATS_URL"),
            description="the event bus: nats://, pulsar:// or memory://<name> (in-process)",
        )

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets `field`."""
        info = cls.model_fields[field]
        if isinstance(info.validation_alias, str):
            return info.validation_alias
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @classmethod
    def env_name_of(cls, loc: str) -> str | None:
        """The variable behind an error location (a field name or one of its aliases): for a
        field with several names, the one set in the environment, so the message names it."""
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            if not isinstance(alias, AliasChoices):
                if loc == name:
                    return cls.env_name(name)
                continue
            choices = [c for c in alias.choices if isinstance(c, str)]
            if loc != name and loc.lower() not in {c.lower() for c in choices}:
                continue
            present = {key.lower() for key in os.environ}
            return next((c for c in choices if c.lower() in present), choices[0])
        return None

    @field_validator("bus_url", check_fields=False)
    @classmethod
    def _check_bus_url(cls, value: str) -> str:
        return check_bus_url(value)

    @model_validator(mode="after")
    def _identity_and_tls_files(self) -> Self:
        given = [self.tls_cert_path, self.tls_key_path, self.tls_ca_path]
        if any(given) and not all(given):
            names = ", ".join(
                self.env_name(f) for f in ("tls_cert_path", "tls_key_path", "tls_ca_path")
            )
            raise ValueError(f"mutual TLS needs all three of {names}")
        for name, path in zip(("tls_cert_path", "tls_key_path", "tls_ca_path"), given, strict=True):
            if path is not None and not path.is_file():
                raise ValueError(f"{self.env_name(name)}: no file at {path}")
        if self.service_key is not None:
            from edrs_core.identity import load_private_key

            load_private_key(self.service_key.get_secret_value(), self.env_name("service_key"))
        return self

    @property
    def tls(self) -> TlsFiles | None:
        """The mutual-TLS files, when all three are set."""
        from edrs_core.tls import TlsFiles

        if self.tls_cert_path and self.tls_key_path and self.tls_ca_path:
            return TlsFiles(self.tls_cert_path, self.tls_key_path, self.tls_ca_path)
        return None

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Self:
        if self.environment == "development":
            return self
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if (
                isinstance(value, SecretStr)
                and isinstance(info.default, SecretStr)
                and value.get_secret_value() == info.default.get_secret_value()
            ):
                raise ValueError(
                    f"{self.env_name(name)} still has its development default; set a real secret "
                    f"(defaults are only accepted with EDRS_ENVIRONMENT=development)"
                )
        if self.uses_redis and not self.redis_url:
            raise ValueError(f"{self.env_name('redis_url')} is required")
        if self.environment == "production":
            if not self.jwks_url and self.jwks_path is None:
                raise ValueError(
                    f"{self.env_name('jwks_url')} is required: without it no gRPC call can be "
                    "verified (point it at the gateway's /api/v1/.well-known/fleet-jwks.json)"
                )
            if self.service_key is None:
                raise ValueError(
                    f"{self.env_name('service_key')} is required: the service signs the identity "
                    "of work that belongs to no user with it (an Ed25519 PEM private key)"
                )
        return self


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, turning validation errors into one readable message."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"]]
            field = loc[0] if loc else ""
            where = cls.env_name_of(field) or ".".join(loc)
            if err["type"] == "missing":
                problems.append(f"{where} is required")
            elif where:
                problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
            else:
                problems.append(err["msg"].removeprefix("Value error, "))
        raise SettingsError(
            f"{cls.service_name}: invalid configuration: " + "; ".join(problems)
        ) from None


def load_settings_or_exit(cls: type[S]) -> S:
    """`load_settings` for a process entry point: print the problem and exit 2."""
    try:
        return load_settings(cls)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# The settings class of a service, for what is generic over it (Runtime, ServiceDefinition,
# consumers). Covariant where the settings are only handed out: a Runtime[GatewaySettings] is a
# Runtime[ServiceSettings] for code that serves any service.
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
SettingsT_co = TypeVar("SettingsT_co", bound=ServiceSettings, covariant=True)
