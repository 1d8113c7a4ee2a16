"""A consumer process for the fault test: inbox plus one effect row per event, until killed."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import asyncpg
from edrs_events import BaseEvent, ConsumerOptions
from edrs_events.inbox import Inbox
from edrs_events.nats_bus import NatsBus


async def main(dsn: str, nats_url: str, namespace: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=8)
    bus = await NatsBus.connect(nats_url, namespace=namespace, name="fault-consumer")
    inbox = Inbox(pool, "fault")

    async def effect(event: BaseEvent, conn: asyncpg.Connection) -> None:
        # No unique key here on purpose: a second effect for one event would show as a duplicate.
        await conn.execute("INSERT INTO effects (event_id) VALUES ($1)", event.event_id)

    options = ConsumerOptions(
        ack_wait=5.0,
        max_deliver=50,
        backoff=(0.2,),
        batch=200,
        concurrency=64,
        max_ack_pending=4000,
    )
    await bus.subscribe(
        "fault", inbox.batched_handler(effect), event_types=["task.*"], options=options
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await bus.close()
    await pool.close()


if __name__ == "__main__":
    # INFO shows the subscription's retries (a fetch or an ack lost while the broker is away).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main(*sys.argv[1:4]))
