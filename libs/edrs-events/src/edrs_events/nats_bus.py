"""NATS JetStream adapter: streams and lane consumers declared at start, dedup by event id, DLQ."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from pydantic import ValidationError

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
from edrs_events.envelope import PRIORITIES_BY_RANK, BaseEvent, Priority
from edrs_events.errors import BusUnavailable, MalformedEvent, PublishError
from edrs_events.subjects import DEFAULT_NAMESPACE, validate_consumer_name

log = logging.getLogger("edrs_events.nats")

_DAY = 86_400.0
_STREAM_EXISTS = 10058  # JetStream: stream name already in use with a different configuration


# What nats-py raises when the server is unreachable or the connection is lost; the adapter turns
# these into the SDK's BusUnavailable at its edge.
_NATS_FAILURES = (OSError, TimeoutError, nats.errors.Error, nats.js.errors.Error)

__all__ = ["NatsBus", "NatsSubscription", "PublishError", "StreamSettings"]


@dataclass(frozen=True)
class StreamSettings:
    """Storage settings of the events and dead-letter streams (see docs/decisions)."""

    replicas: int = 1  # 3 in production clusters: an acked event survives losing a node
    max_age: float = (
        7 * _DAY
    )  # events stay replayable (tail --from-start, new consumers) for a week
    dlq_max_age: float = 30 * _DAY
    duplicate_window: float = 600.0  # dedup by Nats-Msg-Id must outlast a relay restart
    max_msg_size: int = 1024 * 1024
    publish_timeout: float = 10.0


class NatsBus(EventBus):
    """The default bus: an events stream, a dead-letter stream, lane consumers."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        catalog: SchemaCatalog | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        settings: StreamSettings | None = None,
        owns_connection: bool = True,
    ) -> None:
        super().__init__(catalog=catalog, namespace=namespace)
        self.nc = nc
        self.js = nc.jetstream(publish_async_max_pending=20_000)
        self.settings = settings or StreamSettings()
        self.max_message_bytes = self.settings.max_msg_size
        self._owns_connection = owns_connection
        self._subscriptions: list[NatsSubscription] = []

    @classmethod
    async def connect(
        cls,
        url: str = "nats://127.0.0.1:4222",
        *,
        catalog: SchemaCatalog | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        settings: StreamSettings | None = None,
        name: str = "edrs-events",
    ) -> NatsBus:
        """Connect (reconnecting forever once connected) and declare the streams idempotently.

        Raises `BusUnavailable` when the server cannot be reached."""
        try:
            nc = await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=3,  # bounded at start, so a wrong URL fails fast...
                reconnect_time_wait=0.5,
                connect_timeout=5,
            )
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"cannot reach NATS at {url}: {exc!r}") from exc
        nc.options["max_reconnect_attempts"] = -1  # ...and unbounded once connected
        bus = cls(nc, catalog=catalog, namespace=namespace, settings=settings)
        try:
            await bus.ensure_streams()
        except _NATS_FAILURES as exc:
            await nc.close()
            raise BusUnavailable(f"cannot declare the event streams on {url}: {exc!r}") from exc
        return bus

    async def check(self) -> None:
        if not self.nc.is_connected:
            raise BusUnavailable("not connected to NATS")

    def stream_configs(self) -> list[api.StreamConfig]:
        s, names = self.settings, self.subjects
        common: dict[str, Any] = {
            "retention": api.RetentionPolicy.LIMITS,
            "storage": api.StorageType.FILE,
            "num_replicas": s.replicas,
            "discard": api.DiscardPolicy.OLD,
            "duplicate_window": s.duplicate_window,
            "max_msg_size": s.max_msg_size,
        }
        return [
            api.StreamConfig(
                name=names.events_stream,
                description="EDRS events, one subject per priority lane and event type",
                subjects=[f"{names.events_root}.>"],
                max_age=s.max_age,
                **common,
            ),
            api.StreamConfig(
                name=names.dlq_stream,
                description="EDRS dead letters: events a consumer gave up on",
                subjects=[f"{names.dlq_root}.>"],
                max_age=s.dlq_max_age,
                **common,
            ),
        ]

    async def ensure_streams(self) -> None:
        """Create the streams, or bring an existing one's settings up to date."""
        for config in self.stream_configs():
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _STREAM_EXISTS:
                    raise
                await self.js.update_stream(config)

    async def publish_wire(self, messages: Sequence[WireMessage]) -> None:
        futures: list[asyncio.Future[api.PubAck]] = []
        try:
            for message in messages:
                headers = message.headers()
                headers["Nats-Msg-Id"] = message.dedup_id
                subject = self.subjects.event(message.priority, message.event_type)
                futures.append(await self.js.publish_async(subject, message.body, headers=headers))
            await asyncio.wait_for(asyncio.gather(*futures), self.settings.publish_timeout)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            for future in futures:
                future.cancel()
            raise PublishError(f"publish of {len(messages)} events not confirmed: {exc!r}") from exc

    async def subscribe(
        self,
        consumer: str,
        handler: Handler,
        *,
        event_types: Sequence[str] = ("*",),
        options: ConsumerOptions | None = None,
    ) -> NatsSubscription:
        validate_consumer_name(consumer)
        subscription = NatsSubscription(
            self, consumer, handler, list(event_types), options or ConsumerOptions()
        )
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def last_sequence(self) -> int:
        try:
            info = await self.js.stream_info(self.subjects.events_stream)
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"cannot read the events stream: {exc!r}") from exc
        return int(info.state.last_seq)

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
        subject = self.subjects.event_filter(priority, pattern)
        # A reader that dies without cleaning up leaves a consumer the server drops after this.
        config = api.ConsumerConfig(inactive_threshold=30.0)
        if start_sequence is None:
            config.deliver_policy = api.DeliverPolicy.NEW
        else:
            # A sequence older than the stream's first retained one starts at that first one.
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_sequence
        try:
            sub = await self.js.subscribe(
                subject, stream=self.subjects.events_stream, ordered_consumer=True, config=config
            )
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"cannot follow the events stream: {exc!r}") from exc
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=None)
                except nats.errors.TimeoutError:
                    continue
                except _NATS_FAILURES as exc:
                    raise BusUnavailable(f"the events stream ended: {exc!r}") from exc
                seq = msg.metadata.sequence.stream
                headers = msg.headers or {}
                # The header is a copy for filtering without parsing; another tenant's named
                # there is skipped at once. No header (a bare envelope, as other languages
                # publish it): the envelope decides, and decode_event refuses a contradiction.
                if client_id is not None and headers.get(H_CLIENT_ID, client_id) != client_id:
                    continue
                try:
                    event = decode_event(msg.data, headers)
                except MalformedEvent as exc:
                    self.skip_malformed("tail", exc, f"{msg.subject} sequence {seq}")
                    continue
                if client_id is not None and event.client_id != client_id:
                    continue
                yield SequencedEvent(seq, event)
        finally:
            # Clean up in a task of its own: when the reader is cancelled from outside (an SSE
            # client went away), its awaits here would be cancelled too, and the subscription
            # would stay behind buffering every event of the stream.
            await asyncio.shield(asyncio.ensure_future(self._drop_tail(sub)))

    async def _drop_tail(self, sub: Any) -> None:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
        with contextlib.suppress(nats.errors.Error):
            # An ordered consumer is recreated under a new name after a gap, so ask for it.
            info = await sub.consumer_info()
            await self.js.delete_consumer(self.subjects.events_stream, info.name)

    async def dead_letter(
        self, consumer: str, body: bytes, *, subject: str, reason: str, deliveries: int, seq: int
    ) -> None:
        """Store a failed event in the dead-letter stream (idempotent per consumer and seq)."""
        try:
            event = BaseEvent.from_json(body)
            event_type, event_id = event.event_type, str(event.event_id)
        except ValidationError:
            event_type, event_id = "unknown.unparseable", f"seq-{seq}"

        headers = {
            "Nats-Msg-Id": f"dlq:{consumer}:{event_id}:{seq}",
            H_DLQ_REASON: reason[:1000],
            H_DLQ_DELIVERIES: str(deliveries),
            H_DLQ_CONSUMER: consumer,
            H_DLQ_SUBJECT: subject,
            H_DLQ_FAILED_AT: datetime.now(UTC).isoformat(),
            H_EVENT_TYPE: event_type,
        }
        await self.js.publish(
            self.subjects.dead_letter(consumer, event_type), body, headers=headers
        )

    async def dead_letters(
        self, *, consumer: str | None = None, event_type: str | None = None
    ) -> list[DeadLetter]:
        try:
            return await self._dead_letters(consumer, event_type)
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"cannot read the dead-letter stream: {exc!r}") from exc

    async def _dead_letters(self, consumer: str | None, event_type: str | None) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        seq = 1
        root = self.subjects.dlq_root
        subject = f"{root}.{consumer or '*'}.{event_type or '*.*'}"
        while True:
            try:
                raw = await self.js.get_msg(
                    self.subjects.dlq_stream, seq, subject=subject, next=True
                )
            except nats.js.errors.NotFoundError:
                return letters
            letters.append(_dead_letter_of(raw))
            seq = (raw.seq or seq) + 1

    async def replay_dead_letter(self, dlq_id: int) -> DeadLetter:
        try:
            return await self._replay_dead_letter(dlq_id)
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"cannot replay dead letter {dlq_id}: {exc!r}") from exc

    async def _replay_dead_letter(self, dlq_id: int) -> DeadLetter:
        try:
            raw = await self.js.get_msg(self.subjects.dlq_stream, dlq_id)
        except nats.js.errors.NotFoundError:
            raise LookupError(f"dead letter {dlq_id} not found (already replayed?)") from None
        letter = _dead_letter_of(raw)
        headers = dict(raw.headers or {})
        # A new dedup id: the original event id is still inside the duplicate window.
        out_headers = {k: v for k, v in headers.items() if not k.startswith(("edrs-dlq-", "Nats-"))}
        out_headers["Nats-Msg-Id"] = f"{letter.event_id}:replay:{dlq_id}"
        out_headers[H_REPLAYED_FROM] = str(dlq_id)
        await self.js.publish(headers[H_DLQ_SUBJECT], raw.data or b"", headers=out_headers)
        await self.js.delete_msg(self.subjects.dlq_stream, dlq_id)
        return letter

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.stop()
        if self._owns_connection and not self.nc.is_closed:
            await self.nc.drain()


