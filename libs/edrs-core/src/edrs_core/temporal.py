"""A service's connection to Temporal: the settings of the frontend's namespace and TLS, the client
(retried while the frontend starts) and its readiness check. The task service runs workflows on it,
the research service runs its jobs in the same namespace (docs/tasks.md, docs/research.md).

Importing this module needs `temporalio` (`edrs-core[temporal]`); nothing else in edrs_core does.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from temporalio.client import Client
from temporalio.service import RPCError, TLSConfig

from edrs_core.settings import ServiceSettings

log = logging.getLogger("edrs.temporal")


class TemporalConnection(BaseModel):
    """The namespace and how to reach it securely: a settings mixin (`EDRS_<S>_TEMPORAL_*`), put
    before `ServiceSettings` among the bases. The address and the task queue stay the service's
    own (one requires an address, another runs without; each polls its own queue)."""

    temporal_namespace: str = Field(default="default", min_length=1)
    # TLS to a production cluster: a CA for the server's certificate, and a client certificate
    # when the cluster asks for mutual TLS. Temporal Cloud takes an API key instead.
    temporal_tls: bool = False
    temporal_tls_ca_path: Path | None = None
    temporal_tls_cert_path: Path | None = None
    temporal_tls_key_path: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _temporal_connection_valid(self) -> Self:
        assert isinstance(self, ServiceSettings), "TemporalConnection mixes into ServiceSettings"
        if (self.temporal_tls_cert_path is None) != (self.temporal_tls_key_path is None):
            raise ValueError(
                f"{self.env_name('temporal_tls_cert_path')} and "
                f"{self.env_name('temporal_tls_key_path')} go together: set both or neither"
            )
        return self


def tls_config(settings: TemporalConnection) -> TLSConfig | bool:
    """TLS to the frontend from settings: False (plaintext, the embedded server), True (system
    roots), or a TLSConfig with a CA and/or a client certificate for mutual TLS."""
    files = (
        settings.temporal_tls_ca_path,
        settings.temporal_tls_cert_path,
        settings.temporal_tls_key_path,
    )
    if not settings.temporal_tls and all(f is None for f in files):
        return False
    if all(f is None for f in files) and settings.temporal_tls_server_name is None:
        return True
    ca, cert, key = (f.read_bytes() if f is not None else None for f in files)
    return TLSConfig(
        server_root_ca_cert=ca,
        client_cert=cert,
        client_private_key=key,
        domain=settings.temporal_tls_server_name,
    )


async def connect_temporal(
    settings: TemporalConnection, address: str, *, deadline_seconds: float
) -> Client:
    """A client of the configured namespace at `address` (the service's
    `EDRS_<S>_TEMPORAL_ADDRESS`); retries until `deadline_seconds` (the frontend may still be
    starting, as in `edrs dev up`), then raises naming that variable."""
    assert isinstance(settings, ServiceSettings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    delay = 0.1
    api_key = settings.temporal_api_key
    while True:
        try:
            return await Client.connect(
                address,
                namespace=settings.temporal_namespace,
                tls=tls_config(settings),
                api_key=api_key.get_secret_value() if api_key is not None else None,
            )
        except (RPCError, RuntimeError, OSError) as exc:
            if loop.time() + delay > deadline:
                raise RuntimeError(
                    f"could not reach Temporal at {address} "
                    f"({settings.env_name('temporal_address')}): {exc}"
                ) from exc
            log.warning("waiting for Temporal at %s: %s", address, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def check_temporal(client: Client) -> None:
    """Readiness: the frontend answers its health check."""
    if not await client.service_client.check_health(timeout=timedelta(seconds=1)):
        raise RuntimeError("the Temporal frontend is not serving")
