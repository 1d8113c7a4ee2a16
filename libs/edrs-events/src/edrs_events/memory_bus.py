"""In-process bus: same interface and rules as the brokers, no durability (tests, one-process fleets).

`connect_bus("memory://fleet")` in several services of one process gives each its own handle on
one shared log, so a whole fleet can run on it with `EDRS_<SERVICE>_BUS_URL=memory://fleet`."""

from __future__ import annotations

import asyncio
import fnmatch
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edrs_events.bus import (
    ConsumerOptions,
    DeadLetter,
    DeliverFrom,
    EventBus,
    Handler,
    HandlerOutcome,
    SequencedEvent,
    Subscription,
    WireMessage,
    decode_event,
    run_handler,
)
from edrs_events.catalog import SchemaCatalog
from edrs_events.envelope import PRIORITIES_BY_RANK, Priority
from edrs_events.errors import MalformedEvent
from edrs_events.subjects import DEFAULT_NAMESPACE, type_filter, validate_consumer_name


def _matches(patterns: Sequence[str], event_type: str) -> bool:
    return any(fnmatch.fnmatchcase(event_type, type_filter(p)) for p in patterns)


@dataclass
class _Delivery:
    seq: int
    message: WireMessage
    deliveries: int = 0


@dataclass
class _Consumer:
    name: str
    patterns: list[str]
    options: ConsumerOptions
    lanes: list[deque[_Delivery]] = field(
        default_factory=lambda: [deque() for _ in PRIORITIES_BY_RANK]
    )
    subscription: InMemorySubscription | None = None


class _Log:
    """The state one in-process bus holds; shared by every handle of a named bus."""

    def __init__(self) -> None:
        self.log: list[WireMessage] = []
        self.seen: set[str] = set()
        self.consumers: dict[str, _Consumer] = {}
        self.dead: dict[int, tuple[DeadLetter, WireMessage]] = {}
        self.dead_seq = 0
        self.tails: list[asyncio.Queue[tuple[int, WireMessage]]] = []


# Named logs live while a handle on them does (a finished test's fleet leaves nothing behind).
_NAMED: weakref.WeakValueDictionary[str, _Log] = weakref.WeakValueDictionary()


