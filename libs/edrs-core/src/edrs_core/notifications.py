"""PostgreSQL LISTEN/NOTIFY for the streams that wait on a change (task's WatchRun and WaitApproval,
research's WatchJob): one listening connection per process, each waiter woken by the notifications
of its key. The writer sends `SELECT pg_notify(channel, key)` in the transaction that made the
change, so the notification arrives after its commit; a waiter reads, then waits for the next one
(or its timeout, which bounds what a missed notification costs: the listening connection may have
been replaced)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg


class Changed:
    """Set when a notification for the key arrives; a waiter clears it before it reads."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait_for(self, seconds: float) -> None:
        """Returns on a notification or after `seconds` (the waiter reads either way)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


class Notifications:
    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db
        self._conn: Any = None
        self._channels: set[str] = set()
        self._waiters: dict[tuple[str, str], set[Changed]] = {}
        self._lock = asyncio.Lock()

    async def _listen(self, channel: str) -> None:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self.db.acquire()
                self._channels = set()
            if channel not in self._channels:
                await self._conn.add_listener(channel, self._on_notify)
                self._channels.add(channel)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for changed in self._waiters.get((channel, payload), ()):
            changed.set()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str, key: str) -> AsyncIterator[Changed]:
        changed = Changed()
        self._waiters.setdefault((channel, key), set()).add(changed)
        try:
            await self._listen(channel)
            yield changed
        finally:
            waiters = self._waiters.get((channel, key), set())
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop((channel, key), None)

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                for channel in self._channels:
                    await self._conn.remove_listener(channel, self._on_notify)
                await self.db.release(self._conn)
            self._conn = None
