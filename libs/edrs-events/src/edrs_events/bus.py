"""The bus interface every adapter implements, consumer options, dead letters, wire message."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from types import TracebackType
from typing import Self

from edrs_events.catalog import SchemaCatalog, default_catalog
from edrs_events.envelope import BaseEvent, Priority
from edrs_events.subjects import DEFAULT_NAMESPACE, Subjects
from edrs_events.tracing import consume_span, publish_span

log = logging.getLogger("edrs_events")

Handler = Callable[[BaseEvent], Awaitable[None]]

# Header names shared by the adapters (NATS headers, Pulsar properties).
H_EVENT_TYPE = "edrs-event-type"
H_PRIORITY = "edrs-priority"
H_CLIENT_ID = "edrs-client-id"
H_AGGREGATE_ID = "edrs-aggregate-id"
H_DLQ_REASON = "edrs-dlq-reason"
H_DLQ_DELIVERIES = "edrs-dlq-deliveries"
H_DLQ_CONSUMER = "edrs-dlq-consumer"
H_DLQ_SUBJECT = "edrs-dlq-subject"
H_DLQ_FAILED_AT = "edrs-dlq-failed-at"
H_REPLAYED_FROM = "edrs-replayed-from"


class DeliverFrom(StrEnum):
    """Where a durable consumer starts the first time it is created."""

    ALL = "all"  # everything the stream still retains
    NEW = "new"  # only events published after the consumer was created


@dataclass(frozen=True)
class ConsumerOptions:
    """Delivery settings of one durable consumer; every one is set explicitly on the broker."""

    ack_wait: float = 30.0  # seconds before an unacked delivery is redelivered
    max_deliver: int = 5  # deliveries before the event moves to the dead-letter stream
    backoff: tuple[float, ...] = (
        1.0,
        5.0,
        30.0,
    )  # delay before redelivery n after a handler failure
    max_ack_pending: int = 1000  # unacked deliveries per lane before the broker pauses it
    batch: int = 100  # events fetched per lane per request (also the per-lane local buffer)
    concurrency: int = 1  # handler calls in flight; 1 keeps per-lane order
    deliver_from: DeliverFrom = DeliverFrom.ALL

    def __post_init__(self) -> None:
        if self.max_deliver < 1:
            raise ValueError(f"max_deliver must be >= 1, got {self.max_deliver}")
        if self.ack_wait <= 0:
            raise ValueError(f"ack_wait must be > 0 seconds, got {self.ack_wait}")
        if self.batch < 1 or self.concurrency < 1 or self.max_ack_pending < 1:
            raise ValueError("batch, concurrency and max_ack_pending must be >= 1")

    def redelivery_delay(self, deliveries: int) -> float:
        """Backoff before the next attempt after `deliveries` failed ones."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(deliveries, len(self.backoff)) - 1]


@dataclass(frozen=True)
class DeadLetter:
    """An event a consumer gave up on, with why and after how many deliveries."""

    dlq_id: int
    consumer: str
    event_type: str
    event_id: str
    reason: str
    deliveries: int
    failed_at: datetime
    body: bytes = field(repr=False)

    def event(self) -> BaseEvent:
        return BaseEvent.from_json(self.body)


@dataclass(frozen=True)
class WireMessage:
    """An encoded event ready for a broker: what the outbox stores and the relay sends."""

    event_id: str
    event_type: str
    priority: Priority
    body: bytes
    client_id: str | None = None
    aggregate_id: str | None = None
    msg_id: str | None = None  # broker dedup id; the event id unless replaying

    @property
    def dedup_id(self) -> str:
        return self.msg_id or self.event_id

    def headers(self) -> dict[str, str]:
        headers = {H_EVENT_TYPE: self.event_type, H_PRIORITY: self.priority.value}
        if self.client_id:
            headers[H_CLIENT_ID] = self.client_id
        if self.aggregate_id:
            headers[H_AGGREGATE_ID] = self.aggregate_id
        return headers

    @classmethod
    def of(cls, event: BaseEvent, *, aggregate_id: str | None = None) -> WireMessage:
        return cls(
            event_id=str(event.event_id),
            event_type=event.event_type,
            priority=event.priority,
            body=event.to_json(),
            client_id=event.client_id,
            aggregate_id=aggregate_id,
        )


@dataclass(frozen=True)
class SequencedEvent:
    """An event with its position in the bus's log, as `EventBus.tail_sequenced` yields it.

    `sequence` grows with every event the bus stores (all tenants and types share it), so a reader
    that remembers the last one it saw resumes with `start_sequence=sequence + 1`."""

    sequence: int
    event: BaseEvent


class Subscription(ABC):
    """A running durable consumer."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop fetching, let in-flight handlers finish, hand back what was not started."""


