"""In-memory bus for unit tests only: same interface and rules, no durability."""

from __future__ import annotations

import asyncio
import fnmatch
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
    run_handler,
)
from edrs_events.catalog import SchemaCatalog
from edrs_events.envelope import PRIORITIES_BY_RANK, BaseEvent, Priority
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


class InMemoryBus(EventBus):
    """Events live in a list; consumers are lane queues; dead letters a dict. Unit tests only."""

    def __init__(
        self, *, catalog: SchemaCatalog | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        super().__init__(catalog=catalog, namespace=namespace)
        self.log: list[WireMessage] = []
        self._seen: set[str] = set()
        self._consumers: dict[str, _Consumer] = {}
        self._dead: dict[int, tuple[DeadLetter, WireMessage]] = {}
        self._dead_seq = 0
        self._tails: list[asyncio.Queue[tuple[int, WireMessage]]] = []

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
        return subscription

    async def tail(
        self,
        pattern: str = "*",
        *,
        priority: Priority | None = None,
        client_id: str | None = None,
        from_start: bool = False,
    ) -> AsyncGenerator[BaseEvent, None]:
        async for item in self.tail_sequenced(
            pattern,
            priority=priority,
            client_id=client_id,
            start_sequence=1 if from_start else None,
        ):
            yield item.event

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
                if client_id is not None and message.client_id != client_id:
                    continue
                yield SequencedEvent(seq, BaseEvent.from_json(message.body))
        finally:
            self._tails.remove(queue)

    def dead_letter(self, consumer: str, delivery: _Delivery, reason: str) -> None:
        self._dead_seq += 1
        letter = DeadLetter(
            dlq_id=self._dead_seq,
            consumer=consumer,
            event_type=delivery.message.event_type,
            event_id=delivery.message.event_id,
            reason=reason,
            deliveries=delivery.deliveries,
            failed_at=datetime.now(UTC),
            body=delivery.message.body,
        )
        self._dead[self._dead_seq] = (letter, delivery.message)

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
        for consumer in self._consumers.values():
            if consumer.subscription:
                await consumer.subscription.stop()


class InMemorySubscription(Subscription):
    """Workers take from the highest non-empty lane, like the NATS adapter."""

    def __init__(self, bus: InMemoryBus, state: _Consumer, handler: Handler) -> None:
        self.bus = bus
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

    async def _work(self) -> None:
        options = self.state.options
        while (delivery := await self._next()) is not None:
            delivery.deliveries += 1
            event = BaseEvent.from_json(delivery.message.body)
            outcome, reason = await run_handler(
                self.state.name, self.handler, event, delivery.deliveries, options
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

    async def stop(self) -> None:
        self._stopping = True
        self.ready.set()
        for timer in self._timers:
            timer.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self.state.subscription is self:
            self.state.subscription = None
