"""edrs_core.testing's own helpers: `unthrottled` waits out 429s as a client told to retry would."""

from __future__ import annotations

import httpx
import pytest
from edrs_core import testing


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds `unthrottled` slept, in order (nothing is slept)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(testing.asyncio, "sleep", sleep)
    return slept


async def test_unthrottled_honours_retry_after_up_to_a_minute_and_returns_the_answer(
    waits: list[float],
) -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(429),
            httpx.Response(200, json={"ok": True}),
        ]
    )

    async def send() -> httpx.Response:
        return next(answers)

    reply = await testing.unthrottled(send)
    assert (reply.status_code, reply.json()) == (200, {"ok": True})
    assert waits == [3.0, 60.0, 1.0]


async def test_unthrottled_returns_the_last_429_after_thirty_tries(waits: list[float]) -> None:
    sent = 0

    async def send() -> httpx.Response:
        nonlocal sent
        sent += 1
        return httpx.Response(429, headers={"Retry-After": "2"})

    reply = await testing.unthrottled(send)
    assert reply.status_code == 429
    # No wait after the last try: the 429 is returned at once.
    assert sent == 30 and waits == [2.0] * 29
