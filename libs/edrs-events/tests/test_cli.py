"""The `edrs events` commands against a real NATS JetStream server, through typer's CliRunner."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import nats
import pytest
import uuid6
from edrs_events import BaseEvent, ConsumerOptions
from edrs_events.cli import app
from edrs_events.nats_bus import NatsBus
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture
def bus_args(nats_url: str, namespace: str) -> Iterator[list[str]]:
    yield ["--nats-url", nats_url, "--namespace", namespace]

    async def drop_streams() -> None:
        bus = await NatsBus.connect(nats_url, namespace=namespace)
        await bus.js.delete_stream(bus.subjects.events_stream)
        await bus.js.delete_stream(bus.subjects.dlq_stream)
        await bus.close()

    asyncio.run(drop_streams())


def publish(bus_args: list[str], *args: str) -> str:
    result = runner.invoke(app, ["publish", *args, *bus_args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_publish_then_tail_filters_by_tenant_and_priority(bus_args: list[str]) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:6]}"
    payload = json.dumps({"task_id": "t1", "title": "from the CLI"})
    low_id = publish(
        bus_args,
        "task.task_created",
        "--payload",
        payload,
        "--client-id",
        tenant,
        "--priority",
        "low",
    )
    critical_id = publish(
        bus_args,
        "task.task_created",
        "--payload",
        payload,
        "--client-id",
        tenant,
        "--priority",
        "critical",
    )
    publish(bus_args, "task.task_created", "--payload", payload, "--client-id", "someone-else")

    result = runner.invoke(
        app,
        [
            "tail",
            "task.*",
            "--client-id",
            tenant,
            "--from-start",
            "--limit",
            "2",
            "--json",
            *bus_args,
        ],
    )
    assert result.exit_code == 0, result.output
    events = [BaseEvent.from_json(line) for line in result.stdout.splitlines()]
    assert {str(e.event_id) for e in events} == {low_id, critical_id}
    assert {e.client_id for e in events} == {tenant}

    result = runner.invoke(
        app,
        [
            "tail",
            "--type",
            "task.task_created",
            "--priority",
            "critical",
            "--client-id",
            tenant,
            "--from-start",
            "--limit",
            "1",
            *bus_args,
        ],
    )
    assert result.exit_code == 0, result.output
    assert critical_id in result.stdout and "critical" in result.stdout
    assert low_id not in result.stdout


def test_tail_shows_a_raw_publishers_events_to_their_tenant_past_malformed_ones(
    bus_args: list[str], nats_url: str, namespace: str
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:6]}"
    subject = f"{namespace}.events.normal.task.task_created"

    def envelope(client_id: str, task_id: str) -> bytes:
        # Written by hand, as docs/events.md tells publishers in other languages to.
        return json.dumps(
            {
                "event_id": str(uuid6.uuid7()),
                "event_type": "task.task_created",
                "source_container": "erp",
                "client_id": client_id,
                "payload": {"task_id": task_id, "title": "raw"},
            }
        ).encode()

    async def publish_raw() -> None:
        await (await NatsBus.connect(nats_url, namespace=namespace)).close()  # the fleet's streams
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for body, headers in [
            (envelope(tenant, "first"), {}),
            (b"\xff not json", {}),
            (envelope("someone-else", "smuggled"), {"edrs-client-id": tenant}),
            (envelope(tenant, "second"), {}),
        ]:
            await js.publish(subject, body, headers={"Nats-Msg-Id": uuid.uuid4().hex, **headers})
        await nc.close()

    asyncio.run(publish_raw())
    result = runner.invoke(
        app,
        # --bus-url is the option's name now; the other tests use its old name, --nats-url.
        [
            *("tail", "--client-id", tenant, "--from-start", "--limit", "2", "--json"),
            *("--bus-url", nats_url, "--namespace", namespace),
        ],
    )
    assert result.exit_code == 0, result.output
    events = [BaseEvent.from_json(line) for line in result.stdout.splitlines()]
    assert [e.payload["task_id"] for e in events] == ["first", "second"]


def test_publish_refuses_an_invalid_payload_naming_the_field(bus_args: list[str]) -> None:
    result = runner.invoke(
        app, ["publish", "task.task_created", "--payload", '{"task_id": "t1"}', *bus_args]
    )
    assert result.exit_code == 2
    assert "payload.title" in result.stderr
    result = runner.invoke(app, ["publish", "task.nope", "--payload", "{}", *bus_args])
    assert result.exit_code == 2
    assert "unknown event type" in result.stderr


def test_publish_to_an_unreachable_bus_fails_clearly() -> None:
    result = runner.invoke(
        app,
        [
            "publish",
            "task.task_created",
            "--payload",
            '{"task_id": "t", "title": "x"}',
            "--nats-url",
            "nats://127.0.0.1:1",
        ],
    )
    assert result.exit_code == 3
    assert "cannot reach the bus at nats://127.0.0.1:1" in result.stderr


def make_dead_letter(nats_url: str, namespace: str, consumer: str, event_type: str) -> str:
    """Run a consumer that always fails until its event is dead-lettered; returns the event id."""

    async def run() -> str:
        bus = await NatsBus.connect(nats_url, namespace=namespace)

        async def refuse(event: BaseEvent) -> None:
            raise RuntimeError("downstream rejected it")

        await bus.subscribe(
            consumer, refuse, event_types=[event_type], options=ConsumerOptions(max_deliver=1)
        )
        # Fits both types these tests dead-letter (extra fields are allowed).
        payload = {"task_id": "dead", "title": "x", "persona_id": "p-dead"}
        event = BaseEvent(event_type=event_type, source_container="test", payload=payload)
        await bus.publish(event)
        deadline = asyncio.get_running_loop().time() + 10
        while not await bus.dead_letters(consumer=consumer):
            assert asyncio.get_running_loop().time() < deadline, "no dead letter appeared"
            await asyncio.sleep(0.05)
        await bus.close()
        return str(event.event_id)

    return asyncio.run(run())


def test_dlq_list_and_replay(bus_args: list[str], nats_url: str, namespace: str) -> None:
    event_id = make_dead_letter(nats_url, namespace, "cli-victim", "task.task_created")
    result = runner.invoke(app, ["dlq", "list", *bus_args])
    assert result.exit_code == 0, result.output
    [header, row] = result.stdout.splitlines()
    assert header.startswith("ID\tCONSUMER")
    dlq_id, consumer, event_type, listed_id, deliveries, _, reason = row.split("\t")
    assert (consumer, event_type, listed_id, deliveries) == (
        "cli-victim",
        "task.task_created",
        event_id,
        "1",
    )
    assert "downstream rejected it" in reason

    result = runner.invoke(app, ["dlq", "replay", dlq_id, *bus_args])
    assert result.exit_code == 0, result.output
    assert f"replayed {dlq_id}" in result.stdout
    result = runner.invoke(app, ["dlq", "list", *bus_args])
    assert result.stdout.splitlines()[1:] == []
    result = runner.invoke(app, ["dlq", "replay", dlq_id, *bus_args])
    assert result.exit_code == 1 and "not found" in result.stderr

    # Another consumer and type: the replayed event above goes back to cli-victim, not here.
    make_dead_letter(nats_url, namespace, "cli-victim2", "persona.persona_archived")
    result = runner.invoke(app, ["dlq", "replay", "--all", "--consumer", "cli-victim2", *bus_args])
    assert result.exit_code == 0 and "1 replayed" in result.stderr
    result = runner.invoke(app, ["dlq", "replay", *bus_args])
    assert result.exit_code == 2 and "either a dead letter ID or --all" in result.stderr
