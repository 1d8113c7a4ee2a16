"""Event consumers a service declares: run through the inbox, drained on SIGTERM, in readiness,
metrics and traces.

    async def erase_user(delivery: ConsumedEvent) -> None:
        await delivery.conn.execute("DELETE FROM episodes WHERE ...", ...)   # the inbox's transaction

    definition = ServiceDefinition(
        ...,
        consumers=[Consumer("memory-user-deleted", ["gateway.user_deleted"], erase_user)],
    )

The runtime subscribes each consumer on `Runtime.bus` once the service is built. For every event
it opens a transaction, claims the event in the inbox (`edrs_inbox`) and runs the handler in that
same transaction: the handler's effects and the inbox row commit together, so a redelivered event
changes nothing. A handler that raises rolls both back; the bus retries with backoff and
dead-letters after `max_deliver` deliveries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic

from edrs_events import BaseEvent, BusObserver, ConsumerOptions, Subscription
from edrs_events.bus import HandlerOutcome
from edrs_events.errors import MalformedEvent
from edrs_events.inbox import Inbox, install_inbox
from edrs_events.pg import Connection
from edrs_events.subjects import type_filter, validate_consumer_name

from edrs_core import metrics
from edrs_core.context import request_context
from edrs_core.settings import SettingsT, SettingsT_co

if TYPE_CHECKING:
    from edrs_core.runtime import Runtime

log = logging.getLogger("edrs.consumers")

# How often the lag gauge is refreshed from the broker.
LAG_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class ConsumedEvent(Generic[SettingsT_co]):
    """What a handler gets: the event, the transaction its effects must use, the runtime (typed
    with the service's settings class)."""

    event: BaseEvent
    # The inbox's transaction: write through it, and the effects commit with the inbox row.
    conn: Connection
    runtime: Runtime[SettingsT_co]


ConsumerHandler = Callable[[ConsumedEvent[SettingsT]], Awaitable[None]]


@dataclass(frozen=True)
class Consumer(Generic[SettingsT]):
    """A durable consumer of the event types `event_types` (`gateway.user_deleted`, `task.*`).

    `name` is the durable name on the bus and the inbox key: keep it stable, and unique in the
    fleet (prefix it with the service's name), or two services would share one queue."""

    name: str
    event_types: Sequence[str]
    handler: ConsumerHandler[SettingsT]
    options: ConsumerOptions = field(default_factory=ConsumerOptions)

    def __post_init__(self) -> None:
        validate_consumer_name(self.name)
        if not self.event_types:
            raise ValueError(f"consumer {self.name!r} declares no event types")
        for pattern in self.event_types:
            type_filter(pattern)


class PrometheusBusObserver(BusObserver):
    """Counts what the bus reports into the service's Prometheus metrics (and still logs)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def malformed(self, reader: str, error: MalformedEvent, where: str) -> None:
        super().malformed(reader, error, where)
        metrics.EVENT_MALFORMED.labels(self.service, reader).inc()

    def handled(
        self, consumer: str, event: BaseEvent, outcome: HandlerOutcome, seconds: float
    ) -> None:
        labels = (self.service, consumer, event.event_type)
        metrics.CONSUMER_DURATION.labels(self.service, consumer).observe(seconds)
        if outcome is HandlerOutcome.ACK:
            metrics.CONSUMER_HANDLED.labels(*labels).inc()
            return
        metrics.CONSUMER_FAILED.labels(*labels).inc()
        if outcome is HandlerOutcome.DEAD:
            metrics.CONSUMER_DEAD_LETTERED.labels(*labels).inc()


class Consumers(Generic[SettingsT]):
    """The running consumers of one service process."""

    def __init__(
        self, runtime: Runtime[SettingsT], declared: Sequence[Consumer[SettingsT]]
    ) -> None:
        self.runtime = runtime
        self.declared = list(declared)
        self.subscriptions: dict[str, Subscription] = {}
        names = [c.name for c in self.declared]
        if len(set(names)) != len(names):
            raise ValueError(f"consumer names must be unique in a service: {names}")

    async def start(self) -> None:
        """Create the inbox table and subscribe every declared consumer on the runtime's bus."""
        if not self.declared:
            return
        rt = self.runtime
        async with rt.db.acquire() as conn:
            await install_inbox(conn)
        for consumer in self.declared:
            self.subscriptions[consumer.name] = await rt.bus.subscribe(
                consumer.name,
                self._handler(consumer),
                event_types=list(consumer.event_types),
                options=consumer.options,
            )
            log.info("consuming %s as %s", ", ".join(consumer.event_types), consumer.name)
        rt.spawn(self._report_lag(), f"{rt.settings.service_name}-consumer-lag")

    def _handler(self, consumer: Consumer[SettingsT]) -> Callable[[BaseEvent], Awaitable[None]]:
        rt = self.runtime
        service = rt.settings.service_name

        async def handle(event: BaseEvent) -> None:
            # The event's tenant and correlation id become the call context, so logs, the
            # outbox's events and peer calls made from the handler carry them; nothing else
            # about identity is taken from the event.
            with request_context(event.client_id, event.correlation_id or str(event.event_id)):
                async with rt.db.acquire() as conn, conn.transaction():
                    if not await Inbox.record(conn, consumer.name, event.event_id):
                        metrics.CONSUMER_DUPLICATES.labels(service, consumer.name).inc()
                        log.info("event %s already handled by %s", event.event_id, consumer.name)
                        return
                    await consumer.handler(ConsumedEvent(event, conn, rt))

        return handle

    async def _report_lag(self) -> None:
        service = self.runtime.settings.service_name
        while True:
            for name, subscription in list(self.subscriptions.items()):
                try:
                    lag = await subscription.lag()
                except Exception:  # a metric must not take the service down; try next round
                    log.debug("lag of %s unknown", name, exc_info=True)
                    continue
                if lag is not None:
                    metrics.CONSUMER_LAG.labels(service, name).set(lag)
            await asyncio.sleep(LAG_INTERVAL_SECONDS)

    def checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """One readiness check per consumer: it still fetches and handles events."""

        def check(name: str) -> Callable[[], Awaitable[None]]:
            async def running() -> None:
                subscription = self.subscriptions.get(name)
                if subscription is None or not subscription.running:
                    raise RuntimeError(f"consumer {name} is not running")

            return running

        return {f"consumer:{c.name}": check(c.name) for c in self.declared}

    async def drain(self, grace: float) -> None:
        """Stop fetching and let in-flight handlers finish, all within `grace` seconds."""
        subscriptions = list(self.subscriptions.values())
        self.subscriptions.clear()
        await asyncio.gather(*(s.stop(grace=grace) for s in subscriptions))