class InMemoryBus(EventBus):
    """Events live in a list; consumers are lane queues; dead letters a dict."""

    def __init__(
        self,
        *,
        catalog: SchemaCatalog | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        state: _Log | None = None,
    ) -> None:
        super().__init__(catalog=catalog, namespace=namespace)
        self._state = state if state is not None else _Log()
        self.log = self._state.log
        self._seen = self._state.seen
        self._consumers = self._state.consumers
        self._dead = self._state.dead
        self._tails = self._state.tails
        self._subscriptions: list[InMemorySubscription] = []

    @classmethod
    def shared(
        cls, name: str, *, catalog: SchemaCatalog | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> InMemoryBus:
        """A handle on the in-process bus called `name` (a private one when `name` is empty)."""
        if not name:
            return cls(catalog=catalog, namespace=namespace)
        state = _NAMED.get(name)
        if state is None:
            state = _Log()
            _NAMED[name] = state
        return cls(catalog=catalog, namespace=namespace, state=state)

    async def check(self) -> None:
        return None  # in this process: reachable while the process runs

    async def publish_wire(self, messages: Sequence[WireMessage]) -> None:
        for message in messages:
            if message.dedup_id in self._seen:
                continue
            self._seen.add(message.dedup_id)
            self.log.append(message)
            self._route(_Delivery(len(self.log), message))
            for queue in self._tails:
                queue.put_nowait((len(self.log), message))

    def _route(self, delivery: _Delivery, only: _Consumer | None = None) -> None:
        for consumer in [only] if only else self._consumers.values():
            if _matches(consumer.patterns, delivery.message.event_type):
                lane = delivery.message.priority.rank
                consumer.lanes[lane].append(
                    _Delivery(delivery.seq, delivery.message, delivery.deliveries)
                )
                if consumer.subscription:
                    consumer.subscription.ready.set()

    async def subscribe(
        self,
        consumer: str,
        handler: Handler,
        *,
        event_types: Sequence[str] = ("*",),
        options: ConsumerOptions | None = None,
    ) -> InMemorySubscription:
        validate_consumer_name(consumer)
        state = self._consumers.get(consumer)
        if state is None:
            state = _Consumer(consumer, list(event_types), options or ConsumerOptions())
            self._consumers[consumer] = state
            if state.options.deliver_from is DeliverFrom.ALL:
                for seq, message in enumerate(self.log, start=1):
                    self._route(_Delivery(seq, message), only=state)
        subscription = InMemorySubscription(self, state, handler)
        state.subscription = subscription
        subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def last_sequence(self) -> int:
        return len(self.log)

    async def tail_sequenced(
        self,
        pattern: str = "*",
        *,
        priority: Priority | None = None,
        client_id: str | None = None,
        start_sequence: int | None = None,
    ) -> AsyncGenerator[SequencedEvent, None]:
        if start_sequence is not None and start_sequence < 1:
            raise ValueError(f"start_sequence must be >= 1, got {start_sequence}")
        queue: asyncio.Queue[tuple[int, WireMessage]] = asyncio.Queue()
        if start_sequence is not None:
            for seq, message in enumerate(self.log[start_sequence - 1 :], start=start_sequence):
                queue.put_nowait((seq, message))
        self._tails.append(queue)
        try:
            while True:
                seq, message = await queue.get()
                if not _matches([pattern], message.event_type):
                    continue
                if priority is not None and message.priority is not priority:
                    continue
                try:
                    event = decode_event(message.body, message.headers())
                except MalformedEvent as exc:
                    self.skip_malformed("tail", exc, f"sequence {seq}")
                    continue
                if client_id is not None and event.client_id != client_id:
                    continue
                yield SequencedEvent(seq, event)
        finally:
            self._tails.remove(queue)

    def dead_letter(self, consumer: str, delivery: _Delivery, reason: str) -> None:
        self._state.dead_seq += 1
        letter = DeadLetter(
            dlq_id=self._state.dead_seq,
            consumer=consumer,
            event_type=delivery.message.event_type,
            event_id=delivery.message.event_id,
            reason=reason,
            deliveries=delivery.deliveries,
            failed_at=datetime.now(UTC),
            body=delivery.message.body,
        )
        self._dead[self._state.dead_seq] = (letter, delivery.message)

    async def dead_letters(
        self, *, consumer: str | None = None, event_type: str | None = None
    ) -> list[DeadLetter]:
        return [
            letter
            for letter, _ in self._dead.values()
            if (consumer is None or letter.consumer == consumer)
            and (event_type is None or letter.event_type == event_type)
        ]

    async def replay_dead_letter(self, dlq_id: int) -> DeadLetter:
        if dlq_id not in self._dead:
            raise LookupError(f"dead letter {dlq_id} not found (already replayed?)")
        letter, message = self._dead.pop(dlq_id)
        replay = WireMessage(
            event_id=message.event_id,
            event_type=message.event_type,
            priority=message.priority,
            body=message.body,
            client_id=message.client_id,
            aggregate_id=message.aggregate_id,
            msg_id=f"{message.event_id}:replay:{dlq_id}",
        )
        await self.publish_wire([replay])
        return letter

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.stop()
        self._subscriptions.clear()


class InMemorySubscription(Subscription):
    """Workers take from the highest non-empty lane, like the NATS adapter."""

    def __init__(self, bus: InMemoryBus, state: _Consumer, handler: Handler) -> None:
        self.bus = bus
        self.consumer = state.name
        self.state = state
        self.handler = handler
        self.ready = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._stopping = False

    def start(self) -> None:
        self.ready.set()
        self._workers = [
            asyncio.create_task(self._work()) for _ in range(self.state.options.concurrency)
        ]

    async def _next(self) -> _Delivery | None:
        while not self._stopping:
            for lane in self.state.lanes:
                if lane:
                    return lane.popleft()
            self.ready.clear()
            await self.ready.wait()
        return None

    @property
    def running(self) -> bool:
        return not self._stopping and not any(task.done() for task in self._workers)

    async def lag(self) -> int | None:
        return sum(len(lane) for lane in self.state.lanes)

    async def _work(self) -> None:
        options = self.state.options
        while (delivery := await self._next()) is not None:
            delivery.deliveries += 1
            try:
                event = decode_event(delivery.message.body, delivery.message.headers())
            except MalformedEvent as exc:
                self.bus.skip_malformed(self.state.name, exc, f"sequence {delivery.seq}")
                self.bus.dead_letter(self.state.name, delivery, str(exc))
                continue
            outcome, reason = await run_handler(
                self.state.name,
                self.handler,
                event,
                delivery.deliveries,
                options,
                self.bus.observer,
            )
            if outcome is HandlerOutcome.RETRY:
                loop = asyncio.get_running_loop()
                self._timers.append(
                    loop.call_later(
                        options.redelivery_delay(delivery.deliveries),
                        self.bus._route,
                        delivery,
                        self.state,
                    )
                )
            elif outcome is HandlerOutcome.DEAD:
                self.bus.dead_letter(self.state.name, delivery, reason)

    async def stop(self, *, grace: float | None = None) -> None:
        self._stopping = True
        self.ready.set()
        for timer in self._timers:
            timer.cancel()
        wait = self.state.options.ack_wait if grace is None else grace
        if self._workers:
            _, running = await asyncio.wait(self._workers, timeout=wait)
            for task in running:
                task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self.state.subscription is self:
            self.state.subscription = None
