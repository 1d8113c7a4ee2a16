"""Apache Pulsar adapter: a topic per lane, producer dedup, retry-letter and dead-letter topics, and a
log topic with every event in publish order for resumable tails."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
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
    SequencedEvent,
    Subscription,
    WireMessage,
    decode_event,
    run_handler,
)
from edrs_events.catalog import SchemaCatalog
from edrs_events.envelope import PRIORITIES_BY_RANK, Priority
from edrs_events.errors import BusUnavailable, MalformedEvent, PublishError
from edrs_events.memory_bus import _matches
from edrs_events.subjects import DEFAULT_NAMESPACE, validate_consumer_name

log = logging.getLogger("edrs_events.pulsar")

H_DELIVERIES = "edrs-deliveries"
# A log position packs (ledger id, entry id) into one integer that grows with every entry: ledger
# ids grow, and an entry id stays below 2**24 (a ledger rolls over long before, at 50,000 entries
# by default), so an SSE client can resume with it as its `Last-Event-ID`.
_ENTRY_BITS = 24


def log_sequence(ledger_id: int, entry_id: int) -> int:
    """The sequence of the log topic's entry (ledger_id, entry_id); it grows in publish order."""
    if not 0 <= entry_id < 1 << _ENTRY_BITS or ledger_id < 0:
        raise ValueError(f"no sequence for ledger {ledger_id} entry {entry_id}")
    return ledger_id << _ENTRY_BITS | entry_id


def log_position(sequence: int) -> tuple[int, int]:
    """(ledger_id, entry_id) of a sequence `log_sequence` made: where a resumed tail starts."""
    if sequence < 1:
        raise ValueError(f"sequence must be >= 1, got {sequence}")
    return sequence >> _ENTRY_BITS, sequence & ((1 << _ENTRY_BITS) - 1)


def _pulsar() -> Any:
    try:
        import pulsar
    except ImportError as exc:  # optional extra
        raise RuntimeError(
            "the Pulsar adapter needs the [pulsar] extra: pip install 'edrs-events[pulsar]'"
        ) from exc
    return pulsar


