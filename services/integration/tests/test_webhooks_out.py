"""Webhooks out against real PostgreSQL, OpenBao and a receiver on loopback (allowed by an explicit
operator rule): signed per Standard Webhooks (verified with the `standardwebhooks` library),
retried on a schedule driven by a clock the test moves, dead-lettered, replayed."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import standardwebhooks.webhooks
from edrs_core.clock import ManualClock
from edrs_core.db import open_database
from edrs_core.outbound import OutboundClient, OutboundLimits, OutboundPolicy
from edrs_core.secretstore import VaultConfig, VaultSecretStore
from edrs_core.testing_http import LoopbackHttpServer, RecordedRequest, Responder
from edrs_events import BaseEvent
from edrs_integration.app import definition
from edrs_integration.webhooks.dispatcher import RETRY_SCHEDULE, WebhookDispatcher
from edrs_integration.webhooks.signing import new_secret
from edrs_integration.webhooks.store import WebhookStore, enqueue_deliveries
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
async def db(postgres_engine) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_database(
        postgres_engine.url("test_webhooks_out"), definition.migrations, pool_size=5
    )
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def store(db, openbao_engine) -> WebhookStore:
    secrets = VaultSecretStore(
        VaultConfig(
            address=openbao_engine.url(),
            token=SecretStr(openbao_engine.root_token),
            path_prefix=f"edrs-test-{RUN}",
        )
    )
    return WebhookStore(db, secrets)


class FlakyReceiver:
    """Answers 500 to the first `failures` requests, then 200; records every request with the
    time (of the test's clock) it arrived."""

    def __init__(self, failures: int, clock: ManualClock) -> None:
        self.failures = failures
        self.clock = clock
        self.received: list[RecordedRequest] = []
        self.arrived: list[datetime] = []

    async def __call__(self, request: RecordedRequest, out: Responder) -> None:
        self.received.append(request)
        self.arrived.append(self.clock.now())
        if len(self.received) <= self.failures:
            await out.send(500, b"try later")
        else:
            await out.send(200, b"ok")


def verify(secret: str, receiver: FlakyReceiver, index: int = -1) -> dict[str, Any]:
    """What the `standardwebhooks` library makes of a received request, checked at the time it
    arrived: the library reads the wall clock for its ±5 min window, and this test's clock has
    moved hours ahead of it."""
    request, arrived = receiver.received[index], receiver.arrived[index]

    class ArrivalTime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> ArrivalTime:  # type: ignore[override]
            return cls.fromtimestamp(arrived.timestamp(), tz)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(standardwebhooks.webhooks, "datetime", ArrivalTime)
        result: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return result


@pytest.fixture
async def receiver() -> AsyncIterator[LoopbackHttpServer]:
    async with LoopbackHttpServer("127.0.0.1") as server:
        yield server


def dispatcher(
    store: WebhookStore, clock: ManualClock, allow: tuple[str, ...]
) -> WebhookDispatcher:
    client = OutboundClient(OutboundPolicy(allow=allow), OutboundLimits(timeout_seconds=10))
    return WebhookDispatcher(store, client, clock, rng=random.Random(7))


def event(tenant: str, event_type: str = "task.task_created") -> BaseEvent:
    return BaseEvent(
        event_type=event_type,
        source_container="task",
        client_id=tenant,
        payload={"task_id": str(uuid.uuid4()), "title": "Quarterly report"},
    )


async def queue(db: asyncpg.Pool, ev: BaseEvent, now: datetime) -> int:
    async with db.acquire() as conn, conn.transaction():
        return await enqueue_deliveries(conn, ev, now)


async def advance_to_next_attempt(store: WebhookStore, clock: ManualClock) -> None:
    due = await store.next_due()
    assert due is not None, "a retry should be scheduled"
    if due > clock.now():
        clock.advance(due - clock.now())


async def test_a_receiver_failing_four_times_gets_the_event_once_with_one_webhook_id(
    db, store, receiver
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex}"
    clock = ManualClock(datetime.now(UTC))
    flaky = FlakyReceiver(failures=4, clock=clock)
    receiver.routes["/hook"] = flaky
    secret = new_secret()
    sub = await store.create_subscription(
        tenant,
        url=receiver.url("/hook"),
        event_types=["task.*"],
        description="",
        enabled=True,
        secret=secret,
        now=clock.now(),
    )
    ev = event(tenant)
    assert await queue(db, ev, clock.now()) == 1
    # A redelivery of the event by the bus queues nothing new.
    assert await queue(db, ev, clock.now()) == 0
    sender = dispatcher(store, clock, allow=("127.0.0.1",))

    start = clock.now()
    for _ in range(5):
        await advance_to_next_attempt(store, clock)
        assert await sender.run_due() == 1
    assert await sender.run_due() == 0
    # Four failures waited through the schedule's first steps (±20 % jitter): hours, not ms.
    waited = clock.now() - start
    expected = sum(RETRY_SCHEDULE[1:5], timedelta(0))
    assert expected * 0.8 <= waited <= expected * 1.2

    assert [r.path for r in flaky.received] == ["/hook"] * 5
    ids = {r.headers["webhook-id"] for r in flaky.received}
    assert len(ids) == 1, "every attempt carries the same webhook-id"
    for index in range(5):
        verified = verify(secret, flaky, index)
        assert verified["type"] == "task.task_created"
        assert verified["id"] == str(ev.event_id)
        assert verified["data"] == ev.payload
    # A receiver with another secret would refuse it.
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), flaky)

    [delivery], _ = await store.list_deliveries(tenant, sub.id, None, "", 10)
    assert delivery.state == "succeeded"
    assert delivery.webhook_id == ids.pop()
    assert [a.status_code for a in delivery.attempts] == [500, 500, 500, 500, 200]
    assert [a.error for a in delivery.attempts][:1] == ["the receiver answered HTTP 500"]
    assert all(a.latency_ms >= 0 for a in delivery.attempts)


