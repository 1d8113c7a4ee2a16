"""The task service's connection to Temporal: the client its workers and RPCs share."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError, TLSConfig

from edrs_task.config import TaskSettings

log = logging.getLogger("edrs.task.temporal")


def tls_config(settings: TaskSettings) -> TLSConfig | bool:
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


async def connect_temporal(settings: TaskSettings, *, deadline_seconds: float) -> Client:
    """A client of the configured namespace; retries until `deadline_seconds` (the frontend may
    still be starting, as in `edrs dev up`), then raises naming EDRS_TASK_TEMPORAL_ADDRESS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    delay = 0.1
    api_key = settings.temporal_api_key
    while True:
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                tls=tls_config(settings),
                api_key=api_key.get_secret_value() if api_key is not None else None,
            )
        except (RPCError, RuntimeError, OSError) as exc:
            if loop.time() + delay > deadline:
                raise RuntimeError(
                    f"could not reach Temporal at {settings.temporal_address} "
                    f"({settings.env_name('temporal_address')}): {exc}"
                ) from exc
            log.warning("waiting for Temporal at %s: %s", settings.temporal_address, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def check_temporal(client: Client) -> None:
    """Readiness: the frontend answers its health check."""
    if not await client.service_client.check_health(timeout=timedelta(seconds=1)):
        raise RuntimeError("the Temporal frontend is not serving")
