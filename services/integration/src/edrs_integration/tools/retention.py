"""Retention of keyed tool calls: a periodic sweep deletes, in bounded batches across tenants,
the calls finished longer ago than EDRS_INTEGRATION_TOOL_CALL_KEY_RETENTION_HOURS (and claims
lost that long past their stale time); a call still running is never deleted. A repeat of an
expired key runs the tool again (docs/integration.md, "Idempotency key")."""

from __future__ import annotations

import asyncio
import logging

from edrs_integration.store.tools import KeyedCallStore

log = logging.getLogger("edrs.integration.tools")

# Rows deleted per transaction: each batch is one short DELETE, so no lock is held for long.
SWEEP_BATCH = 500


async def sweep_keyed_calls(
    store: KeyedCallStore, retention_hours: float, batch: int = SWEEP_BATCH
) -> int:
    """Delete every expired keyed call, a batch per transaction; returns how many."""
    deleted = 0
    while True:
        n = await store.sweep_calls(retention_hours, batch)
        deleted += n
        if n < batch:
            return deleted
        await asyncio.sleep(0)  # let calls of the service run between batches


async def run_sweeper(store: KeyedCallStore, retention_hours: float, interval: float) -> None:
    """Sweep every `interval` seconds for the life of the service."""
    while True:
        try:
            deleted = await sweep_keyed_calls(store, retention_hours)
            if deleted:
                log.info("deleted %d keyed tool calls older than %gh", deleted, retention_hours)
        except Exception:
            log.exception("sweeping expired keyed tool calls failed; trying again in %gs", interval)
        await asyncio.sleep(interval)
