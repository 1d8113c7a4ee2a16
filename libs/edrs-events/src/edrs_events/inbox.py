"""Idempotent consumers: an inbox row per (consumer, event_id) in the effects' transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from uuid import UUID

from edrs_events.bus import Handler
from edrs_events.envelope import BaseEvent
from edrs_events.outbox import _INSTALL_LOCK, sql
from edrs_events.pg import Connection

if TYPE_CHECKING:
    import asyncpg

TransactionalHandler = Callable[[BaseEvent, Connection], Awaitable[None]]


async def install_inbox(conn: Connection) -> None:
    """Create the inbox table if missing (idempotent)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _INSTALL_LOCK)
        await conn.execute(sql("inbox.sql"))


class Inbox:
    """Runs a handler at most once per event per consumer, whatever the broker redelivers."""

    def __init__(self, pool: asyncpg.Pool, consumer: str) -> None:
        self.pool = pool
        self.consumer = consumer

    @staticmethod
    async def record(conn: Connection, consumer: str, event_id: UUID) -> bool:
        """Claim `event_id` for `consumer` in `conn`'s transaction; False if already handled.

        A concurrent redelivery blocks on the primary key until the first transaction ends, then
        sees the row: so exactly one of them runs the effects.
        """
        inserted = await conn.fetchval(
            "INSERT INTO edrs_inbox (consumer, event_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING true",
            consumer,
            event_id,
        )
        return bool(inserted)

    def handler(self, handle: TransactionalHandler) -> Handler:
        """A bus handler that opens a transaction, claims the event, and runs `handle` in it."""

        async def run(event: BaseEvent) -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                if await self.record(conn, self.consumer, event.event_id):
                    await handle(event, conn)

        return run

    def batched_handler(
        self, handle: TransactionalHandler, *, max_batch: int = 256, parallel: int = 1
    ) -> Handler:
        """Like `handler`, but events arriving together share one transaction (one commit).

        Run the subscription with `concurrency` > 1: the events its workers hold at the same time
        are claimed with one multi-row insert and handled in one transaction, which is what makes
        thousands of events per second possible. If that transaction fails, each event of the
        batch is retried in a transaction of its own, so one poison event fails alone.

        `parallel` batches may be in flight at once, each in its own transaction on its own pool
        connection, so one batch's round trips overlap another's (an event in two of them is
        still handled once: the second claim waits for the first transaction, then finds the
        row). Keep it below the pool's size if `handle` takes connections of its own.
        """
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        pending: list[tuple[BaseEvent, asyncio.Future[None]]] = []
        flushers = 0
        tasks: set[asyncio.Task[None]] = set()  # a reference to each running flush
        single = self.handler(handle)

        async def flush() -> None:
            nonlocal flushers
            try:
                # Let the other workers that are about to call in join this batch.
                await asyncio.sleep(0)
                while pending:
                    batch = pending[:max_batch]
                    del pending[:max_batch]
                    await flush_one(batch)
            finally:
                flushers -= 1

        async def flush_one(batch: list[tuple[BaseEvent, asyncio.Future[None]]]) -> None:
            try:
                await self._run_batch(handle, [event for event, _ in batch])
            except Exception:  # fall back to one transaction per event; see docstring
                results = await asyncio.gather(
                    *(single(event) for event, _ in batch), return_exceptions=True
                )
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # the waiting worker was cancelled (consumer stopping)
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(None)
                return
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

        async def run(event: BaseEvent) -> None:
            nonlocal flushers
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            pending.append((event, future))
            if flushers < parallel:
                flushers += 1
                tasks.add(task := asyncio.create_task(flush()))
                task.add_done_callback(tasks.discard)
            await future

        return run

    async def _run_batch(self, handle: TransactionalHandler, events: list[BaseEvent]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = {
                row["event_id"]
                for row in await conn.fetch(
                    "INSERT INTO edrs_inbox (consumer, event_id) "
                    "SELECT $1, id FROM unnest($2::uuid[]) AS id "
                    "ON CONFLICT DO NOTHING RETURNING event_id",
                    self.consumer,
                    # In one order, so two batches in flight claim shared ids without deadlock.
                    sorted({event.event_id for event in events}),
                )
            }
            for event in events:
                if event.event_id in fresh:
                    fresh.discard(event.event_id)  # the same event twice in one batch runs once
                    await handle(event, conn)

    async def handled(self, event_id: UUID) -> bool:
        """Whether this consumer has handled `event_id`."""
        async with self.pool.acquire() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT true FROM edrs_inbox WHERE consumer = $1 AND event_id = $2",
                    self.consumer,
                    event_id,
                )
            )