class HandlerOutcome(Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


async def run_handler(
    consumer: str, handler: Handler, event: BaseEvent, deliveries: int, options: ConsumerOptions
) -> tuple[HandlerOutcome, str]:
    """Call `handler` inside a consumer span; decide ack, retry with backoff, or dead letter."""
    with consume_span(consumer, event) as span:
        try:
            await handler(event)
        except Exception as exc:  # the handler's failure is data here, not a crash of the consumer
            span.record_exception(exc)
            reason = f"{type(exc).__name__}: {exc}"
            if deliveries >= options.max_deliver:
                log.warning("event %s dead-lettered by %s: %s", event.event_id, consumer, reason)
                return HandlerOutcome.DEAD, reason
            log.info(
                "event %s failed in %s (delivery %d): %s",
                event.event_id,
                consumer,
                deliveries,
                reason,
            )
            return HandlerOutcome.RETRY, reason
    return HandlerOutcome.ACK, ""


class EventBus(ABC):
    """Publish events, run durable consumers, manage dead letters (NATS, Pulsar, memory)."""

    def __init__(
        self, *, catalog: SchemaCatalog | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        self.catalog = catalog if catalog is not None else default_catalog()
        self.subjects = Subjects(namespace)

    def encode(self, event: BaseEvent, *, aggregate_id: str | None = None) -> WireMessage:
        """Validate `event` against the catalog and encode it; raises naming the bad field."""
        self.catalog.validate(event)
        return WireMessage.of(event, aggregate_id=aggregate_id)

    async def publish(self, event: BaseEvent) -> None:
        """Validate and publish one event; returns once the broker has stored it."""
        self.catalog.validate(event)
        with publish_span(event) as stamped:
            await self.publish_wire([WireMessage.of(stamped)])

    async def publish_many(self, events: Sequence[BaseEvent]) -> None:
        """Validate all, then publish with pipelined acks; returns once every one is stored."""
        for event in events:
            self.catalog.validate(event)
        messages = []
        for event in events:
            with publish_span(event) as stamped:
                messages.append(WireMessage.of(stamped))
        await self.publish_wire(messages)

    @abstractmethod
    async def publish_wire(self, messages: Sequence[WireMessage]) -> None:
        """Publish already-validated messages in order, deduplicated by `dedup_id`."""

    @abstractmethod
    async def subscribe(
        self,
        consumer: str,
        handler: Handler,
        *,
        event_types: Sequence[str] = ("*",),
        options: ConsumerOptions | None = None,
    ) -> Subscription:
        """Start durable consumer `consumer` for the given type patterns (`persona.*`, ...)."""

    @abstractmethod
    def tail(
        self,
        pattern: str = "*",
        *,
        priority: Priority | None = None,
        client_id: str | None = None,
        from_start: bool = False,
    ) -> AsyncGenerator[BaseEvent, None]:
        """Live view of events as they are published (no ack, no durable state)."""

    def tail_sequenced(
        self,
        pattern: str = "*",
        *,
        priority: Priority | None = None,
        client_id: str | None = None,
        start_sequence: int | None = None,
    ) -> AsyncGenerator[SequencedEvent, None]:
        """`tail`, resumable: each event comes with its log sequence, and the view starts at
        `start_sequence` (the oldest retained event if that one is gone) or, when None, with the
        next event published. Only buses with one ordered log (NATS, memory) can do this."""
        raise NotImplementedError(
            f"{type(self).__name__} has no single event sequence, so its tail cannot resume; "
            "use the NATS bus"
        )

    async def last_sequence(self) -> int:
        """Sequence of the newest stored event (0 when there is none): `tail_sequenced` from
        this plus one sees exactly the events published after this call."""
        raise NotImplementedError(
            f"{type(self).__name__} has no single event sequence; use the NATS bus"
        )

    @abstractmethod
    async def dead_letters(
        self, *, consumer: str | None = None, event_type: str | None = None
    ) -> list[DeadLetter]:
        """Dead letters not yet replayed, oldest first, optionally filtered."""

    @abstractmethod
    async def replay_dead_letter(self, dlq_id: int) -> DeadLetter:
        """Publish dead letter `dlq_id` again to its original subject and remove it from the DLQ."""

    async def replay_dead_letters(
        self, *, consumer: str | None = None, event_type: str | None = None
    ) -> list[DeadLetter]:
        """Replay every dead letter matching the filter."""
        replayed = []
        for letter in await self.dead_letters(consumer=consumer, event_type=event_type):
            replayed.append(await self.replay_dead_letter(letter.dlq_id))
        return replayed

    @abstractmethod
    async def close(self) -> None:
        """Flush and disconnect."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect_bus(
    url: str,
    *,
    catalog: SchemaCatalog | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> EventBus:
    """Connect to the bus named by `url`: `nats://...` (default), `pulsar://...` or `memory://`."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("nats", "tls"):
        from edrs_events.nats_bus import NatsBus

        return await NatsBus.connect(url, catalog=catalog, namespace=namespace)
    if scheme in ("pulsar", "pulsar+ssl"):
        from edrs_events.pulsar_bus import PulsarBus

        return await PulsarBus.connect(url, catalog=catalog, namespace=namespace)
    if scheme == "memory":
        from edrs_events.memory_bus import InMemoryBus

        return InMemoryBus(catalog=catalog, namespace=namespace)
    raise ValueError(f"bus url {url!r} must start with nats://, pulsar:// or memory://")