def _dead_letter_of(raw: api.RawStreamMsg) -> DeadLetter:
    headers = raw.headers or {}
    body = raw.data or b""
    try:
        event_id = str(BaseEvent.from_json(body).event_id)
    except ValidationError:
        event_id = ""
    return DeadLetter(
        dlq_id=int(raw.seq or 0),
        consumer=headers.get(H_DLQ_CONSUMER, ""),
        event_type=headers.get(H_EVENT_TYPE, ""),
        event_id=event_id,
        reason=headers.get(H_DLQ_REASON, ""),
        deliveries=int(headers.get(H_DLQ_DELIVERIES, "0")),
        failed_at=datetime.fromisoformat(headers.get(H_DLQ_FAILED_AT, "1970-01-01T00:00:00+00:00")),
        body=body,
    )


class NatsSubscription(Subscription):
    """Four pull consumers (critical, high, normal, low); workers take the highest lane first.

    Each lane has a fetcher that long-polls its consumer into a small local buffer; a worker picks
    the next message from the first non-empty buffer in rank order, so a critical event waits at
    most for the handlers already running, never for the low backlog.
    """

    def __init__(
        self,
        bus: NatsBus,
        consumer: str,
        handler: Handler,
        event_types: list[str],
        options: ConsumerOptions,
    ) -> None:
        self.bus = bus
        self.consumer = consumer
        self.handler = handler
        self.event_types = event_types
        self.options = options
        self._buffers: list[deque[Msg]] = [deque() for _ in PRIORITIES_BY_RANK]
        self._room = [asyncio.Event() for _ in PRIORITIES_BY_RANK]
        self._ready = asyncio.Event()
        self._fetchers: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._advisories: list[Any] = []
        self._pull_subs: list[Any] = []
        self._stopping = False

    def consumer_config(self, lane: Priority) -> api.ConsumerConfig:
        names = self.bus.subjects
        o = self.options
        filters = [names.event_filter(lane, pattern) for pattern in self.event_types]
        deliver = (
            api.DeliverPolicy.ALL if o.deliver_from is DeliverFrom.ALL else api.DeliverPolicy.NEW
        )
        return api.ConsumerConfig(
            durable_name=names.lane_consumer(self.consumer, lane),
            description=f"EDRS consumer {self.consumer}, {lane.value} lane",
            deliver_policy=deliver,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=o.ack_wait,
            max_deliver=o.max_deliver,
            max_ack_pending=o.max_ack_pending,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
        )

    async def start(self) -> None:
        js = self.bus.js
        stream = self.bus.subjects.events_stream
        for index, lane in enumerate(PRIORITIES_BY_RANK):
            config = self.consumer_config(lane)
            await js.add_consumer(stream, config)
            durable = config.durable_name
            psub = await js.pull_subscribe_bind(durable=durable, stream=stream)
            self._pull_subs.append(psub)
            self._fetchers.append(
                asyncio.create_task(self._fetch(index, psub), name=f"fetch-{durable}")
            )
            advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"
            self._advisories.append(
                await self.bus.nc.subscribe(advisory, cb=self._on_max_deliveries)
            )
        for n in range(self.options.concurrency):
            self._workers.append(
                asyncio.create_task(self._work(), name=f"work-{self.consumer}-{n}")
            )

    @property
    def running(self) -> bool:
        tasks = [*self._fetchers, *self._workers]
        return not self._stopping and bool(tasks) and not any(task.done() for task in tasks)

    async def lag(self) -> int | None:
        stream = self.bus.subjects.events_stream
        total = 0
        try:
            for lane in PRIORITIES_BY_RANK:
                durable = self.bus.subjects.lane_consumer(self.consumer, lane)
                info = await self.bus.js.consumer_info(stream, durable)
                total += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        except _NATS_FAILURES:
            return None
        return total

    async def _fetch(self, index: int, psub: Any) -> None:
        buffer, room = self._buffers[index], self._room[index]
        unexpected = 0  # unexpected failures in a row, for the backoff
        while not self._stopping:
            # Refill only once half the buffer is used: fetching a few messages per request
            # costs a round trip each and dominated the consumer's time.
            if len(buffer) > self.options.batch // 2:
                room.clear()
                await room.wait()
                continue
            space = self.options.batch - len(buffer)
            try:
                msgs = await psub.fetch(batch=space, timeout=2.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except nats.errors.Error as exc:
                # Disconnected or reconnecting: the client reconnects by itself; try again shortly.
                log.info("fetch for %s failed (%r); retrying", self.consumer, exc)
                await asyncio.sleep(0.2)
                continue
            except Exception:
                # Anything else (a client defect met while the broker restarts, say) must not end
                # this lane's fetching for good: the events would wait, unfetched, until a restart.
                unexpected += 1
                log.exception(
                    "fetch for %s failed unexpectedly (%d in a row); retrying",
                    self.consumer,
                    unexpected,
                )
                await asyncio.sleep(min(0.2 * 2**unexpected, 5.0))
                continue
            unexpected = 0
            buffer.extend(msgs)
            self._ready.set()

    async def _next(self) -> Msg | None:
        while True:
            for index, buffer in enumerate(self._buffers):
                if buffer:
                    msg = buffer.popleft()
                    if len(buffer) <= self.options.batch // 2:
                        self._room[index].set()
                    return msg
            if self._stopping:
                return None
            self._ready.clear()
            await self._ready.wait()

    async def _work(self) -> None:
        while (msg := await self._next()) is not None:
            try:
                await self._process(msg)
            except nats.errors.Error as exc:
                # The ack or nak did not reach the server; the broker redelivers after ack_wait.
                log.info("ack for %s lost (%r); it will be redelivered", self.consumer, exc)
            except Exception:
                # Not acked, so the broker redelivers it after ack_wait; this worker goes on.
                log.exception("event for %s not settled; it will be redelivered", self.consumer)

    async def _process(self, msg: Msg) -> None:
        deliveries = msg.metadata.num_delivered
        seq = msg.metadata.sequence.stream
        try:
            event = decode_event(msg.data, msg.headers)
        except MalformedEvent as exc:
            self.bus.skip_malformed(self.consumer, exc, f"{msg.subject} sequence {seq}")
            await self.bus.dead_letter(
                self.consumer,
                msg.data,
                subject=msg.subject,
                reason=str(exc),
                deliveries=deliveries,
                seq=seq,
            )
            await msg.term()
            return
        outcome, reason = await run_handler(
            self.consumer, self.handler, event, deliveries, self.options, self.bus.observer
        )
        if outcome is HandlerOutcome.ACK:
            await msg.ack()
        elif outcome is HandlerOutcome.RETRY:
            await msg.nak(delay=self.options.redelivery_delay(deliveries))
        else:
            await self.bus.dead_letter(
                self.consumer,
                msg.data,
                subject=msg.subject,
                reason=reason,
                deliveries=deliveries,
                seq=msg.metadata.sequence.stream,
            )
            await msg.term()

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """The broker gave up on an event that was never acked (handler hung or process died)."""
        info = json.loads(advisory.data)
        seq = int(info["stream_seq"])
        try:
            raw = await self.bus.js.get_msg(self.bus.subjects.events_stream, seq)
        except nats.js.errors.NotFoundError:
            return
        await self.bus.dead_letter(
            self.consumer,
            raw.data or b"",
            subject=raw.subject or "",
            reason="max deliveries reached without an ack (handler timed out or consumer crashed)",
            deliveries=int(info.get("deliveries", self.options.max_deliver)),
            seq=seq,
        )

    async def stop(self, *, grace: float | None = None) -> None:
        if self._stopping:
            return
        self._stopping = True
        for task in self._fetchers:
            task.cancel()
        await asyncio.gather(*self._fetchers, return_exceptions=True)
        # Hand fetched-but-unstarted events back at once (nak) instead of waiting out ack_wait,
        # then let workers finish the handler calls they are in.
        undelivered = [msg for buffer in self._buffers for msg in buffer]
        for buffer in self._buffers:
            buffer.clear()
        for msg in undelivered:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
        self._ready.set()
        wait = self.options.ack_wait if grace is None else grace
        if self._workers:
            _, running = await asyncio.wait(self._workers, timeout=wait)
            for task in running:
                task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        # Pull subscriptions hold fetch replies nobody will read; drop them so a drain is quick.
        for sub in [*self._advisories, *self._pull_subs]:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if self in self.bus._subscriptions:
            self.bus._subscriptions.remove(self)
