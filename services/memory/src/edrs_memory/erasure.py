"""Erasing a deleted user: memory's consumer of `gateway.user_deleted`."""

from __future__ import annotations

import logging

from edrs_core import ServiceSettings
from edrs_core.consumers import ConsumedEvent

from edrs_memory.store.postgres import PostgresMemoryStore
from edrs_memory.working import WorkingMemory

log = logging.getLogger("edrs.memory.erasure")

# The durable consumer's name on the bus and in the inbox: never rename it (see docs/events.md).
CONSUMER = "memory-user-deleted"


async def erase_user(
    delivery: ConsumedEvent[ServiceSettings], store: PostgresMemoryStore, working: WorkingMemory
) -> None:
    """Delete the user's facts, episodes and working memory (PostgreSQL and Redis) with every
    persona of the event's tenant, and publish `memory.user_erased`, in the inbox's transaction.

    Redis is cleared inside the handler, before the commit: should the commit fail, the bus
    redelivers and the erase runs again (deleting keys twice changes nothing), while a key
    deleted early only means the durable copy is read back into Redis in the meantime."""
    event = delivery.event
    if event.client_id is None:
        # Nothing to scope the erase to; a tenant-less deletion event is a publisher's bug.
        raise ValueError(f"event {event.event_id} has no tenant (client_id)")
    user_id = str(event.payload["user_id"])
    counts, conversations = await store.erase_user(delivery.conn, event.client_id, user_id)
    keys = await working.drop_user(event.client_id, user_id, conversations)
    log.info(
        "erased a deleted user: %d episodes, %d facts, %d working items, %d Redis keys",
        counts.episodes,
        counts.facts,
        counts.working_items,
        keys,
    )
