"""A service's own events: written to its outbox in the caller's transaction, relayed to the bus.

    events = await start_service_events(rt)          # once, in the service's build()
    async with rt.db.acquire() as conn, conn.transaction():
        ...                                          # the state change
        await events.add(conn, "memory.episode_stored", {...}, aggregate_id=str(episode_id))

The relay runs for the life of the service and publishes on the runtime's bus (`Runtime.bus`) with
the event id as the broker's dedup id, so a crash between commit and publish neither loses nor
duplicates an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from edrs_events import BaseEvent, Priority
from edrs_events.outbox import Outbox, install_outbox
from edrs_events.pg import Connection
from edrs_events.relay import OutboxRelay

from edrs_core.context import client_id_var, request_id_var
from edrs_core.runtime import Runtime
from edrs_core.settings import ServiceSettings


class ServiceEvents:
    """Builds events stamped with this service and the current call's tenant, into the outbox."""

    def __init__(self, source: str, outbox: Outbox | None = None) -> None:
        self.source = source
        self.outbox = outbox or Outbox()

    def event(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        client_id: str | None = None,
    ) -> BaseEvent:
        """One event of this service in the current call's tenant, correlated by its request id."""
        return BaseEvent(
            event_type=event_type,
            source_container=self.source,
            priority=priority,
            client_id=client_id or client_id_var.get(),
            correlation_id=request_id_var.get(),
            payload=dict(payload),
        )

    async def add(
        self,
        conn: Connection,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        aggregate_id: str | None = None,
        client_id: str | None = None,
    ) -> BaseEvent:
        """Validate against the catalog and write in `conn`'s transaction; returns the event.

        In the current call's tenant, unless `client_id` names it (work outside a tenant's call)."""
        event = self.event(event_type, payload, priority=priority, client_id=client_id)
        await self.outbox.add(conn, event, aggregate_id=aggregate_id)
        return event


async def start_service_events(rt: Runtime[ServiceSettings]) -> ServiceEvents:
    """Install the outbox table, start the relay to the bus, and return the service's writer."""
    async with rt.db.acquire() as conn:
        await install_outbox(conn)
    relay = OutboxRelay(rt.settings.database_url, rt.bus, poll_interval=1.0)
    stop = asyncio.Event()
    rt.spawn(relay.run(stop), f"{rt.settings.service_name}-outbox-relay")

    async def close() -> None:
        stop.set()

    rt.on_close(close)
    return ServiceEvents(rt.settings.service_name)
