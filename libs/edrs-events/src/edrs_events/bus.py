"""The bus interface every adapter implements, consumer options, dead letters, wire message."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from types import TracebackType
from typing import Self

from pydantic import ValidationError

from edrs_events.catalog import SchemaCatalog, default_catalog
from edrs_events.envelope import BaseEvent, Priority
from edrs_events.errors import MalformedEvent
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


def decode_event(body: bytes, headers: Mapping[str, str] | None = None) -> BaseEvent:
    """The envelope in `body`, checked against the copies of its fields in `headers`.

    Headers are optional (a publisher in another language may send the bare envelope), but when
    one is there it must agree with the body: a message whose `edrs-client-id` names one tenant
    while its envelope names another is refused rather than delivered to either of them.
    Raises `MalformedEvent` saying why, without quoting the body (it may hold personal data)."""
    try:
        event = BaseEvent.from_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise MalformedEvent(
            f"unparseable envelope ({len(body)} bytes): {where}: {first['msg']}"
        ) from None
    for header, value in (
        (H_CLIENT_ID, event.client_id),
        (H_EVENT_TYPE, event.event_type),
        (H_PRIORITY, event.priority.value),
    ):
        if headers and header in headers and headers[header] != (value or ""):
            raise MalformedEvent(
                f"header {header}={headers[header]!r} contradicts the envelope's {value!r} "
                f"(event {event.event_id})"
            )
    return event


class BusObserver:
    """What a bus tells about its readers. This base only logs; edrs-core's runtime subclasses it
    to count into Prometheus (`edrs_event_malformed_total`, `edrs_event_consumer_*`)."""

    def malformed(self, reader: str, error: MalformedEvent, where: str) -> None:
        """`reader` (a consumer's name, or `tail`) met a message it cannot use, at `where`."""
        log.warning("%s skipped a malformed message at %s: %s", reader, where, error)

    def handled(
        self, consumer: str, event: BaseEvent, outcome: HandlerOutcome, seconds: float
    ) -> None:
        """`consumer`'s handler ran on `event`: acked, to be retried, or dead-lettered."""


class Subscription(ABC):
    """A running durable consumer."""

    consumer: str

    @abstractmethod
    async def stop(self, *, grace: float | None = None) -> None:
        """Stop fetching, let in-flight handlers finish, hand back what was not started.

        Handlers still running after `grace` seconds (default: the consumer's `ack_wait`) are
        cancelled; the broker redelivers their events."""

    @property
    def running(self) -> bool:
        """Whether it still fetches and handles events (readiness reports it)."""
        return True

    async def lag(self) -> int | None:
        """Events stored for this consumer and not yet acknowledged; None when the broker
        cannot tell cheaply."""
        return None


class HandlerOutcome(Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


async def run_handler(
    consumer: str,
    handler: Handler,
    event: BaseEvent,
    deliveries: int,
    options: ConsumerOptions,
    observer: BusObserver | None = None,
) -> tuple[HandlerOutcome, str]:
    """Call `handler` inside a consumer span; decide ack, retry with backoff, or dead letter."""
    started = time.monotonic()
    outcome, reason = HandlerOutcome.ACK, ""
    with consume_span(consumer, event) as span:
        try:
            await handler(event)
        except Exception as exc:  # the handler's failure is data here, not a crash of the consumer
            span.record_exception(exc)
            reason = f"{type(exc).__name__}: {exc}"
            if deliveries >= options.max_deliver:
                log.warning("event %s dead-lettered by %s: %s", event.event_id, consumer, reason)
                outcome = HandlerOutcome.DEAD
            else:
                log.info(
                    "event %s failed in %s (delivery %d): %s",
                    event.event_id,
                    consumer,
                    deliveries,
                    reason,
                )
                outcome = HandlerOutcome.RETRY
    if observer is not None:
        observer.handled(consumer, event, outcome, time.monotonic() - started)
    return outcome, reason


class EventBus(ABC):
    """Publish events, run durable consumers, manage dead letters (NATS, Pulsar, memory)."""

    # The largest encoded event the broker stores; publishers refuse bigger ones up front.
    max_message_bytes: int = 1024 * 1024

    def __init__(
        self, *, catalog: SchemaCatalog | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        self.catalog = catalog if catalog is not None else default_catalog()
        self.subjects = Subjects(namespace)
        self.observer = BusObserver()

    @abstractmethod
    async def check(self) -> None:
        """Raise `BusUnavailable` unless the broker is reachable now (readiness probes call it)."""

    def skip_malformed(self, reader: str, error: MalformedEvent, where: str) -> None:
        """Report a message `reader` cannot use; the reader then goes on with the next one."""
        self.observer.malformed(reader, error, where)

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

    async def tail(
        self,
        pattern: str = "*",
        *,
        priority: Priority | None = None,
        client_id: str | None = None,
        from_start: bool = False,
    ) -> AsyncGenerator[BaseEvent, None]:
        """Live view of events as they are published (no ack, no durable state): the events of
        `tail_sequenced`, from the oldest retained one with `from_start`."""
        async for item in self.tail_sequenced(
            pattern,
            priority=priority,
            client_id=client_id,
            start_sequence=1 if from_start else None,
        ):
            yield item.event

    @abstractmethod
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
        next event published.

        `client_id` keeps the events of that tenant: the envelope's `client_id`, which the
        `edrs-client-id` header may copy (a message whose header and envelope disagree is
        refused). A message that is not a valid event is skipped, counted and logged: one bad
        message never ends the view."""

    @abstractmethod
    async def last_sequence(self) -> int:
        """Sequence of the newest stored event (0 when there is none): `tail_sequenced` from
        this plus one sees exactly the events published after this call."""

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


BUS_SCHEMES = ("nats", "tls", "pulsar", "pulsar+ssl", "memory")


def check_bus_url(url: str) -> str:
    """`url` if it names a bus `connect_bus` can open, else ValueError saying what would."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in BUS_SCHEMES:
        raise ValueError(
            f"bus url {url!r} must start with nats:// (or tls://), pulsar:// (or pulsar+ssl://) "
            "or memory://"
        )
    return url


async def connect_bus(
    url: str,
    *,
    catalog: SchemaCatalog | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    name: str = "edrs-events",
) -> EventBus:
    """Connect to the bus named by `url`: `nats://...` (default), `pulsar://...` or `memory://`.

    `memory://<name>` is an in-process bus: every `connect_bus` of the same name in one process
    shares it (tests run a fleet in one process on it). `name` labels the connection on the
    broker. Raises `BusUnavailable` when the broker cannot be reached."""
    scheme = check_bus_url(url).split("://", 1)[0].lower()
    if scheme in ("nats", "tls"):
        from edrs_events.nats_bus import NatsBus

        return await NatsBus.connect(url, catalog=catalog, namespace=namespace, name=name)
    if scheme in ("pulsar", "pulsar+ssl"):
        from edrs_events.pulsar_bus import PulsarBus

        return await PulsarBus.connect(url, catalog=catalog, namespace=namespace, name=name)
    from edrs_events.memory_bus import InMemoryBus

    return InMemoryBus.shared(url.split("://", 1)[1], catalog=catalog, namespace=namespace)