class PulsarBus(EventBus):
    """Topics `<ns>-events-<priority>`, `<ns>-events-log`, `<ns>-retry-<consumer>`, `<ns>-dlq` in
    one Pulsar namespace.

    Consumers read the lane topics (priority); `tail` and `tail_sequenced` read the log topic, which
    gets a copy of every event in publish order, because a resumable view needs one ordered log
    and the lanes are four. Its sequence is `log_sequence(ledger, entry)` of the log entry.
    Dedup: producers have a stable name and the broker's deduplication is enabled on the
    namespace (`pulsar-admin namespaces set-deduplication --enable`); consumers' inboxes drop
    what slips through (different producers).
    """

    # Pulsar's default maxMessageSize is 5 MB; EDRS keeps events to the same 1 MiB as on NATS.
    max_message_bytes = 1024 * 1024

    def __init__(
        self,
        client: Any,
        *,
        catalog: SchemaCatalog | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        topic_prefix: str = "persistent://public/default",
        name: str = "edrs-events",
    ) -> None:
        super().__init__(catalog=catalog, namespace=namespace)
        self.client = client
        self.topic_prefix = topic_prefix
        self._producers: dict[str, Any] = {}
        # Stable per process kind and host (dedup keys on it), and distinct between the services
        # of one host: the broker refuses a second producer of the same name on a topic.
        self._producer_name = f"{namespace}-{name}-{socket.gethostname()}"
        self._sequence = itertools.count(int(datetime.now(UTC).timestamp() * 1_000_000))
        self._subscriptions: list[PulsarSubscription] = []

    @classmethod
    async def connect(
        cls,
        url: str = "pulsar://127.0.0.1:6650",
        *,
        catalog: SchemaCatalog | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        name: str = "edrs-events",
    ) -> PulsarBus:
        client = await asyncio.to_thread(_pulsar().Client, url, operation_timeout_seconds=10)
        bus = cls(client, catalog=catalog, namespace=namespace, name=name)
        try:
            await bus.check()  # the client connects lazily: make a wrong URL fail here
        except BusUnavailable:
            await asyncio.to_thread(client.close)
            raise
        return bus

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self.client.get_topic_partitions, self.log_topic)
        except Exception as exc:  # the client raises its own PulsarException family
            raise BusUnavailable(f"cannot reach Pulsar: {exc!r}") from exc

    @property
    def log_topic(self) -> str:
        return self.topic("events-log")

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
        try:
            producer = await self._producer(topic)
        except Exception as exc:  # the client's PulsarException family
            raise BusUnavailable(f"cannot publish to {topic}: {exc!r}") from exc
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(result: Any) -> None:
            if done.done():
                return
            if str(result) == "Ok":
                done.set_result(None)
            else:
                done.set_exception(PublishError(f"pulsar send to {topic} failed: {result}"))

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
            # One producer per topic sends in call order, so the log keeps the publish order.
            sends.append(self._send(self.log_topic, message.body, properties, key=key))
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

    async def _reader(self, start: Any, *, inclusive: bool) -> Any:
        try:
            return await asyncio.to_thread(
                self.client.create_reader,
                self.log_topic,
                start,
                start_message_id_inclusive=inclusive,
            )
        except Exception as exc:  # the client's PulsarException family
            raise BusUnavailable(f"cannot read {self.log_topic}: {exc!r}") from exc

    async def last_sequence(self) -> int:
        # A reader at `latest`, inclusive, is handed the last entry itself (if there is one).
        reader = await self._reader(_pulsar().MessageId.latest, inclusive=True)
        try:
            if not await asyncio.to_thread(reader.has_message_available):
                return 0
            msg = await asyncio.to_thread(reader.read_next, 10_000)
            mid = msg.message_id()
            return log_sequence(mid.ledger_id(), mid.entry_id())
        except Exception as exc:  # the client's PulsarException family
            raise BusUnavailable(f"cannot read {self.log_topic}: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                reader.close()

    async def tail_sequenced(
        self,
        pattern: str = "*",
        *,
        priority: Priority | None = None,
        client_id: str | None = None,
        start_sequence: int | None = None,
    ) -> AsyncGenerator[SequencedEvent, None]:
        pulsar = _pulsar()
        if start_sequence is not None and start_sequence < 1:
            raise ValueError(f"start_sequence must be >= 1, got {start_sequence}")
        if start_sequence is None:
            reader = await self._reader(pulsar.MessageId.latest, inclusive=False)
        elif start_sequence == 1:
            reader = await self._reader(pulsar.MessageId.earliest, inclusive=True)
        else:
            # A position whose entry is gone (retention) starts at the next one retained.
            ledger, entry = log_position(start_sequence)
            reader = await self._reader(pulsar.MessageId(-1, ledger, entry, -1), inclusive=True)
        try:
            while True:
                try:
                    msg = await asyncio.to_thread(reader.read_next, 500)
                except pulsar.Timeout:
                    continue
                except Exception as exc:  # the client's PulsarException family
                    raise BusUnavailable(f"the log topic ended: {exc!r}") from exc
                mid = msg.message_id()
                seq = log_sequence(mid.ledger_id(), mid.entry_id())
                props = msg.properties()
                if client_id is not None and props.get(H_CLIENT_ID, client_id) != client_id:
                    continue
                try:
                    event = decode_event(msg.data(), props)
                except MalformedEvent as exc:
                    self.skip_malformed("tail", exc, f"{self.log_topic} sequence {seq}")
                    continue
                if client_id is not None and event.client_id != client_id:
                    continue
                if priority is not None and event.priority is not priority:
                    continue
                if _matches([pattern], event.event_type):
                    yield SequencedEvent(seq, event)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reader.close)

    async def dead_letter(
        self, consumer: str, body: bytes, props: dict[str, str], reason: str, n: int
    ) -> None:
        try:
            lane = Priority(props.get("edrs-priority", "normal"))
        except ValueError:  # a malformed message's property; replay it on the normal lane
            lane = Priority.NORMAL
        properties = dict(props) | {
            H_DLQ_REASON: reason[:1000],
            H_DLQ_DELIVERIES: str(n),
            H_DLQ_CONSUMER: consumer,
            H_DLQ_SUBJECT: self.lane_topic(lane),
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
            except _pulsar().Timeout:  # nothing new on this topic: poll again
                continue
            except Exception as exc:  # disconnected: the client reconnects; do not spin meanwhile
                log.info("receive for %s failed (%r); retrying", self.consumer, exc)
                await asyncio.sleep(0.5)
                continue
            self._buffers[index].append((consumer, msg))
            self._ready.set()

    @property
    def running(self) -> bool:
        return not self._stopping and bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def _work(self) -> None:
        while not self._stopping:
            item = next((b.popleft() for b in self._buffers if b), None)
            if item is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            consumer, msg = item
            try:
                await self._process(consumer, msg)
            except Exception as exc:  # a send or ack failed: Pulsar redelivers; keep working
                log.info(
                    "event for %s not settled (%r); it will be redelivered", self.consumer, exc
                )
                with contextlib.suppress(Exception):
                    consumer.negative_acknowledge(msg)

    async def _process(self, consumer: Any, msg: Any) -> None:
        props = msg.properties()
        deliveries = int(props.get(H_DELIVERIES, "0")) + msg.redelivery_count() + 1
        try:
            event = decode_event(msg.data(), props)
        except MalformedEvent as exc:
            # Dead-lettered like a handler that always fails, and the worker goes on.
            self.bus.skip_malformed(self.consumer, exc, f"{msg.topic_name()} {msg.message_id()}")
            await self.bus.dead_letter(self.consumer, msg.data(), dict(props), str(exc), deliveries)
            consumer.acknowledge(msg)
            return
        if not _matches(self.patterns, event.event_type):
            consumer.acknowledge(msg)
            return
        outcome, reason = await run_handler(
            self.consumer, self.handler, event, deliveries, self.options, self.bus.observer
        )
        if outcome is HandlerOutcome.RETRY:
            await self.bus._send(
                self.bus.topic(f"retry-{self.consumer}"),
                msg.data(),
                dict(props) | {H_DELIVERIES: str(deliveries)},
                deliver_after=self.options.redelivery_delay(deliveries),
            )
        elif outcome is HandlerOutcome.DEAD:
            await self.bus.dead_letter(self.consumer, msg.data(), dict(props), reason, deliveries)
        consumer.acknowledge(msg)

    async def stop(self, *, grace: float | None = None) -> None:
        if self._stopping:
            return
        self._stopping = True
        receivers, workers = (
            self._tasks[: len(self._consumers)],
            self._tasks[len(self._consumers) :],
        )
        for task in receivers:
            task.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)
        # Received but not started: hand back at once rather than after the unacked timeout.
        for buffer in self._buffers:
            while buffer:
                consumer, msg = buffer.popleft()
                with contextlib.suppress(Exception):
                    consumer.negative_acknowledge(msg)
        # Workers finish the handler they are in, then see _stopping and return.
        self._ready.set()
        wait = self.options.ack_wait if grace is None else grace
        if workers:
            _, running = await asyncio.wait(workers, timeout=wait)
            for task in running:
                task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for c in self._consumers:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(c.close)
        if self in self.bus._subscriptions:
            self.bus._subscriptions.remove(self)
