"""Episodes embedded after they are stored: a turn's reply.

`RecordTurn` stores the reply's episode without a vector and hands it here, so the reply's
embedding (a model call of 10 to 20 ms on a CPU) is not on every conversation turn's path. A worker
embeds what it is handed, in batches, and writes the vectors. Until then recall scores that
episode's relevance 0 (its recency and importance still count): moments, on a fleet that is up.

A sweep, at start-up and every `interval` seconds, embeds every episode still without a vector,
oldest first: one whose turn was stored just before the process stopped, one the reasoning
service could not embed when it was handed over, and rows carried over from before embeddings.
One replica sweeps at a time (an advisory lock); the others skip. A vector is written only where
none is, so a row embedded twice (handed over and swept) is written once.

The hand-off queue is bounded (`max_pending`): when it is full (the reasoning service slower than
the turns, or down) an episode is left to the sweep rather than held in memory. A failing worker
warns once per outage, not once per batch, and says when it works again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from edrs_core.errors import ServiceError
from edrs_events.pg import Connection

from edrs_memory.embeddings import Embedder, vector_literal
from edrs_memory.store import Episode

log = logging.getLogger("edrs.memory.late_embedding")

# Only one replica sweeps at a time.
_LOCK = 0x6D656D5F656D62  # "mem_emb"

_FIRST = """SELECT client_id, id, created_at, text FROM episodes WHERE embedding IS NULL
            ORDER BY created_at, id LIMIT $1"""
_NEXT = """SELECT client_id, id, created_at, text FROM episodes
           WHERE embedding IS NULL AND (created_at, id) > ($2, $3)
           ORDER BY created_at, id LIMIT $1"""
_WRITE = """UPDATE episodes SET embedding = $4::text::vector
            WHERE client_id = $1 AND id = $2 AND created_at = $3 AND embedding IS NULL"""


def _reason(exc: BaseException) -> object:
    """A ServiceError's message (it names the peer), else the exception itself."""
    return getattr(exc, "message", None) or exc


# A peer's or the database's failure: expected while one is down, logged as a line. Anything else
# is a defect, logged with its traceback; in both cases the work goes on.
_EXPECTED = (ServiceError, OSError, asyncpg.PostgresError)


@dataclass(frozen=True)
class Unembedded:
    client_id: str
    id: UUID
    created_at: datetime
    text: str


class LateEmbeddings:
    def __init__(
        self,
        db: asyncpg.Pool,
        embedder: Embedder,
        *,
        interval: float,
        batch_size: int = 32,
        sweep_limit: int = 1_000,
        max_pending: int = 10_000,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.interval = interval
        self.batch_size = batch_size
        self.sweep_limit = sweep_limit
        self._queue: asyncio.Queue[Unembedded] = asyncio.Queue(maxsize=max_pending)
        self._failing = False  # the last batch failed: warned once, until one succeeds
        self._overflowed = False  # the queue was full: warned once, until it has room

    def add(self, client_id: str, episodes: Iterable[Episode]) -> None:
        """Embed these stored episodes soon (never blocks). With the queue full they are left to
        the sweep."""
        left = 0
        for e in episodes:
            try:
                self._queue.put_nowait(Unembedded(client_id, e.id, e.created_at, e.text))
            except asyncio.QueueFull:
                left += 1
        if left and not self._overflowed:
            self._overflowed = True
            log.warning(
                "%d stored episodes waiting for their embedding already; "
                "the sweep embeds the ones that arrive until there is room",
                self._queue.maxsize,
            )
        elif not left:
            self._overflowed = False

    async def run(self) -> None:
        """For the life of the service: a sweep, then what is handed over, sweeping again every
        `interval` seconds."""
        await self._sweep_logged()
        next_sweep = time.monotonic() + self.interval
        while True:
            try:
                first = await asyncio.wait_for(
                    self._queue.get(), max(0.0, next_sweep - time.monotonic())
                )
            except TimeoutError:
                await self._sweep_logged()
                next_sweep = time.monotonic() + self.interval
                continue
            batch = [first]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.embed(batch)
            except _EXPECTED as exc:
                # The sweep embeds them later. One warning per outage; the rest at debug level.
                log.log(
                    logging.DEBUG if self._failing else logging.WARNING,
                    "could not embed %d stored episodes now; the next sweep will: %s",
                    len(batch),
                    _reason(exc),
                )
                self._failing = True
            except Exception:
                log.exception("could not embed %d stored episodes now", len(batch))
            else:
                if self._failing:
                    self._failing = False
                    log.info("embedding stored episodes works again")

    async def embed(self, batch: list[Unembedded], conn: Connection | None = None) -> None:
        """One Embed call for the batch, then each vector written where none is yet (through
        `conn`, else a connection of the pool taken once the vectors are there)."""
        vectors = await self.embedder.embed([u.text for u in batch])
        rows = [
            (u.client_id, u.id, u.created_at, vector_literal(v))
            for u, v in zip(batch, vectors, strict=True)
        ]
        if conn is not None:
            await conn.executemany(_WRITE, rows)
            return
        async with self.db.acquire() as pooled:
            await pooled.executemany(_WRITE, rows)

    async def sweep(self) -> int | None:
        """Embed episodes without a vector, oldest first, at most `sweep_limit` of them; how many
        were embedded, or None when another replica holds the sweep."""
        done = 0
        async with self.db.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
                return None
            try:
                after: tuple[datetime, UUID] | None = None
                while done < self.sweep_limit:
                    # Keyset order: each row is read once per sweep, whatever befalls it.
                    size = min(self.batch_size, self.sweep_limit - done)
                    if after is None:
                        rows = await conn.fetch(_FIRST, size)
                    else:
                        rows = await conn.fetch(_NEXT, size, *after)
                    if not rows:
                        break
                    batch = [Unembedded(**dict(r)) for r in rows]
                    await self.embed(batch, conn)
                    done += len(batch)
                    after = (batch[-1].created_at, batch[-1].id)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
        return done

    async def _sweep_logged(self) -> None:
        try:
            done = await self.sweep()
        except _EXPECTED as exc:
            log.warning("sweep of episodes without embeddings stopped: %s", _reason(exc))
            return
        except Exception:
            log.exception("sweep of episodes without embeddings stopped")
            return
        if done:
            log.info("embedded %d stored episodes that had no embedding", done)
