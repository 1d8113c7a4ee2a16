"""Outbox, relay and inbox against real PostgreSQL and NATS JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from edrs_events import BaseEvent, ConsumerOptions, EventValidationError
from edrs_events.inbox import Inbox, install_inbox
from edrs_events.nats_bus import NatsBus
from edrs_events.outbox import Outbox, install_outbox
from edrs_events.relay import OutboxRelay

pytestmark = pytest.mark.integration

Eventually = Callable[..., Awaitable[None]]


def task_created(task_id: str, **fields: object) -> BaseEvent:
    return BaseEvent(
        event_type="task.task_created",
        source_container="task",
        payload={"task_id": task_id, "title": f"task {task_id}"},
        **fields,
    )


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await install_outbox(conn)
        await install_inbox(conn)
        await conn.execute("CREATE TABLE tasks (task_id text PRIMARY KEY)")
        await conn.execute("CREATE TABLE effects (event_id uuid NOT NULL, consumer text NOT NULL)")
    yield pool
    await pool.close()


@pytest.fixture
async def bus(nats_url: str, namespace: str) -> AsyncIterator[NatsBus]:
    bus = await NatsBus.connect(nats_url, namespace=namespace)
    yield bus
    await bus.js.delete_stream(bus.subjects.events_stream)
    await bus.js.delete_stream(bus.subjects.dlq_stream)
    await bus.close()


async def test_event_commits_with_its_domain_row_or_not_at_all(pool: asyncpg.Pool) -> None:
    outbox = Outbox()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO tasks VALUES ('t1')")
            await outbox.add(conn, task_created("t1"), aggregate_id="t1")
        with pytest.raises(RuntimeError, match="boom"):
            async with conn.transaction():
                await conn.execute("INSERT INTO tasks VALUES ('t2')")
                await outbox.add(conn, task_created("t2"), aggregate_id="t2")
                raise RuntimeError("boom")
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 1
        assert await Outbox.pending(conn) == 1
        body = await conn.fetchval("SELECT body FROM edrs_outbox")
        assert BaseEvent.from_json(body).payload["task_id"] == "t1"


async def test_outbox_refuses_an_invalid_payload_naming_the_field(pool: asyncpg.Pool) -> None:
    bad = BaseEvent(
        event_type="task.task_created", source_container="task", payload={"task_id": "t"}
    )
    async with pool.acquire() as conn:
        with pytest.raises(EventValidationError, match=r"payload\.title"):
            await Outbox().add(conn, bad)
        assert await Outbox.pending(conn) == 0


async def test_relay_wakes_on_notify_publishes_in_order_and_marks_sent(
    pool: asyncpg.Pool, pg_dsn: str, bus: NatsBus, eventually: Eventually
) -> None:
    received: list[tuple[str, str]] = []

    async def handle(event: BaseEvent) -> None:
        received.append((event.metadata["aggregate"], event.payload["task_id"]))

    await bus.subscribe("orderly", handle, options=ConsumerOptions(ack_wait=5.0))
    # A poll interval of an hour: only the NOTIFY from the insert can wake the relay in time.
    relay = OutboxRelay(pg_dsn, bus, batch_size=7, poll_interval=3600.0)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        async with pool.acquire() as conn:
            outbox = Outbox()
            for n in range(30):
                aggregate = "a" if n % 3 else "b"
                event = task_created(f"{aggregate}{n}", metadata={"aggregate": aggregate})
                async with conn.transaction():
                    await outbox.add(conn, event, aggregate_id=aggregate)

        async def all_received() -> bool:
            return len(received) >= 30

        await eventually(all_received, within=20, what="30 relayed events")
    finally:
        stop.set()
        await running
    for aggregate in ("a", "b"):
        ids = [int(task[1:]) for agg, task in received if agg == aggregate]
        assert ids == sorted(ids), f"aggregate {aggregate} out of order: {ids}"
    async with pool.acquire() as conn:
        assert await Outbox.pending(conn) == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM edrs_outbox WHERE sent_at IS NOT NULL") == 30
        )
    assert relay.stats.published == 30


async def test_inbox_runs_effects_once_per_event(pool: asyncpg.Pool) -> None:
    inbox = Inbox(pool, "billing")

    async def effect(event: BaseEvent, conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO effects VALUES ($1, 'billing')", event.event_id)

    handle = inbox.handler(effect)
    event = task_created("t1")
    await asyncio.gather(handle(event), handle(event), handle(event))
    await handle(event)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 1
    assert await inbox.handled(event.event_id)
    assert await Inbox(pool, "audit").handled(event.event_id) is False


async def test_batched_inbox_shares_a_transaction_and_isolates_a_poison_event(
    pool: asyncpg.Pool,
) -> None:
    inbox = Inbox(pool, "batched")
    transactions: set[int] = set()

    async def effect(event: BaseEvent, conn: asyncpg.Connection) -> None:
        if event.payload["task_id"] == "poison":
            raise ValueError("poison")
        transactions.add(await conn.fetchval("SELECT txid_current()"))
        await conn.execute("INSERT INTO effects VALUES ($1, 'batched')", event.event_id)

    handle = inbox.batched_handler(effect)
    events = [task_created(f"t{n}") for n in range(20)]
    await asyncio.gather(*(handle(e) for e in [*events, events[0], events[1]]))
    assert len(transactions) == 1, "events arriving together commit together"

    poison = task_created("poison")
    more = [task_created(f"u{n}") for n in range(5)]
    results = await asyncio.gather(*(handle(e) for e in [*more, poison]), return_exceptions=True)
    assert [type(r) for r in results] == [type(None)] * 5 + [ValueError]
    await asyncio.gather(*(handle(e) for e in events))  # redelivered: nothing happens
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 25
        assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM effects") == 25
    assert not await inbox.handled(poison.event_id)


async def test_parallel_batches_handle_each_event_once_and_isolate_a_poison_event(
    pool: asyncpg.Pool,
) -> None:
    """With `parallel=3`, batches run in transactions of their own at once; an event that is in
    two of them (a redelivery arriving beside the first delivery) is still handled once."""
    inbox = Inbox(pool, "parallel")
    transactions: set[int] = set()

    async def effect(event: BaseEvent, conn: asyncpg.Connection) -> None:
        if event.payload["task_id"] == "poison":
            raise ValueError("poison")
        transactions.add(await conn.fetchval("SELECT txid_current()"))
        await conn.execute("INSERT INTO effects VALUES ($1, 'parallel')", event.event_id)

    with pytest.raises(ValueError, match="parallel"):
        inbox.batched_handler(effect, parallel=0)
    handle = inbox.batched_handler(effect, max_batch=20, parallel=3)
    events = [task_created(f"t{n}") for n in range(120)]
    poison = task_created("poison")

    async def arrive(event: BaseEvent, after: float) -> None:
        await asyncio.sleep(after)
        await handle(event)

    arrivals = [arrive(e, n % 6 * 0.001) for n, e in enumerate([*events, *events[::3]])]
    results = await asyncio.gather(*arrivals, arrive(poison, 0.002), return_exceptions=True)
    assert [r for r in results if r is not None] == [results[-1]]
    assert isinstance(results[-1], ValueError)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == len(events)
        assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM effects") == len(events)
    assert len(transactions) >= len(events) // 20, "at most max_batch events a transaction"
    assert not await inbox.handled(poison.event_id)


async def test_effect_rolled_back_with_a_failing_handler_is_retried(pool: asyncpg.Pool) -> None:
    inbox = Inbox(pool, "billing")
    calls = 0

    async def flaky(event: BaseEvent, conn: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("INSERT INTO effects VALUES ($1, 'billing')", event.event_id)
        if calls == 1:
            raise ConnectionError("downstream unavailable")

    handle = inbox.handler(flaky)
    event = task_created("t1")
    with pytest.raises(ConnectionError):
        await handle(event)
    assert not await inbox.handled(event.event_id), "the inbox row rolls back with the effects"
    await handle(event)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 1


async def test_consumer_crashing_after_its_effect_and_before_ack_yields_one_effect(
    pool: asyncpg.Pool, nats_url: str, namespace: str, eventually: Eventually
) -> None:
    options = ConsumerOptions(ack_wait=1.0, max_deliver=5, backoff=(0.1,))
    inbox = Inbox(pool, "crashy")

    async def effect(event: BaseEvent, conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO effects VALUES ($1, 'crashy')", event.event_id)

    committed = asyncio.Event()
    effect_then_hang = inbox.handler(effect)

    async def first_life(event: BaseEvent) -> None:
        await effect_then_hang(event)  # effect and inbox row committed...
        committed.set()
        await asyncio.Event().wait()  # ...and the process dies before it acks

    first = await NatsBus.connect(nats_url, namespace=namespace)
    await first.subscribe("crashy", first_life, options=options)
    event = task_created("t1")
    await first.publish(event)
    await asyncio.wait_for(committed.wait(), 10)
    await first.nc.close()  # the crash: the connection goes away with the delivery unacked
    await first.close()

    deliveries: list[int] = []
    handle = inbox.handler(effect)

    async def second_life(event: BaseEvent) -> None:
        deliveries.append(1)
        await handle(event)

    second = await NatsBus.connect(nats_url, namespace=namespace)
    try:
        await second.subscribe("crashy", second_life, options=options)

        async def redelivered_and_acked() -> bool:
            if not deliveries:
                return False
            info = await second.js.consumer_info(second.subjects.events_stream, "crashy_normal")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(redelivered_and_acked, within=20, what="the redelivery to be acked")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM effects") == 1
    finally:
        await second.js.delete_stream(second.subjects.events_stream)
        await second.js.delete_stream(second.subjects.dlq_stream)
        await second.close()


async def test_batched_consumer_over_the_bus_isolates_a_poison_event_and_handles_once(
    pool: asyncpg.Pool, pg_dsn: str, bus: NatsBus, eventually: Eventually
) -> None:
    """Outbox -> relay -> JetStream -> many workers on one batched inbox: the events that arrive
    together commit in shared transactions, exactly once each (a redelivered copy under another
    broker dedup id changes nothing); the one poison event fails alone, is retried, and is
    dead-lettered after `max_deliver` deliveries."""
    inbox = Inbox(pool, "batch_bus")
    poison_deliveries = 0
    transactions: set[int] = set()

    async def effect(event: BaseEvent, conn: asyncpg.Connection) -> None:
        if event.payload["task_id"] == "poison":
            raise ValueError("poison")
        transactions.add(await conn.fetchval("SELECT txid_current()"))
        await conn.execute("INSERT INTO effects VALUES ($1, 'batch_bus')", event.event_id)

    options = ConsumerOptions(
        ack_wait=30.0, max_deliver=3, backoff=(0.1,), concurrency=64, batch=200
    )
    events = [task_created(f"t{n}") for n in range(300)]
    poison = task_created("poison")
    outbox = Outbox()
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add_many(conn, [*events[:150], poison, *events[150:]])
    relay = OutboxRelay(pg_dsn, bus, batch_size=100, poll_interval=0.2)
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    batched = inbox.batched_handler(effect)

    async def handle(event: BaseEvent) -> None:
        nonlocal poison_deliveries
        if event.event_id == poison.event_id:
            poison_deliveries += 1
        await batched(event)

    await bus.subscribe("batch_bus", handle, options=options)

    async def dead_lettered() -> bool:
        return bool(await bus.dead_letters(consumer="batch_bus"))

    async def all_handled() -> bool:
        async with pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT count(*) FROM effects") >= len(events))

    try:
        await eventually(all_handled, within=120, what="the 300 good events handled")
        await eventually(dead_lettered, within=120, what="the poison event dead-lettered")
        # The same events again under new broker dedup ids (a re-drive): the inbox drops them.
        from dataclasses import replace

        from edrs_events import WireMessage

        copies = [WireMessage.of(e) for e in events[:50]]
        await bus.publish_wire([replace(m, msg_id=f"{m.event_id}:again") for m in copies])
        marker = task_created("marker")
        await bus.publish(marker)
        await eventually(
            lambda: inbox.handled(marker.event_id), within=60, what="the marker after the copies"
        )
    finally:
        stop.set()
        await relaying
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == len(events) + 1
        assert (
            await conn.fetchval("SELECT count(DISTINCT event_id) FROM effects") == len(events) + 1
        )
    assert len(transactions) < len(events), "events arriving together share transactions"
    assert poison_deliveries == options.max_deliver
    [letter] = await bus.dead_letters(consumer="batch_bus")
    assert letter.event_id == str(poison.event_id)
    assert "ValueError: poison" in letter.reason
    assert not await inbox.handled(poison.event_id)
