"""Unit tests of the Pulsar subscription's own logic, with a stand-in for the Pulsar client (the
adapter's behaviour against a real broker is in the Docker-marked contract suite): a malformed
message is dead-lettered and the worker goes on; stop() lets the handler in flight finish."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from edrs_events import BaseEvent, ConsumerOptions, WireMessage
from edrs_events.pulsar_bus import PulsarBus

# Its exception types are the client's own: installed with the [pulsar] extra (the monorepo has it).
pulsar = pytest.importorskip("pulsar", reason="needs the [pulsar] extra (pulsar-client)")

Eventually = Callable[..., Awaitable[None]]


@dataclass
class Message:
    body: bytes
    props: dict[str, str]
    topic: str
    entry: int

    def data(self) -> bytes:
        return self.body

    def properties(self) -> dict[str, str]:
        return self.props

    def redelivery_count(self) -> int:
        return 0

    def message_id(self) -> str:
        return f"1:{self.entry}"

    def topic_name(self) -> str:
        return self.topic


@dataclass
class Consumer:
    topic: str
    inbox: queue.Queue[Message] = field(default_factory=queue.Queue)
    acked: list[Message] = field(default_factory=list)
    nacked: list[Message] = field(default_factory=list)

    def receive(self, timeout_millis: int) -> Message:
        try:
            return self.inbox.get(timeout=timeout_millis / 1000)
        except queue.Empty:
            raise pulsar.Timeout("no message") from None

    def acknowledge(self, msg: Message) -> None:
        self.acked.append(msg)

    def negative_acknowledge(self, msg: Message) -> None:
        self.nacked.append(msg)

    def close(self) -> None:
        pass


class Client:
    """Just what PulsarBus calls: producers that store, consumers fed by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []
        self.consumers: dict[str, Consumer] = {}
        self.lock = threading.Lock()

    def create_producer(self, topic: str, **_: Any) -> Any:
        client = self

        class Producer:
            def send_async(self, body: bytes, callback: Any, **kwargs: Any) -> None:
                with client.lock:
                    client.sent.append((topic, body, dict(kwargs.get("properties", {}))))
                callback("Ok", None)

            def flush(self) -> None:
                pass

        return Producer()

    def subscribe(self, topic: str, _name: str, **_: Any) -> Consumer:
        self.consumers[topic] = Consumer(topic)
        return self.consumers[topic]

    def get_topic_partitions(self, topic: str) -> list[str]:
        return [topic]

    def close(self) -> None:
        pass


def task_created(task_id: str) -> BaseEvent:
    return BaseEvent(
        event_type="task.task_created",
        source_container="test",
        client_id="acme",
        payload={"task_id": task_id, "title": "x"},
    )


def deliver(consumer: Consumer, body: bytes, props: dict[str, str], entry: int) -> Message:
    msg = Message(body, props, consumer.topic, entry)
    consumer.inbox.put(msg)
    return msg


async def test_a_malformed_message_is_dead_lettered_and_the_worker_goes_on(
    eventually: Eventually,
) -> None:
    client = Client()
    bus = PulsarBus(client, namespace="unit")
    handled: list[str] = []

    async def handle(event: BaseEvent) -> None:
        handled.append(event.payload["task_id"])

    await bus.subscribe("sturdy", handle, options=ConsumerOptions(ack_wait=5.0))
    lane = client.consumers[bus.lane_topic(task_created("x").priority)]
    good = task_created("after")
    props = WireMessage.of(good).headers()
    bad = deliver(lane, b"{not an envelope", props, 1)
    contradicting = deliver(
        lane, good.model_copy(update={"client_id": "globex"}).to_json(), props, 2
    )
    after = deliver(lane, good.to_json(), props, 3)

    async def settled() -> bool:
        return len(lane.acked) == 3

    await eventually(settled, within=10, what="all three settled")
    assert handled == ["after"]
    assert [m.entry for m in lane.acked] == [bad.entry, contradicting.entry, after.entry]
    dlq = [props for topic, _, props in client.sent if topic == bus.topic("dlq")]
    assert len(dlq) == 2
    assert "unparseable envelope" in dlq[0]["edrs-dlq-reason"]
    assert "contradicts" in dlq[1]["edrs-dlq-reason"]
    assert all(p["edrs-dlq-consumer"] == "sturdy" for p in dlq)
    await bus.close()


async def test_stop_lets_the_handler_in_flight_finish_and_hands_back_the_rest(
    eventually: Eventually,
) -> None:
    client = Client()
    bus = PulsarBus(client, namespace="unit")
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def handle(event: BaseEvent) -> None:
        started.set()
        await release.wait()
        finished.append(event.payload["task_id"])

    subscription = await bus.subscribe("patient", handle, options=ConsumerOptions(ack_wait=5.0))
    lane = client.consumers[bus.lane_topic(task_created("x").priority)]
    first, waiting = task_created("first"), task_created("waiting")
    deliver(lane, first.to_json(), WireMessage.of(first).headers(), 1)
    await asyncio.wait_for(started.wait(), 10)
    unstarted = deliver(lane, waiting.to_json(), WireMessage.of(waiting).headers(), 2)

    async def buffered() -> bool:
        return any(subscription._buffers)

    await eventually(buffered, within=10, what="the second message to be received")
    stopping = asyncio.ensure_future(subscription.stop(grace=30))

    async def stopping_began() -> bool:
        return not subscription.running

    await eventually(stopping_began, within=10, what="the subscription to begin stopping")
    release.set()
    await asyncio.wait_for(stopping, 30)
    assert finished == ["first"]
    assert [m.entry for m in lane.acked] == [1]
    assert lane.nacked == [unstarted], "received but not started: handed back at once"
    await bus.close()
