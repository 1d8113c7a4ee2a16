"""Sends queued webhook deliveries: signed per Standard Webhooks, through the outbound client,
retried on the schedule below with jitter, dead-lettered after the last attempt.

The schedule lives in the database (each delivery's `next_attempt_at`), so retries survive
restarts and any replica may send any delivery; the clock is passed in, so tests move through
hours of retries at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from datetime import timedelta

from edrs_core.clock import Clock
from edrs_core.outbound import OutboundClient, OutboundError, OutboundLimits
from edrs_core.secretstore import SecretStoreError
from edrs_integration.webhooks.signing import standard_headers
from edrs_integration.webhooks.store import DueDelivery, WebhookStore, msg_id

log = logging.getLogger("edrs.integration.webhooks")

# The wait before each attempt of one round: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
# 10 h — eight attempts over about 27 hours, enough for a receiver down over a night.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
# Each wait is moved by up to ±20 %, so deliveries that failed together do not return together.
JITTER = 0.2


def retry_delay(
    schedule: Sequence[timedelta], failed_attempts: int, rng: random.Random
) -> timedelta | None:
    """The wait before the next attempt after `failed_attempts` failures in this round; None
    once the schedule is exhausted (a dead letter)."""
    if failed_attempts >= len(schedule):
        return None
    base = schedule[failed_attempts]
    return base * (1 + rng.uniform(-JITTER, JITTER))


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        client: OutboundClient,
        clock: Clock,
        *,
        schedule: Sequence[timedelta] = RETRY_SCHEDULE,
        rng: random.Random | None = None,
        batch: int = 100,
        concurrency: int = 32,
        lease: timedelta = timedelta(minutes=5),
        limits: OutboundLimits | None = None,
    ) -> None:
        if not schedule:
            raise ValueError("the retry schedule needs at least one attempt")
        self.store = store
        self.client = client
        self.clock = clock
        self.schedule = tuple(schedule)
        self.rng = rng or random.Random()
        self.batch = batch
        self.lease = lease
        self.limits = limits
        self._slots = asyncio.Semaphore(concurrency)

    async def run_due(self) -> int:
        """Send every delivery due now; returns how many attempts were made."""
        made = 0
        while True:
            claimed = await self.store.claim_due(self.clock.now(), self.batch, self.lease)
            if not claimed:
                return made
            await asyncio.gather(*(self._attempt(d) for d in claimed))
            made += len(claimed)
            if len(claimed) < self.batch:
                return made

    async def run(self, wake: asyncio.Event, idle_seconds: float = 30.0) -> None:
        """Send due deliveries for the life of the service: woken by `wake` (new deliveries were
        committed), or when the next retry is due, or every `idle_seconds` at the latest."""
        while True:
            wake.clear()
            timeout = idle_seconds
            try:
                if await self.run_due():
                    continue
                due = await self.store.next_due()
                if due is not None:
                    wait = (due - self.clock.now()).total_seconds()
                    timeout = min(max(wait, 0.01), idle_seconds)
            except Exception:
                log.exception("webhook dispatch failed; trying again in %ss", idle_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _attempt(self, due: DueDelivery) -> None:
        async with self._slots:
            now = self.clock.now()
            webhook_id = msg_id(due.id)
            status, error = 0, ""
            started = time.monotonic()
            try:
                secrets = await self.store.signing_secrets(due, now)
                headers = standard_headers(secrets, webhook_id, int(now.timestamp()), due.body)
                response = await self.client.post(
                    due.url,
                    content=due.body,
                    headers=headers,
                    follow_redirects=False,
                    truncate=True,
                    limits=self.limits,
                )
                status = response.status
                if not 200 <= status < 300:
                    error = f"the receiver answered HTTP {status}"
            except OutboundError as exc:
                # The reason names the host and the rule, never the path, query or a secret.
                error = f"{type(exc).__name__}: {exc}"
            except SecretStoreError as exc:
                error = f"signing secret unavailable: {exc}"
            latency_ms = int((time.monotonic() - started) * 1000)
            ok = not error
            failures = due.round_attempts + 1
            delay = None if ok else retry_delay(self.schedule, failures, self.rng)
            state = "succeeded" if ok else ("dead" if delay is None else "pending")
            await self.store.record_attempt(
                due,
                attempted_at=now,
                status_code=status,
                error=error,
                latency_ms=latency_ms,
                state=state,
                next_attempt_at=now + (delay or timedelta(0)),
            )
            log.info(
                "webhook %s to subscription %s, attempt %d: %s",
                webhook_id,
                due.subscription_id,
                due.attempts_total + 1,
                state if ok else f"{state} ({error})",
            )
