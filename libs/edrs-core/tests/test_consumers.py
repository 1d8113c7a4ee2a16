"""Event consumers declared on a ServiceDefinition, run by the runtime on real NATS and PostgreSQL:
effects once through the inbox, drained on shutdown, visible in readiness, metrics and traces."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

import asyncpg
import httpx
import pytest
from edrs_core import Runtime, ServiceDefinition, ServiceSettings
from edrs_core.consumers import ConsumedEvent, Consumer
from edrs_core.context import client_id_var, request_id_var
from edrs_core.testing import HTTP_TIMEOUT, RunningService, running_service, wait_until
from edrs_events import BaseEvent, ConsumerOptions, DeliverFrom
from edrs_events.nats_bus import NatsBus
from opentelemetry import trace
from pydantic_settings import SettingsConfigDict

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class TallySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_TALLY_")
    service_name: ClassVar[str] = "tally"
    uses_redis: ClassVar[bool] = False


@dataclass
class Observed:
    """What the handler saw, for the test to check (the service runs in the test's process)."""

    contexts: list[tuple[str | None, str | None, str]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)
    slow_finished: bool = False


def tally_service(observed: Observed, consumer: str) -> ServiceDefinition:
    async def count(delivery: ConsumedEvent) -> None:
        event = delivery.event
        task_id = event.payload["task_id"]
        span = trace.get_current_span().get_span_context()
        observed.contexts.append(
            (client_id_var.get(), request_id_var.get(), f"{span.trace_id:032x}")
        )
        observed.attempts[task_id] = observed.attempts.get(task_id, 0) + 1
        await delivery.conn.execute(
            "INSERT INTO tally (event_id, task_id) VALUES ($1, $2)", event.event_id, task_id
        )
        if task_id.startswith("flaky") and observed.attempts[task_id] == 1:
            # Raised after the write: the write and the inbox row roll back together.
            raise RuntimeError("first delivery fails")
        if task_id.startswith("slow"):
            observed.slow_started.set()
            await observed.release_slow.wait()
            observed.slow_finished = True

    async def build(rt: Runtime) -> list:
        async with rt.db.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS tally (event_id uuid NOT NULL, task_id text NOT NULL)"
            )
        return []

    return ServiceDefinition(
        settings_cls=TallySettings,
        build=build,
        consumers=[
            Consumer(
                consumer,
                ["task.task_created"],
                count,
                ConsumerOptions(ack_wait=5.0, backoff=(0.05,), deliver_from=DeliverFrom.NEW),
            )
        ],
    )


@dataclass
class Tally:
    service: RunningService
    observed: Observed
    consumer: str
    bus: NatsBus

    async def rows(self, task_id: str) -> int:
        rt = self.service.runner.runtime
        assert rt is not None
        return int(await rt.db.fetchval("SELECT count(*) FROM tally WHERE task_id = $1", task_id))

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            return (await client.get(f"{self.service.metrics_url}/metrics")).text

    async def metric(self, name: str) -> float:
        for line in (await self.metrics()).splitlines():
            if line.startswith(name + "{") and f'consumer="{self.consumer}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
async def tally(postgres_engine, nats_engine) -> AsyncIterator[Tally]:
    observed = Observed()
    consumer = f"tally-{uuid.uuid4().hex[:8]}"
    bus = await NatsBus.connect(nats_engine.url())
    async with running_service(
        tally_service(observed, consumer),
        database_url=postgres_engine.url("test_consumers"),
        bus_url=nats_engine.url(),
    ) as service:
        yield Tally(service, observed, consumer, bus)
    await bus.close()


def task_created(task_id: str, **fields: object) -> BaseEvent:
    return BaseEvent(
        event_type="task.task_created",
        source_container="test",
        client_id="tenant-tally",
        payload={"task_id": task_id, "title": "count me"},
        **fields,
    )


async def test_a_redelivered_event_changes_nothing_the_second_time(tally: Tally) -> None:
    task_id = f"once-{uuid.uuid4().hex[:6]}"
    event = task_created(task_id)
    first = tally.bus.encode(event)
    # The same event stored twice under two dedup ids: a redelivery the broker cannot drop.
    await tally.bus.publish_wire([first, replace(first, msg_id=f"{first.event_id}:again")])

    async def both_delivered() -> bool:
        return await tally.metric("edrs_event_consumer_duplicates_total") >= 1

    await wait_until(both_delivered, 20, "the second delivery to be recognised")
    assert await tally.rows(task_id) == 1
    assert tally.observed.attempts[task_id] == 1
    assert await tally.metric("edrs_event_consumer_handled_total") == 2  # both acknowledged


async def test_a_failed_delivery_rolls_back_its_effects_and_the_retry_applies_them_once(
    tally: Tally,
) -> None:
    task_id = f"flaky-{uuid.uuid4().hex[:6]}"
    await tally.bus.publish(task_created(task_id))

    async def handled() -> bool:
        return await tally.metric("edrs_event_consumer_handled_total") >= 1

    await wait_until(handled, 20, "the retried event to be handled")
    assert tally.observed.attempts[task_id] == 2
    assert await tally.rows(task_id) == 1, "the failed attempt's write was rolled back"
    assert await tally.metric("edrs_event_consumer_failed_total") == 1


async def test_the_handler_runs_in_the_events_tenant_request_and_trace(tally: Tally) -> None:
    task_id = f"ctx-{uuid.uuid4().hex[:6]}"
    await tally.bus.publish(
        task_created(task_id, correlation_id="order-7", metadata={"traceparent": TRACEPARENT})
    )

    async def handled() -> bool:
        return task_id in tally.observed.attempts

    await wait_until(handled, 20, "the event to be handled")
    assert tally.observed.contexts == [("tenant-tally", "order-7", TRACE_ID)]
    # Outside the handler nothing is bound.
    assert client_id_var.get() is None


async def test_readiness_and_metrics_show_the_consumer(tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        ready = await client.get(f"{tally.service.http_url}/health/readiness")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"][f"consumer:{tally.consumer}"] == "ok"
    assert ready.json()["checks"]["bus"] == "ok"
    text = await tally.metrics()
    assert f'consumer="{tally.consumer}"' in text
    assert any(
        line.startswith("edrs_event_consumer_lag{") and tally.consumer in line
        for line in text.splitlines()
    )


async def test_a_handler_in_flight_at_shutdown_finishes_and_commits(
    postgres_engine, nats_engine
) -> None:
    observed = Observed()
    consumer = f"tally-{uuid.uuid4().hex[:8]}"
    task_id = f"slow-{uuid.uuid4().hex[:6]}"
    database = postgres_engine.url("test_consumers")
    async with (
        await NatsBus.connect(nats_engine.url()) as bus,
        running_service(
            tally_service(observed, consumer),
            database_url=database,
            bus_url=nats_engine.url(),
            shutdown_grace_seconds=10.0,
        ) as service,
    ):
        await bus.publish(task_created(task_id))
        await asyncio.wait_for(observed.slow_started.wait(), 20)
        service.runner.stop_requested.set()  # what SIGTERM does

        async def draining() -> bool:
            return service.runner.health.shutting_down

        await wait_until(draining, 10, "the service to start shutting down")
        assert not observed.slow_finished
        observed.release_slow.set()
    # running_service returned once the runner exited: the handler had finished and committed.
    assert observed.slow_finished
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM tally WHERE task_id = $1", task_id) == 1
        assert (
            await conn.fetchval("SELECT count(*) FROM edrs_inbox WHERE consumer = $1", consumer)
            == 1
        )
    finally:
        await conn.close()