async def test_after_the_last_attempt_a_delivery_is_a_dead_letter_and_replay_resends_it(
    db, store, receiver
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex}"
    clock = ManualClock(datetime.now(UTC))
    down = FlakyReceiver(failures=len(RETRY_SCHEDULE), clock=clock)
    receiver.routes["/down"] = down
    secret = new_secret()
    sub = await store.create_subscription(
        tenant,
        url=receiver.url("/down"),
        event_types=["*"],
        description="",
        enabled=True,
        secret=secret,
        now=clock.now(),
    )
    await queue(db, event(tenant), clock.now())
    sender = dispatcher(store, clock, allow=("127.0.0.1",))
    for _ in RETRY_SCHEDULE:
        await advance_to_next_attempt(store, clock)
        assert await sender.run_due() == 1
    dead, _ = await store.list_deliveries(tenant, sub.id, "dead", "", 10)
    assert len(dead) == 1 and len(dead[0].attempts) == len(RETRY_SCHEDULE)
    assert await store.next_due() is None or (await store.next_due()) > clock.now() + timedelta(
        days=1
    )

    # The receiver is back: a replay sends the same message (same id) and it succeeds.
    replayed = await store.replay(tenant, sub.id, dead[0].id, clock.now())
    assert replayed is not None and replayed.state == "pending"
    assert await sender.run_due() == 1
    [done], _ = await store.list_deliveries(tenant, sub.id, None, "", 10)
    assert done.state == "succeeded"
    assert len(done.attempts) == len(RETRY_SCHEDULE) + 1
    assert {r.headers["webhook-id"] for r in down.received} == {done.webhook_id}
    verify(secret, down)
    # Another tenant cannot see or replay it.
    assert await store.replay("someone-else", sub.id, done.id, clock.now()) is None


async def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one(
    db, store, receiver
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex}"
    clock = ManualClock(datetime.now(UTC))
    ok = FlakyReceiver(failures=0, clock=clock)
    receiver.routes["/rot"] = ok
    old = new_secret()
    sub = await store.create_subscription(
        tenant,
        url=receiver.url("/rot"),
        event_types=["task.task_created"],
        description="",
        enabled=True,
        secret=old,
        now=clock.now(),
    )
    new = new_secret()
    rotated = await store.rotate_secret(
        tenant, sub.id, secret=new, previous_ttl=timedelta(hours=24), now=clock.now()
    )
    assert rotated is not None and rotated.secret_version == sub.secret_version + 1
    sender = dispatcher(store, clock, allow=("127.0.0.1",))
    await queue(db, event(tenant), clock.now())
    assert await sender.run_due() == 1
    verify(old, ok)
    verify(new, ok)

    clock.advance(timedelta(hours=25))
    await queue(db, event(tenant), clock.now())
    assert await sender.run_due() == 1
    verify(new, ok)
    with pytest.raises(WebhookVerificationError):
        verify(old, ok)


async def test_a_loopback_receiver_without_an_allow_rule_is_refused_before_connecting(
    db, store, receiver
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex}"
    clock = ManualClock(datetime.now(UTC))
    receiver.routes["/nope"] = FlakyReceiver(failures=0, clock=clock)
    sub = await store.create_subscription(
        tenant,
        url=receiver.url("/nope"),
        event_types=["*"],
        description="",
        enabled=True,
        secret=new_secret(),
        now=clock.now(),
    )
    await queue(db, event(tenant), clock.now())
    before = receiver.connections
    assert await dispatcher(store, clock, allow=()).run_due() == 1
    assert receiver.connections == before
    [delivery], _ = await store.list_deliveries(tenant, sub.id, None, "", 10)
    assert delivery.state == "pending"
    assert "loopback" in delivery.attempts[0].error


async def test_events_of_other_types_and_tenants_and_disabled_subscriptions_queue_nothing(
    db, store, receiver
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    await store.create_subscription(
        tenant,
        url=receiver.url("/x"),
        event_types=["memory.*"],
        description="",
        enabled=True,
        secret=new_secret(),
        now=now,
    )
    await store.create_subscription(
        tenant,
        url=receiver.url("/y"),
        event_types=["*"],
        description="",
        enabled=False,
        secret=new_secret(),
        now=now,
    )
    assert await queue(db, event(tenant, "task.task_created"), now) == 0
    assert await queue(db, event(f"other-{tenant}", "memory.memory_stored"), now) == 0
    assert await queue(db, event(tenant, "memory.memory_stored"), now) == 1
