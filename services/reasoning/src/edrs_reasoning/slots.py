"""Admission to the model: a fixed number of generation slots and a bounded wait for one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edrs_core import ResourceExhausted

__all__ = ["GenerationSlots", "ResourceExhausted"]


class GenerationSlots:
    """`capacity` generations run at once; at most `max_waiting` more wait, the rest are refused
    at once so a caller can back off instead of piling onto a saturated model."""

    def __init__(self, capacity: int, max_waiting: int, what: str = "generations") -> None:
        self.capacity = capacity
        self.what = what
        self.max_waiting = max_waiting
        self._semaphore = asyncio.Semaphore(capacity)
        self.waiting = 0
        self.running = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[float]:
        """Hold a slot for the block; yields the milliseconds spent waiting for it."""
        start = time.perf_counter()
        if self._semaphore.locked():
            if self.waiting >= self.max_waiting:
                raise ResourceExhausted(
                    f"the model is busy: {self.running} {self.what} running and {self.waiting} "
                    f"waiting (limit {self.max_waiting}); retry later"
                )
            self.waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        self.running += 1
        try:
            yield (time.perf_counter() - start) * 1e3
        finally:
            self.running -= 1
            self._semaphore.release()
