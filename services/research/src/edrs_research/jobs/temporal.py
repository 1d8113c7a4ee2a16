"""The research service's connection to Temporal (the task service's frontend and namespace)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError

from edrs_research.config import ResearchSettings

log = logging.getLogger("edrs.research.temporal")


async def connect_temporal(settings: ResearchSettings, *, deadline_seconds: float) -> Client:
    """A client of the configured namespace; retries until `deadline_seconds` (the frontend may
    still be starting), then raises naming EDRS_RESEARCH_TEMPORAL_ADDRESS."""
    assert settings.temporal_address is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    delay = 0.1
    api_key = settings.temporal_api_key
    while True:
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                tls=settings.temporal_tls,
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
    if not await client.service_client.check_health(timeout=timedelta(seconds=1)):
        raise RuntimeError("the Temporal frontend is not serving")
