"""What docs/events.md promises of the relay and of delivery, against real PostgreSQL and NATS:
one active relay per database, the fallback poll, pruning of sent rows, trace context carried
through the outbox, a hung handler dead-lettered after max deliveries, and a subscription that
outlives an unexpected failure of its fetch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from edrs_events import BaseEvent, ConsumerOptions
from edrs_events.nats_bus import NatsBus
from edrs_events.outbox import Outbox, install_outbox
from edrs_events.relay import _LEADER_LOCK, OutboxRelay
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

pytestmark = pytest.mark.integration

Eventually = Callable[..., Awaitable[None]]


def task_created(task_id: str) -> BaseEvent:
    return BaseEvent(
        event_type="task.task_created",
        source_container="task",
        payload={"task_id": task_id, "title": f"task {task_id}"},
    )


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await install_outbox(conn)
    yield pool
    await pool.close()


@pytest.fixture
async def bus(nats_url: str, namespace: str) -> AsyncIterator[NatsBus]:
    bus = await NatsBus.connect(nats_url, namespace=namespace)
    yield bus
    await bus.js.delete_stream(bus.subjects.events_stream)
    await bus.js.delete_stream(bus.subjects.dlq_stream)
    await bus.close()


async def add(pool: asyncpg.Pool, *events: BaseEvent) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            await Outbox().add(conn, event)


async def advisory_lock_holders(pool: asyncpg.Pool) -> tuple[int, int]:
    """(sessions holding the relay's leader lock, sessions waiting for it) in this database."""
    rows = await pool.fetch(
        "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((classid::bigint << 32) | objid::bigint) = $1",
        _LEADER_LOCK,
    )
    return sum(r["granted"] for r in rows), sum(not r["granted"] for r in rows)


async def test_one_relay_publishes_at_a_time_and_the_next_takes_over(
    pool: asyncpg.Pool, pg_dsn: str, bus: NatsBus, eventually: Eventually
) -> None:
    first, second = (OutboxRelay(pg_dsn, bus, poll_interval=3600.0) for _ in range(2))
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running_first = asyncio.create_task(first.run(stop_first))

    async def held(expected: tuple[int, int]) -> bool:
        return await advisory_lock_holders(pool) == expected

    try:
        await eventually(lambda: held((1, 0)), within=30, what="the first relay to lead")
        running_second = asyncio.create_task(second.run(stop_second))
        await eventually(lambda: held((1, 1)), within=30, what="the second relay to wait")
        await add(pool, task_created("t1"), task_created("t2"))

        async def first_published() -> bool:
            return first.stats.published == 2

        await eventually(first_published, within=30, what="the leader to publish")
        assert second.stats.published == 0, "a waiting relay published"

        # The leader stops; its session ends and the waiting relay takes the lock and the work.
        stop_first.set()
        await running_first
        await eventually(lambda: held((1, 0)), within=30, what="the second relay to lead")
        await add(pool, task_created("t3"))

        async def second_published() -> bool:
            return second.stats.published == 1

        await eventually(second_published, within=30, what="the new leader to publish")
        assert first.stats.published == 2
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(running_first, return_exceptions=True)
        if "running_second" in locals():
            await running_second


async def test_a_missed_notify_is_caught_by_the_fallback_poll(
    pool: asyncpg.Pool, pg_dsn: str, bus: NatsBus, eventually: Eventually
) -> None:
    relay = OutboxRelay(pg_dsn, bus, poll_interval=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await eventually(
            lambda: _eq(advisory_lock_holders(pool), (1, 0)), within=30, what="the relay to lead"
        )
        # No NOTIFY for this insert: only the poll can find the row.
        await pool.execute("ALTER TABLE edrs_outbox DISABLE TRIGGER edrs_outbox_notify")
        await add(pool, task_created("quiet"))

        async def published() -> bool:
            return relay.stats.published == 1

        await eventually(published, within=30, what="the poll to find the row")
    finally:
        stop.set()
        await running
    assert await pool.fetchval("SELECT count(*) FROM edrs_outbox WHERE sent_at IS NULL") == 0


async def test_sent_rows_are_pruned_after_the_retention_and_others_kept(
    pool: asyncpg.Pool, pg_dsn: str, bus: NatsBus
) -> None:
    await add(pool, task_created("old"), task_created("recent"), task_created("pending"))
    await pool.execute(
        "UPDATE edrs_outbox SET sent_at = now() - interval '8 days' "
        "WHERE convert_from(body, 'UTF8') LIKE '%task old%'"
    )
    await pool.execute(
        "UPDATE edrs_outbox SET sent_at = now() - interval '1 day' "
        "WHERE convert_from(body, 'UTF8') LIKE '%task recent%'"
    )
    # The default retention (7 days), on one relay pass over an outbox with nothing pending.
    relay = OutboxRelay(pg_dsn, bus)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await relay.relay_once(conn) == 1  # "pending" is published first
        assert await relay.relay_once(conn) == 0  # idle: now it prunes
    finally:
        await conn.close()
    kept = await pool.fetch("SELECT convert_from(body, 'UTF8') AS body FROM edrs_outbox")
    titles = sorted(
        t for row in kept for t in ("old", "recent", "pending") if f"task {t}" in row[0]
    )
    assert titles == ["pending", "recent"]


async def test_trace_context_travels_through_the_outbox_to_the_consumer(
    pool: asyncpg.Pool, pg_dsn: str, bus: NatsBus, eventually: Eventually
) -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    received: list[BaseEvent] = []

    async def handle(event: BaseEvent) -> None:
        received.append(event)

    await bus.subscribe("traced_outbox", handle, options=ConsumerOptions(ack_wait=5.0))
    with trace.get_tracer("test").start_as_current_span("task.create_task") as request_span:
        await add(pool, task_created("traced"))
    # The relay publishes outside the request: the context comes from the outbox row.
    relay = OutboxRelay(pg_dsn, bus, poll_interval=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:

        async def handled() -> bool:
            return bool(received) and any(
                s.name == "traced_outbox.handle" for s in exporter.get_finished_spans()
            )

        await eventually(handled, within=30, what="the relayed event to be handled")
    finally:
        stop.set()
        await running
    [event] = received
    trace_id = request_span.get_span_context().trace_id
    assert event.traceparent is not None and f"{trace_id:032x}" in event.traceparent
    [consumer] = [s for s in exporter.get_finished_spans() if s.name == "traced_outbox.handle"]
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == trace_id
    [producer] = [
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.PRODUCER and s.context.trace_id == trace_id
    ]
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id


async def test_a_hung_handler_is_dead_lettered_after_max_deliveries(
    bus: NatsBus, eventually: Eventually
) -> None:
    calls = 0

    async def hang(event: BaseEvent) -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()  # never acks, never fails

    options = ConsumerOptions(ack_wait=1.0, max_deliver=2, concurrency=2)
    await bus.subscribe("stuck", hang, options=options)
    event = task_created("hung")
    await bus.publish(event)

    async def dead_lettered() -> bool:
        return bool(await bus.dead_letters(consumer="stuck"))

    await eventually(dead_lettered, within=60, what="the hung event in the dead-letter stream")
    [letter] = await bus.dead_letters(consumer="stuck")
    assert letter.event_id == str(event.event_id)
    assert letter.deliveries == 2
    assert "max deliveries" in letter.reason
    assert calls == 2


async def test_an_unexpected_fetch_failure_does_not_end_the_subscription(
    bus: NatsBus, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[str] = []

    async def handle(event: BaseEvent) -> None:
        handled.append(event.payload["task_id"])

    subscription = await bus.subscribe("sturdy", handle, options=ConsumerOptions(concurrency=2))
    failures = 0
    for psub in subscription._pull_subs:  # every lane's next two fetches fail unexpectedly
        real_fetch = psub.fetch

        async def failing_fetch(*args, _real=real_fetch, _left=[2], **kwargs):  # noqa: B006
            nonlocal failures
            if _left[0]:
                _left[0] -= 1
                failures += 1
                raise RuntimeError("a client defect")
            return await _real(*args, **kwargs)

        psub.fetch = failing_fetch

    async def all_failed() -> bool:
        return failures == 2 * len(subscription._pull_subs)

    await eventually(all_failed, within=60, what="each lane's two failed fetches")
    await bus.publish(task_created("after-the-failure"))

    async def got_it() -> bool:
        return handled == ["after-the-failure"]

    await eventually(got_it, within=60, what="the event published after the failures handled")
    assert subscription.running
    logged = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert logged and all("a client defect" in (r.exc_text or "") for r in logged)


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
