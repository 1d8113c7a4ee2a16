"""Settings: required values and default secrets stop start-up with a message naming the variable."""

from __future__ import annotations

import base64
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edrs_core.identity import load_private_key, private_key_pem
from edrs_core.settings import ServiceSettings, SettingsError, load_settings
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_DEMO_")
    service_name: ClassVar[str] = "demo"
    signing_key: SecretStr = SecretStr("dev-only-signing-key")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "EDRS_ENVIRONMENT",
        "EDRS_DEMO_DATABASE_URL",
        "EDRS_DEMO_REDIS_URL",
        "EDRS_DEMO_BUS_URL",
        "EDRS_DEMO_NATS_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_missing_database_url_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="EDRS_DEMO_DATABASE_URL is required"):
        load_settings(DemoSettings, EDRS_ENVIRONMENT="development")


def test_values_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDRS_ENVIRONMENT", "development")
    monkeypatch.setenv("EDRS_DEMO_DATABASE_URL", "postgresql://x@127.0.0.1/db")
    monkeypatch.setenv("EDRS_DEMO_GRPC_PORT", "50999")
    monkeypatch.setenv("EDRS_DEMO_PEERS", '{"persona": "127.0.0.1:50052"}')
    s = load_settings(DemoSettings)
    assert s.grpc_port == 50999
    assert s.peers == {"persona": "127.0.0.1:50052"}
    assert s.environment == "development"


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDRS_DEMO_GRPC_PORT", "seventy")
    with pytest.raises(SettingsError, match="EDRS_DEMO_GRPC_PORT"):
        load_settings(DemoSettings, EDRS_ENVIRONMENT="development", database_url="postgresql://x/y")


TRUST = {
    "jwks_url": "https://gateway:8080/api/v1/.well-known/fleet-jwks.json",
    "service_key": private_key_pem(Ed25519PrivateKey.generate()),
}


def test_default_secret_refused_outside_development() -> None:
    with pytest.raises(
        SettingsError, match="EDRS_DEMO_SIGNING_KEY still has its development default"
    ):
        load_settings(
            DemoSettings,
            EDRS_ENVIRONMENT="production",
            database_url="postgresql://x/y",
            redis_url="redis://r/0",
        )


def test_default_secret_accepted_in_development_and_real_secret_in_production() -> None:
    dev = load_settings(
        DemoSettings, EDRS_ENVIRONMENT="development", database_url="postgresql://x/y"
    )
    assert dev.signing_key.get_secret_value() == "dev-only-signing-key"
    prod = load_settings(
        DemoSettings,
        EDRS_ENVIRONMENT="production",
        database_url="postgresql://x/y",
        redis_url="redis://r/0",
        signing_key="a-real-secret",
        **TRUST,
    )
    assert prod.environment == "production"


def test_production_needs_the_fleet_jwks_and_a_service_key() -> None:
    base = {
        "EDRS_ENVIRONMENT": "production",
        "database_url": "postgresql://x/y",
        "redis_url": "redis://r/0",
        "signing_key": "a-real-secret",
    }
    with pytest.raises(SettingsError, match="EDRS_DEMO_JWKS_URL is required"):
        load_settings(DemoSettings, **base, service_key=TRUST["service_key"])
    with pytest.raises(SettingsError, match="EDRS_DEMO_SERVICE_KEY is required"):
        load_settings(DemoSettings, **base, jwks_url=TRUST["jwks_url"])
    with pytest.raises(SettingsError, match="EDRS_DEMO_SERVICE_KEY is not a PEM private key"):
        load_settings(DemoSettings, **base, jwks_url=TRUST["jwks_url"], service_key="nope")


def test_a_service_key_may_be_pem_or_one_line_base64url() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes_raw()
    one_line = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for text in (private_key_pem(key), one_line):
        settings = load_settings(
            DemoSettings,
            EDRS_ENVIRONMENT="development",
            database_url="postgresql://x/y",
            service_key=text,
        )
        assert settings.service_key is not None
        loaded = load_private_key(settings.service_key.get_secret_value(), "x")
        assert loaded.private_bytes_raw() == raw


def test_mutual_tls_needs_all_three_files(tmp_path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(
        SettingsError, match="mutual TLS needs all three of EDRS_DEMO_TLS_CERT_PATH"
    ):
        load_settings(DemoSettings, database_url="postgresql://x/y", tls_cert_path=cert)
    with pytest.raises(SettingsError, match="EDRS_DEMO_TLS_CA_PATH: no file at"):
        load_settings(
            DemoSettings,
            database_url="postgresql://x/y",
            tls_cert_path=cert,
            tls_key_path=cert,
            tls_ca_path=tmp_path / "missing.pem",
        )


def test_production_requires_redis_for_services_that_use_it() -> None:
    with pytest.raises(SettingsError, match="EDRS_DEMO_REDIS_URL is required"):
        load_settings(
            DemoSettings,
            EDRS_ENVIRONMENT="production",
            database_url="postgresql://x/y",
            signing_key="a-real-secret",
        )


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(SettingsError, match="EDRS_ENVIRONMENT"):
        load_settings(DemoSettings, EDRS_ENVIRONMENT="staging", database_url="postgresql://x/y")


def test_the_bus_url_is_set_by_bus_url_or_its_old_name_nats_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = {"EDRS_ENVIRONMENT": "development", "database_url": "postgresql://x/y"}
    assert load_settings(DemoSettings, **base).bus_url == "nats://127.0.0.1:4222"
    monkeypatch.setenv("EDRS_DEMO_NATS_URL", "nats://old-name:4222")
    assert load_settings(DemoSettings, **base).bus_url == "nats://old-name:4222"
    monkeypatch.setenv("EDRS_DEMO_BUS_URL", "pulsar://broker:6650")
    assert load_settings(DemoSettings, **base).bus_url == "pulsar://broker:6650"
    # Another service's variable is not this one's.
    monkeypatch.delenv("EDRS_DEMO_BUS_URL")
    monkeypatch.delenv("EDRS_DEMO_NATS_URL")
    monkeypatch.setenv("EDRS_OTHER_BUS_URL", "memory://elsewhere")
    assert load_settings(DemoSettings, **base).bus_url == "nats://127.0.0.1:4222"


@pytest.mark.parametrize("variable", ["EDRS_DEMO_BUS_URL", "EDRS_DEMO_NATS_URL"])
def test_a_bus_url_of_no_known_bus_is_refused_naming_the_variable_set(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "kafka://broker:9092")
    with pytest.raises(SettingsError, match=rf"{variable}: bus url 'kafka://broker:9092' must"):
        load_settings(DemoSettings, EDRS_ENVIRONMENT="development", database_url="postgresql://x/y")
