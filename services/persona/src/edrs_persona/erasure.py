"""Erasing a deleted user: the persona service's consumer of `gateway.user_deleted`."""

from __future__ import annotations

import logging

from edrs_core import ServiceSettings
from edrs_core.consumers import ConsumedEvent

from edrs_persona.store import PersonaStore

log = logging.getLogger("edrs.persona.erasure")

# The durable consumer's name on the bus and in the inbox: never rename it (see docs/events.md).
CONSUMER = "persona-user-deleted"


async def erase_user(delivery: ConsumedEvent[ServiceSettings], store: PersonaStore) -> None:
    """Delete the user's relationships, conversations and messages with every persona of the
    event's tenant and publish `persona.user_erased`, in the inbox's transaction (once, however
    often the event is delivered). Memory erases its part on the same event."""
    event = delivery.event
    if event.client_id is None:
        # Nothing to scope the erase to; a tenant-less deletion event is a publisher's bug.
        raise ValueError(f"event {event.event_id} has no tenant (client_id)")
    erased = await store.erase_user(delivery.conn, event.client_id, str(event.payload["user_id"]))
    log.info(
        "erased a deleted user: %d relationships, %d conversations, %d messages",
        erased.relationships,
        erased.conversations,
        erased.messages,
    )
