"""Events benchmark: outbox-to-consumer throughput and latency vs raw nats-py JetStream publishing.

Run `python benchmarks/bench_events.py`; it starts its own nats-server and embedded PostgreSQL,
prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import asyncpg
import nats
from edrs_events import BaseEvent, ConsumerOptions
from edrs_events.inbox import Inbox, install_inbox
from edrs_events.nats_bus import NatsBus
from edrs_events.outbox import Outbox, install_outbox
from edrs_events.testing import running_nats, running_postgres


def sample_event(n: int) -> BaseEvent:
    return BaseEvent(
        event_type="task.task_created",
        source_container="bench",
        client_id="bench-tenant",
        payload={"task_id": f"t{n}", "title": f"benchmark task {n}", "persona_id": "p1"},
    )


async def raw_publish_rate(url: str, count: int) -> tuple[float, int]:
    """nats-py JetStream async publishes with acks: the ceiling the event system runs under."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=20_000)
    await js.add_stream(name="RAW_BENCH", subjects=["raw.bench.>"])
    body = sample_event(0).to_json()
    started = time.perf_counter()
    for start in range(0, count, 1000):
        futures = [
            await js.publish_async(
                "raw.bench.task_created", body, headers={"Nats-Msg-Id": f"raw-{n}"}
            )
            for n in range(start, min(start + 1000, count))
        ]
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await js.delete_stream("RAW_BENCH")
    await nc.close()
    return count / elapsed, len(body)


async def outbox_to_consumer(
    url: str, dsn: str, count: int, rate: float | None, namespace: str
) -> dict[str, float]:
    """Produce `count` events into the outbox (at `rate`/s, or as fast as possible), relay them
    with a separate relay process, consume them with inbox + effect writes; time each one."""
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=10)
    async with pool.acquire() as conn:
        await install_outbox(conn)
        await install_inbox(conn)
        await conn.execute("DROP TABLE IF EXISTS effects")
        await conn.execute("CREATE TABLE effects (event_id uuid NOT NULL)")
    bus = await NatsBus.connect(url, namespace=namespace)
    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edrs_events.relay",
        "--dsn",
        dsn,
        "--nats-url",
        url,
        "--namespace",
        namespace,
        "--batch-size",
        "1000",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies: list[float] = []
    done = asyncio.Event()
    last_seen = 0.0

    async def effect(event: BaseEvent, conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO effects VALUES ($1)", event.event_id)

    inner = Inbox(pool, f"bench-{namespace}").batched_handler(effect)

    async def handle(event: BaseEvent) -> None:
        nonlocal last_seen
        await inner(event)
        now = datetime.now(UTC)
        latencies.append((now - event.occurred_at).total_seconds())
        last_seen = time.perf_counter()
        if len(latencies) >= count:
            done.set()

    options = ConsumerOptions(ack_wait=30.0, batch=500, concurrency=128, max_ack_pending=5000)
    await bus.subscribe("bench", handle, options=options)
    outbox = Outbox()
    batch = 100
    started = time.perf_counter()
    async with pool.acquire() as conn:
        for start in range(0, count, batch):
            events = [sample_event(n) for n in range(start, min(start + batch, count))]
            async with conn.transaction():
                await outbox.add_many(conn, events)
            if rate is not None:
                # Pace the producer: the next batch is due at its share of the target rate.
                due = started + (start + batch) / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
    produced_in = time.perf_counter() - started
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = last_seen - started
    async with pool.acquire() as conn:
        relay_span = await conn.fetchval(
            "SELECT extract(epoch FROM max(sent_at) - min(created_at)) FROM edrs_outbox"
        )
    relay.terminate()
    await relay.wait()
    await bus.js.delete_stream(bus.subjects.events_stream)
    await bus.js.delete_stream(bus.subjects.dlq_stream)
    await bus.close()
    await pool.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "events_per_s": count / elapsed,
        "outbox_write_per_s": count / produced_in,
        "relayed_per_s": count / float(relay_span),
        "produce_s": produced_in,
        "p50_ms": quantiles[49] * 1000,
        "p95_ms": quantiles[94] * 1000,
        "p99_ms": quantiles[98] * 1000,
    }


async def main(count: int, paced_rate: float) -> None:
    with running_nats() as server, running_postgres() as dsn:
        raw_rate, size = await raw_publish_rate(server.url, count)
        burst = await outbox_to_consumer(server.url, dsn, count, None, "benchburst")
        paced = await outbox_to_consumer(server.url, dsn, count, paced_rate, "benchpaced")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"events benchmark: {count} events of {size} bytes, 2-stage pipeline "
        "(outbox -> relay process -> NATS JetStream -> consumer with inbox + effect rows)"
    )
    print(f"  raw nats-py JetStream publish (async acks):   {raw_rate:10.0f} msg/s")
    print(
        f"  outbox -> consumer, producer unpaced:         {burst['events_per_s']:10.0f} events/s "
        f"(latency p50 {burst['p50_ms']:.0f} ms, p95 {burst['p95_ms']:.0f} ms, "
        f"p99 {burst['p99_ms']:.0f} ms: includes queueing behind the burst)"
    )
    print(
        f"  outbox -> consumer, producer at {paced_rate:.0f}/s:     "
        f"{paced['events_per_s']:10.0f} events/s "
        f"(latency p50 {paced['p50_ms']:.0f} ms, p95 {paced['p95_ms']:.0f} ms, "
        f"p99 {paced['p99_ms']:.0f} ms)"
    )
    for name, run in (("unpaced", burst), ("paced", paced)):
        print(
            f"  stages ({name}): outbox writes {run['outbox_write_per_s']:.0f}/s, "
            f"relayed {run['relayed_per_s']:.0f}/s, consumed {run['events_per_s']:.0f}/s"
        )
    print(
        f"  ratio end-to-end (unpaced) / raw publish:     {burst['events_per_s'] / raw_rate:10.2f}"
    )
    print(
        f"  peak RSS: benchmark process {own:.0f} MiB, largest child (relay/engines) {children:.0f} MiB"
    )
    print("  goal: >= 5000 events/s end to end with p95 < 500 ms (2 cores)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=5_000.0, help="paced producer rate, events/s")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rate))
