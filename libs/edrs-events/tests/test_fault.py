"""Fault test: 20,000 events through the outbox while relay, consumer and NATS are killed/restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from edrs_events import BaseEvent
from edrs_events.inbox import install_inbox
from edrs_events.nats_bus import NatsBus
from edrs_events.outbox import Outbox, install_outbox

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 20_000
BATCH = 500
CONSUMER_SCRIPT = Path(__file__).with_name("fault_consumer.py")


class Child:
    """A Python child process the test kills with SIGKILL and starts again.

    Its output goes to `log` (appended across restarts), so a failure can show what it said.
    """

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.args = args
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"--- {self.name} started at {time.strftime('%X')}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"{self.name} died early"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def test_no_event_lost_or_duplicated_through_kills_and_a_broker_restart(
    pg_dsn: str,
    own_nats,
    namespace: str,
    eventually: Callable[..., Awaitable[None]],
    tmp_path: Path,
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    await install_outbox(conn)
    await install_inbox(conn)
    await conn.execute("CREATE TABLE tasks (task_id text PRIMARY KEY)")
    await conn.execute("CREATE TABLE effects (event_id uuid NOT NULL)")

    relay = Child(
        "relay",
        [
            "-m",
            "edrs_events.relay",
            "--dsn",
            pg_dsn,
            "--nats-url",
            own_nats.url,
            "--namespace",
            namespace,
            "--batch-size",
            "500",
        ],
        tmp_path / "relay.log",
    )
    consumer = Child(
        "consumer",
        [str(CONSUMER_SCRIPT), pg_dsn, own_nats.url, namespace],
        tmp_path / "consumer.log",
    )
    outbox = Outbox()
    produced = 0
    started = time.monotonic()

    async def produce_until(target: int) -> None:
        nonlocal produced
        while produced < target:
            ids = [f"t{n}" for n in range(produced, produced + BATCH)]
            events = [
                BaseEvent(
                    event_type="task.task_created",
                    source_container="task",
                    payload={"task_id": task_id, "title": "fault"},
                )
                for task_id in ids
            ]
            async with conn.transaction():  # domain rows and their events commit together
                await conn.copy_records_to_table("tasks", records=[(i,) for i in ids])
                await outbox.add_many(conn, events)
            produced += BATCH

    async def sent() -> int:
        return int(
            await conn.fetchval("SELECT count(*) FROM edrs_outbox WHERE sent_at IS NOT NULL")
        )

    async def handled() -> int:
        return int(await conn.fetchval("SELECT count(DISTINCT event_id) FROM effects"))

    async def lanes() -> str:
        """The broker's view of the consumer's lanes, or why it could not be read."""
        try:
            bus = await NatsBus.connect(own_nats.url, namespace=namespace)
        except Exception as exc:  # a report of a failure must not hide it
            return f"broker not reachable: {exc!r}"
        try:
            stream = bus.subjects.events_stream
            state = (await bus.js.stream_info(stream)).state
            lines = [f"stream {stream}: messages={state.messages} last_seq={state.last_seq}"]
            for info in await bus.js.consumers_info(stream):
                lines.append(
                    f"consumer {info.name}: pending={info.num_pending} "
                    f"ack_pending={info.num_ack_pending} redelivered={info.num_redelivered} "
                    f"waiting_pulls={info.num_waiting} delivered={info.delivered.stream_seq} "
                    f"acked={info.ack_floor.stream_seq}"
                )
            return "\n".join(lines)
        except Exception as exc:
            return f"broker state not readable: {exc!r}"
        finally:
            await bus.close()

    async def waited(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
        """`eventually`, and on a timeout everything that tells where the events stopped."""
        try:
            await eventually(condition, within=within, what=what, every=0.1)
        except TimeoutError as exc:
            pending = await Outbox.pending(conn)
            raise AssertionError(
                f"{exc}\nproduced={produced} relayed={await sent()} pending={pending} "
                f"handled={await handled()}\n{await lanes()}\n"
                f"relay log:\n{relay.tail()}\nconsumer log:\n{consumer.tail()}"
            ) from exc

    async def wait_sent(n: int) -> None:
        async def reached() -> bool:
            return await sent() >= n

        await waited(reached, 90, f"{n} events relayed")

    async def wait_handled(n: int) -> None:
        async def reached() -> bool:
            return await handled() >= n

        await waited(reached, 120, f"{n} events handled")

    relay.start()
    consumer.start()
    try:
        await produce_until(4_000)
        await wait_sent(3_000)
        relay.kill()  # 1st relay kill, mid-stream
        relay.start()
        await produce_until(8_000)
        await wait_handled(5_000)
        consumer.kill()  # 1st consumer kill, with deliveries in flight
        consumer.start()
        await produce_until(11_000)
        await wait_sent(9_000)
        # The new consumer is handling events (connected, fetching) when the broker goes away.
        await wait_handled(await handled() + 500)
        own_nats.restart()  # the broker goes away under both
        await produce_until(15_000)
        await wait_sent(13_000)
        relay.kill()  # 2nd relay kill
        relay.start()
        await produce_until(18_000)
        await wait_handled(15_000)
        consumer.kill()  # 2nd consumer kill
        consumer.start()
        await produce_until(TOTAL)
        await wait_handled(TOTAL)

        effects = int(await conn.fetchval("SELECT count(*) FROM effects"))
        distinct = await handled()
        unknown = int(
            await conn.fetchval(
                "SELECT count(*) FROM effects e WHERE NOT EXISTS "
                "(SELECT 1 FROM edrs_outbox o WHERE o.event_id = e.event_id)"
            )
        )
        pending = await Outbox.pending(conn)
        bus = await NatsBus.connect(own_nats.url, namespace=namespace)
        stored = (await bus.js.stream_info(bus.subjects.events_stream)).state.messages
        await bus.close()
        lost = TOTAL - distinct
        duplicates = effects - distinct
        print(
            f"\nfault test: produced={produced} relayed={await sent()} pending={pending} "
            f"stored_in_stream={stored} "
            f"handled={distinct} effects={effects} lost={lost} duplicate_effects={duplicates} "
            f"unknown={unknown} relay_kills={relay.kills} consumer_kills={consumer.kills} "
            f"nats_restarts=1 elapsed={time.monotonic() - started:.1f}s"
        )
        assert (lost, duplicates, unknown, pending) == (0, 0, 0, 0)
        assert stored == TOTAL, "relay republishes after a kill are dropped by Nats-Msg-Id"
        assert (relay.kills, consumer.kills) == (2, 2)
    finally:
        relay.stop()
        consumer.stop()
        await conn.close()
