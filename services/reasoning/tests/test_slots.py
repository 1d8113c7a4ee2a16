"""Admission to the model: slots run, a bounded number wait, the rest are refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from edrs_core.testing import wait_until
from edrs_reasoning.slots import GenerationSlots, ResourceExhausted


async def test_a_call_beyond_the_queue_is_refused_and_a_queued_one_runs_later() -> None:
    slots = GenerationSlots(capacity=1, max_waiting=1)
    release = asyncio.Event()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with slots.acquire():
            order.append(name)
            await release.wait()

    first = asyncio.create_task(hold("first"))
    await wait_until(holds(lambda: slots.running == 1), 5, "the first call to run")
    second = asyncio.create_task(hold("second"))
    await wait_until(holds(lambda: slots.waiting == 1), 5, "the second call to wait")
    with pytest.raises(ResourceExhausted, match="busy"):
        async with slots.acquire():
            pass
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert (slots.running, slots.waiting) == (0, 0)


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    slots = GenerationSlots(capacity=1, max_waiting=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with slots.acquire():
            await release.wait()

    first = asyncio.create_task(hold())
    await wait_until(holds(lambda: slots.running == 1), 5, "the first call to run")
    waiter = asyncio.create_task(hold())
    await wait_until(holds(lambda: slots.waiting == 1), 5, "a waiter")
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert slots.waiting == 0
    release.set()
    await first
    async with slots.acquire() as queue_ms:
        assert queue_ms >= 0


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()

    return predicate
