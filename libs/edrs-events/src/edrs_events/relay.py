"""Outbox relay: publish pending rows in order, mark them sent (`python -m edrs_events.relay`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

import asyncpg

from edrs_events.bus import EventBus, WireMessage, connect_bus
from edrs_events.envelope import Priority
from edrs_events.loop import run as run_on_fast_loop
from edrs_events.outbox import OUTBOX_CHANNEL, OUTBOX_TABLE, install_outbox
from edrs_events.pg import Connection

log = logging.getLogger("edrs_events.relay")

# One relay per database publishes at a time (the others wait on this lock), which keeps the
# outbox order; a killed relay's session ends and the lock passes to the next one.
_LEADER_LOCK = 0x0ED5_5E1A
_PRIORITY = {p.value: p for p in Priority}  # a dict lookup per row, not an Enum call


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    publish_failures: int = 0


class OutboxRelay:
    """Moves outbox rows to the bus: in position order, at least once, deduplicated by event id.

    Crash safety: a row is marked sent only after the broker confirmed it, so a relay killed at any
    point republishes at most its last batch, and the broker drops those by `Nats-Msg-Id`.
    """

    def __init__(
        self,
        dsn: str,
        bus: EventBus,
        *,
        batch_size: int = 1000,
        poll_interval: float = 2.0,
        retention: float = 7 * 86_400.0,
    ) -> None:
        self.dsn = dsn
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval  # fallback if a NOTIFY is missed (e.g. reconnect)
        self.retention = retention
        self.stats = RelayStats()
        self._wake = asyncio.Event()
        self._last_prune: float | None = None  # monotonic time of the last prune

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until `stop` is set, reconnecting to PostgreSQL if the connection drops."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self._run_connected(stop)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                log.warning("relay lost its database connection (%r); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await install_outbox(conn)
            await conn.execute("SELECT pg_advisory_lock($1)", _LEADER_LOCK)
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            log.info("relay is the leader; publishing")
            stopping = asyncio.ensure_future(stop.wait())
            try:
                while not stop.is_set():
                    self._wake.clear()
                    if await self.relay_once(conn):
                        continue
                    woken = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait(
                        {woken, stopping},
                        timeout=self.poll_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    woken.cancel()
            finally:
                stopping.cancel()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def relay_once(self, conn: Connection) -> int:
        """Publish one batch of pending rows; returns how many were published (0: none pending)."""
        rows = await conn.fetch(
            f"SELECT position, event_id, event_type, priority, client_id, aggregate_id, body "
            f"FROM {OUTBOX_TABLE} WHERE sent_at IS NULL ORDER BY position LIMIT $1",
            self.batch_size,
        )
        if not rows:
            await self._maybe_prune(conn)
            return 0
        messages = [
            WireMessage(
                event_id=str(row["event_id"]),
                event_type=row["event_type"],
                priority=_PRIORITY[row["priority"]],
                body=bytes(row["body"]),
                client_id=row["client_id"],
                aggregate_id=row["aggregate_id"],
            )
            for row in rows
        ]
        try:
            await self.bus.publish_wire(messages)
        except Exception as exc:  # broker down or restarting: keep the rows, try again
            self.stats.publish_failures += 1
            log.warning("publish of %d outbox rows failed (%r); retrying", len(rows), exc)
            await asyncio.sleep(0.5)
            return len(rows)
        await conn.execute(
            f"UPDATE {OUTBOX_TABLE} SET sent_at = now() WHERE position = ANY($1::bigint[])",
            [row["position"] for row in rows],
        )
        self.stats.published += len(rows)
        self.stats.batches += 1
        return len(rows)

    async def _maybe_prune(self, conn: Connection) -> None:
        now = time.monotonic()
        # At most once a minute; the first idle moment prunes (the monotonic clock may be young).
        if self._last_prune is not None and now - self._last_prune < 60.0:
            return
        self._last_prune = now
        # Sent rows are kept for `retention` (audit, re-drive); pruning runs when the relay is idle.
        await conn.execute(
            f"DELETE FROM {OUTBOX_TABLE} WHERE sent_at < now() - make_interval(secs => $1)",
            self.retention,
        )


async def _main(args: argparse.Namespace) -> None:
    bus = await connect_bus(args.bus_url, namespace=args.namespace)
    relay = OutboxRelay(args.dsn, bus, batch_size=args.batch_size, poll_interval=args.poll_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await relay.run(stop)
    finally:
        await bus.close()


def main() -> None:
    """Entry point: `python -m edrs_events.relay --dsn ... --bus-url ...`."""
    parser = argparse.ArgumentParser(
        description="Publish a service's outbox to the EDRS event bus."
    )
    parser.add_argument("--dsn", default=os.environ.get("EDRS_OUTBOX_DSN"), help="PostgreSQL DSN")
    parser.add_argument(
        "--bus-url",
        "--nats-url",  # its name before the bus could be Pulsar; still accepted
        dest="bus_url",
        default=os.environ.get("EDRS_BUS_URL")
        or os.environ.get("EDRS_NATS_URL", "nats://127.0.0.1:4222"),
        help="bus URL (nats://, pulsar://); env EDRS_BUS_URL (or EDRS_NATS_URL)",
    )
    parser.add_argument("--namespace", default=os.environ.get("EDRS_EVENTS_NAMESPACE", "edrs"))
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or env EDRS_OUTBOX_DSN) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_on_fast_loop(_main(args))


if __name__ == "__main__":
    main()
