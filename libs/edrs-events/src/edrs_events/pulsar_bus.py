"""Apache Pulsar adapter: a topic per lane, producer dedup, retry-letter and dead-letter topics."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from edrs_events.bus import (
    H_CLIENT_ID,
    H_DLQ_CONSUMER,
    H_DLQ_DELIVERIES,
    H_DLQ_FAILED_AT,
    H_DLQ_REASON,
    H_DLQ_SUBJECT,
    H_EVENT_TYPE,
    H_REPLAYED_FROM,
    ConsumerOptions,
    DeadLetter,
    DeliverFrom,
    EventBus,
    Handler,
    HandlerOutcome,
    Subscription,
    WireMessage,
    run_handler,
)
from edrs_events.catalog import SchemaCatalog
from edrs_events.envelope import PRIORITIES_BY_RANK, BaseEvent, Priority
from edrs_events.memory_bus import _matches
from edrs_events.subjects import DEFAULT_NAMESPACE, validate_consumer_name

H_DELIVERIES = "edrs-deliveries"


def _pulsar() -> Any:
    try:
        import pulsar
    except ImportError as exc:  # optional extra
        raise RuntimeError(
            "the Pulsar adapter needs the [pulsar] extra: pip install 'edrs-events[pulsar]'"
        ) from exc
    return pulsar


class PulsarBus(EventBus):
    """Topics `<ns>-events-<priority>`, `<ns>-retry-<consumer>`, `<ns>-dlq` in one Pulsar namespace.

    Dedup: producers have a stable name and the broker's deduplication is enabled on the
    namespace (`pulsar-admin namespaces set-deduplication --enable`); a resend after a failure
    reuses its sequence id, and consumers' inboxes drop what slips through (different producers).
    """

    def __init__(
        self,
        client: Any,
        *,
        catalog: SchemaCatalog | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        topic_prefix: str = "persistent://public/default",
    ) -> None:
        super().__init__(catalog=catalog, namespace=namespace)
        self.client = client
        self.topic_prefix = topic_prefix
        self._producers: dict[str, Any] = {}
        self._producer_name = f"{namespace}-{socket.gethostname()}"
        self._sequence = itertools.count(int(datetime.now(UTC).timestamp() * 1_000_000))
        self._subscriptions: list[PulsarSubscription] = []

    @classmethod
    async def connect(
        cls,
        url: str = "pulsar://127.0.0.1:6650",
        *,
        catalog: SchemaCatalog | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> PulsarBus:
        client = await asyncio.to_thread(_pulsar().Client, url, operation_timeout_seconds=10)
        return cls(client, catalog=catalog, namespace=namespace)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}/{self.subjects.namespace}-{name}"

    def lane_topic(self, priority: Priority) -> str:
        return self.topic(f"events-{priority.value}")

    async def _producer(self, topic: str) -> Any:
        if topic not in self._producers:
            self._producers[topic] = await asyncio.to_thread(
                self.client.create_producer,
                topic,
                producer_name=f"{self._producer_name}-{topic.rsplit('/', 1)[-1]}",
                send_timeout_millis=10_000,
                block_if_queue_full=True,
            )
        return self._producers[topic]

    async def _send(
        self,
        topic: str,
        body: bytes,
        properties: dict[str, str],
        *,
        key: str | None = None,
        deliver_after: float | None = None,
    ) -> None:
        producer = await self._producer(topic)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(result: Any) -> None:
            if done.done():
                return
            if str(result) == "Ok":
                done.set_result(None)
            else:
                done.set_exception(RuntimeError(f"pulsar send to {topic} failed: {result}"))

        def callback(result: Any, _msg_id: Any) -> None:
            # Called on the client's I/O thread: hand the result to the event loop.
            loop.call_soon_threadsafe(settle, result)

        kwargs: dict[str, Any] = {"properties": properties, "sequence_id": next(self._sequence)}
        if key:
            kwargs["partition_key"] = key
        if deliver_after:
            kwargs["deliver_after"] = timedelta(seconds=deliver_after)
        producer.send_async(body, callback, **kwargs)
        await done

    async def publish_wire(self, messages: Sequence[WireMessage]) -> None:
        sends = []
        for message in messages:
            properties = message.headers() | {"edrs-event-id": message.dedup_id}
            key = message.aggregate_id or message.client_id
            sends.append(
                self._send(self.lane_topic(message.priority), message.body, properties, key=key)
            )
        await asyncio.gather(*sends)

    async def subscribe(
        self,
        consumer: str,
        handler: Handler,
        *,
        event_types: Sequence[str] = ("*",),
        options: ConsumerOptions | None = None,
    ) -> PulsarSubscription:
        validate_consumer_name(consumer)
        subscription = PulsarSubscription(
            self, consumer, handler, list(event_types), options or ConsumerOptions()
        )
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def tail(
        self,
        pattern: str = "*",
        *,
        priority: Priority | None = None,
        client_id: str | None = None,
        from_start: bool = False,
    ) -> AsyncGenerator[BaseEvent, None]:
        pulsar = _pulsar()
        start = pulsar.MessageId.earliest if from_start else pulsar.MessageId.latest
        lanes = [priority] if priority else list(PRIORITIES_BY_RANK)
        readers = [
            await asyncio.to_thread(self.client.create_reader, self.lane_topic(lane), start)
            for lane in lanes
        ]
        try:
            while True:
                for reader in readers:
                    with contextlib.suppress(
                        Exception
                    ):  # receive timeout: nothing new on this lane
                        msg = await asyncio.to_thread(reader.read_next, 200)
                        props = msg.properties()
                        if not _matches([pattern], props.get(H_EVENT_TYPE, "")):
                            continue
                        if client_id is not None and props.get(H_CLIENT_ID) != client_id:
                            continue
                        yield BaseEvent.from_json(msg.data())
        finally:
            for reader in readers:
                with contextlib.suppress(Exception):
                    reader.close()

    async def dead_letter(
        self, consumer: str, body: bytes, props: dict[str, str], reason: str, n: int
    ) -> None:
        properties = dict(props) | {
            H_DLQ_REASON: reason[:1000],
            H_DLQ_DELIVERIES: str(n),
            H_DLQ_CONSUMER: consumer,
            H_DLQ_SUBJECT: self.lane_topic(Priority(props.get("edrs-priority", "normal"))),
            H_DLQ_FAILED_AT: datetime.now(UTC).isoformat(),
        }
        await self._send(self.topic("dlq"), body, properties)

    async def _read_dlq(self) -> list[tuple[Any, Any]]:
        pulsar = _pulsar()
        reader = await asyncio.to_thread(
            self.client.create_reader, self.topic("dlq"), pulsar.MessageId.earliest
        )
        replayed = set(await self._replayed_ids())
        out = []
        try:
            while await asyncio.to_thread(reader.has_message_available):
                msg = await asyncio.to_thread(reader.read_next, 1000)
                if _dlq_id(msg) not in replayed:
                    out.append((msg, msg.message_id()))
        finally:
            reader.close()
        return out

    async def _replayed_ids(self) -> list[int]:
        pulsar = _pulsar()
        reader = await asyncio.to_thread(
            self.client.create_reader, self.topic("dlq-replayed"), pulsar.MessageId.earliest
        )
        ids = []
        try:
            while await asyncio.to_thread(reader.has_message_available):
                ids.append(int((await asyncio.to_thread(reader.read_next, 1000)).data()))
        finally:
            reader.close()
        return ids

    async def dead_letters(
        self, *, consumer: str | None = None, event_type: str | None = None
    ) -> list[DeadLetter]:
        letters = [_letter(msg) for msg, _ in await self._read_dlq()]
        return [
            letter
            for letter in letters
            if (consumer is None or letter.consumer == consumer)
            and (event_type is None or letter.event_type == event_type)
        ]

    async def replay_dead_letter(self, dlq_id: int) -> DeadLetter:
        for msg, _ in await self._read_dlq():
            if _dlq_id(msg) == dlq_id:
                props = {k: v for k, v in msg.properties().items() if not k.startswith("edrs-dlq-")}
                props[H_REPLAYED_FROM] = str(dlq_id)
                await self._send(msg.properties()[H_DLQ_SUBJECT], msg.data(), props)
                # Pulsar topics are append-only: replayed ids are recorded in a companion topic.
                await self._send(self.topic("dlq-replayed"), str(dlq_id).encode(), {})
                return _letter(msg)
        raise LookupError(f"dead letter {dlq_id} not found (already replayed?)")

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.stop()
        for producer in self._producers.values():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(producer.flush)
        await asyncio.to_thread(self.client.close)


def _dlq_id(msg: Any) -> int:
    mid = msg.message_id()
    return int(mid.ledger_id()) << 24 | int(mid.entry_id())


def _letter(msg: Any) -> DeadLetter:
    props = msg.properties()
    body = msg.data()
    return DeadLetter(
        dlq_id=_dlq_id(msg),
        consumer=props.get(H_DLQ_CONSUMER, ""),
        event_type=props.get(H_EVENT_TYPE, ""),
        event_id=props.get("edrs-event-id", ""),
        reason=props.get(H_DLQ_REASON, ""),
        deliveries=int(props.get(H_DLQ_DELIVERIES, "0")),
        failed_at=datetime.fromisoformat(props.get(H_DLQ_FAILED_AT, "1970-01-01T00:00:00+00:00")),
        body=body,
    )


class PulsarSubscription(Subscription):
    """A Shared subscription per lane plus the consumer's retry-letter topic; highest lane first."""

    def __init__(
        self,
        bus: PulsarBus,
        consumer: str,
        handler: Handler,
        patterns: list[str],
        options: ConsumerOptions,
    ) -> None:
        self.bus, self.consumer, self.handler = bus, consumer, handler
        self.patterns, self.options = patterns, options
        self._consumers: list[Any] = []
        self._buffers: list[deque[tuple[Any, Any]]] = [
            deque() for _ in range(len(PRIORITIES_BY_RANK) + 1)
        ]
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        pulsar = _pulsar()
        position = (
            pulsar.InitialPosition.Earliest
            if self.options.deliver_from is DeliverFrom.ALL
            else pulsar.InitialPosition.Latest
        )
        topics = [self.bus.lane_topic(lane) for lane in PRIORITIES_BY_RANK]
        # Retries come back on their own topic after a delay (Pulsar's retry-letter pattern), and
        # are served right after the critical lane so a retry does not wait behind a backlog.
        topics.insert(1, self.bus.topic(f"retry-{self.consumer}"))
        for topic in topics:
            c = await asyncio.to_thread(
                self.bus.client.subscribe,
                topic,
                self.consumer,
                consumer_type=pulsar.ConsumerType.Shared,
                initial_position=position,
                receiver_queue_size=self.options.batch,
                unacked_messages_timeout_ms=max(10_000, int(self.options.ack_wait * 1000)),
                dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(
                    self.options.max_deliver, dead_letter_topic=self.bus.topic("dlq")
                ),
            )
            self._consumers.append(c)
        self._tasks = [
            asyncio.create_task(self._receive(i, c)) for i, c in enumerate(self._consumers)
        ]
        self._tasks += [asyncio.create_task(self._work()) for _ in range(self.options.concurrency)]

    async def _receive(self, index: int, consumer: Any) -> None:
        while not self._stopping:
            if len(self._buffers[index]) >= self.options.batch:
                await asyncio.sleep(0.01)
                continue
            try:
                msg = await asyncio.to_thread(consumer.receive, 500)
            except Exception:  # receive timeout (pulsar.Timeout): poll again
                continue
            self._buffers[index].append((consumer, msg))
            self._ready.set()

    async def _work(self) -> None:
        while not self._stopping:
            item = next((b.popleft() for b in self._buffers if b), None)
            if item is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            consumer, msg = item
            props = msg.properties()
            if not _matches(self.patterns, props.get(H_EVENT_TYPE, "")):
                consumer.acknowledge(msg)
                continue
            deliveries = int(props.get(H_DELIVERIES, "0")) + msg.redelivery_count() + 1
            event = BaseEvent.from_json(msg.data())
            outcome, reason = await run_handler(
                self.consumer, self.handler, event, deliveries, self.options
            )
            if outcome is HandlerOutcome.RETRY:
                await self.bus._send(
                    self.bus.topic(f"retry-{self.consumer}"),
                    msg.data(),
                    dict(props) | {H_DELIVERIES: str(deliveries)},
                    deliver_after=self.options.redelivery_delay(deliveries),
                )
            elif outcome is HandlerOutcome.DEAD:
                await self.bus.dead_letter(
                    self.consumer, msg.data(), dict(props), reason, deliveries
                )
            consumer.acknowledge(msg)

    async def stop(self) -> None:
        self._stopping = True
        self._ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self._consumers:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(c.close)
