"""edrs_core.temporal: one Temporal connection for the task and research services — its settings
(namespace, TLS, mutual TLS, API key) read by the same names under each service's prefix, TLS
chosen from them, and a start-up that names the variable when the frontend cannot be reached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from edrs_core.engines.ports import free_port
from edrs_core.settings import ServiceSettings, SettingsError, load_settings
from edrs_core.temporal import TemporalConnection, connect_temporal, tls_config
from pydantic_settings import SettingsConfigDict
from temporalio.service import TLSConfig


class DemoSettings(TemporalConnection, ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_DEMO_")
    service_name: ClassVar[str] = "demo"
    temporal_address: str = "127.0.0.1:7233"


Load = Callable[..., DemoSettings]


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Load:
    """Loads the settings a process with these environment variables would."""
    monkeypatch.setenv("EDRS_ENVIRONMENT", "development")
    monkeypatch.setenv("EDRS_DEMO_DATABASE_URL", "postgresql://x@127.0.0.1/db")

    def load(**env: str) -> DemoSettings:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return load_settings(DemoSettings)

    return load


def test_plaintext_by_default_and_system_roots_when_tls_is_on(settings: Load) -> None:
    assert tls_config(settings()) is False
    assert tls_config(settings(EDRS_DEMO_TEMPORAL_TLS="true")) is True


def test_a_private_ca_and_a_client_certificate_make_mutual_tls(
    settings: Load, tmp_path: Path
) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_bytes(f"-----{name}-----".encode())
    s = settings(
        EDRS_DEMO_TEMPORAL_TLS_CA_PATH=str(tmp_path / "ca.pem"),
        EDRS_DEMO_TEMPORAL_TLS_CERT_PATH=str(tmp_path / "cert.pem"),
        EDRS_DEMO_TEMPORAL_TLS_KEY_PATH=str(tmp_path / "key.pem"),
        EDRS_DEMO_TEMPORAL_TLS_SERVER_NAME="temporal.internal",
    )
    tls = tls_config(s)
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == b"-----ca.pem-----"
    assert tls.client_cert == b"-----cert.pem-----"
    assert tls.client_private_key == b"-----key.pem-----"
    assert tls.domain == "temporal.internal"


def test_a_client_certificate_without_its_key_is_refused_naming_both_variables(
    settings: Load,
) -> None:
    with pytest.raises(SettingsError) as refused:
        settings(EDRS_DEMO_TEMPORAL_TLS_CERT_PATH="/etc/edrs/cert.pem")
    message = str(refused.value)
    assert "EDRS_DEMO_TEMPORAL_TLS_CERT_PATH and EDRS_DEMO_TEMPORAL_TLS_KEY_PATH" in message
    assert "set both or neither" in message


def test_an_empty_namespace_is_refused(settings: Load) -> None:
    with pytest.raises(SettingsError, match="EDRS_DEMO_TEMPORAL_NAMESPACE"):
        settings(EDRS_DEMO_TEMPORAL_NAMESPACE="")


async def test_an_unreachable_frontend_fails_start_up_naming_the_address_variable(
    settings: Load,
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RuntimeError) as failed:
        await connect_temporal(settings(), address, deadline_seconds=0.5)
    assert f"could not reach Temporal at {address} (EDRS_DEMO_TEMPORAL_ADDRESS)" in str(
        failed.value
    )
