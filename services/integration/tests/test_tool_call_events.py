"""`integration.tool_called` and the retention of keyed tool calls, over real gRPC: the orders MCP
server (mcp_orders_server.py) over stdio, the integration service on embedded PostgreSQL and NATS,
its outbox relayed to the bus.

- One event per call that ran (a keyed call's first run included), none for a replay or a call
  refused before it runs; never the arguments nor the result.
- The sweep deletes keyed calls finished longer ago than the retention, in batches, and never one
  still running; a repeat of an expired key runs the tool again."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from edrs_core import testing
from edrs_events import connect_bus
from edrs_integration.app import definition
from edrs_integration.store.postgres_tools import TOOL_CALLED, PostgresToolStore
from edrs_integration.tools.retention import run_sweeper, sweep_keyed_calls
from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT = f"toolev-{RUN}"
CALLER = f"user:ana-{RUN}"
META = testing.tenant_metadata(TENANT, subject=CALLER)
SERVER = str(Path(__file__).with_name("mcp_orders_server.py"))
RETENTION_HOURS = 168


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "ledger.txt"
    path.touch()
    return path


@pytest.fixture(scope="module")
async def integration(
    postgres_engine, redis_engine, nats_engine, openbao_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine,
        redis_engine,
        nats_engine,
        database="test_integration_tool_events",
        redis_db=12,
    )
    async with testing.running_service(
        definition,
        **settings,
        vault_address=openbao_engine.url(),
        vault_token=openbao_engine.root_token,
        mcp_stdio_commands=(sys.executable,),
        tool_call_timeout_seconds=10.0,
        tool_call_key_retention_hours=RETENTION_HOURS,
        # The service's own sweeper runs at start-up, then not again during these tests: they
        # sweep themselves, so that what they count is theirs.
        tool_call_key_sweep_interval_seconds=86_400.0,
    ) as svc:
        yield svc


@pytest.fixture
def stub(integration: testing.RunningService) -> tools_pb2_grpc.ToolServiceStub:
    return tools_pb2_grpc.ToolServiceStub(integration.channel)


def db(integration: testing.RunningService) -> Any:
    assert integration.runner.runtime is not None
    return integration.runner.runtime.db


def tool_store(integration: testing.RunningService) -> PostgresToolStore:
    """The service's own tool store (the one its sweeper and its calls use)."""
    store = integration.servicer("ToolService").registry.store
    assert isinstance(store, PostgresToolStore)
    return store


async def add_server(stub, ledger: Path, **extra: Any) -> dict[str, str]:
    server = await stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name=f"orders-{uuid.uuid4().hex[:6]}",
            transport=tools_pb2.MCP_TRANSPORT_STDIO,
            command=sys.executable,
            args=[SERVER, "stdio", str(ledger)],
            **extra,
        ),
        metadata=META,
    )
    names = {t.remote_name: t.name for t in server.tools}
    names["server_id"] = server.id
    return names


async def call(stub, name: str, arguments: dict[str, Any], **extra: Any):
    return await stub.CallTool(
        tools_pb2.CallToolRequest(name=name, arguments=json.dumps(arguments), **extra),
        metadata=META,
    )


async def outbox_bodies(integration: testing.RunningService, tool: str) -> list[str]:
    """The raw bodies of every tool_called event about `tool` in the outbox, sent or not."""
    rows = await db(integration).fetch(
        "SELECT body FROM edrs_outbox WHERE event_type = $1 AND aggregate_id = $2 ORDER BY position",
        TOOL_CALLED,
        tool,
    )
    return [bytes(r["body"]).decode() for r in rows]


async def test_each_call_that_ran_publishes_one_event_without_arguments_or_result(
    integration, stub, ledger
) -> None:
    server = await add_server(stub, ledger)
    note = server["add_note"]
    secret_note = f"card 4111-1111-1111-{RUN[:4]} for {uuid.uuid4().hex}"
    answer = await call(stub, note, {"order_id": "E-1", "note": secret_note})
    assert answer.content == "noted"

    [event] = await testing.published_events(integration, TOOL_CALLED, note)
    assert event["client_id"] == TENANT
    assert event["source_container"] == "integration"
    payload = event["payload"]
    assert payload["name"] == note
    assert payload["source"] == "mcp"
    assert payload["server_id"] == server["server_id"]
    assert payload["impact"] == "write"
    assert payload["outcome"] == "completed" and payload["is_error"] is False
    assert payload["caller"] == CALLER
    assert payload["duration_ms"] >= 0
    assert "idempotency_key" not in payload and "error_code" not in payload
    # Neither the arguments nor the result, anywhere in the event.
    [body] = await outbox_bodies(integration, note)
    for leaked in (secret_note, "E-1", "noted", "order_id", "arguments", "content"):
        assert leaked not in body, leaked

    # A call refused before it runs publishes nothing.
    await testing.expect_rpc_error(
        call(stub, note, {"order_id": 17, "note": "x"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "do not match the schema",
    )
    assert len(await outbox_bodies(integration, note)) == 1


async def test_a_keyed_call_publishes_on_its_first_run_and_not_on_replays(
    integration, stub, ledger
) -> None:
    server = await add_server(stub, ledger)
    note = server["add_note"]
    key = f"approval:{uuid.uuid4()}"
    arguments = {"order_id": "K-2", "note": f"once {RUN}"}
    await call(stub, note, arguments, idempotency_key=key)
    replays = await asyncio.gather(
        *(call(stub, note, arguments, idempotency_key=key) for _ in range(4))
    )
    assert [r.content for r in replays] == ["noted"] * 4
    assert ledger.read_text().count(f"add_note K-2 once {RUN}") == 1

    # Each replay answered after its (absent) event would have been committed: one event only.
    [event] = await testing.published_events(integration, TOOL_CALLED, note)
    assert event["payload"]["idempotency_key"] == key
    assert event["payload"]["outcome"] == "completed"
    assert len(await outbox_bodies(integration, note)) == 1
    # The event commits with the keyed call's outcome.
    state = await db(integration).fetchval(
        "SELECT state FROM keyed_tool_calls WHERE client_id = $1 AND idempotency_key = $2",
        TENANT,
        key,
    )
    assert state == "done"


async def test_a_timed_out_call_publishes_timed_out_once_and_its_replay_nothing(
    integration, stub, ledger
) -> None:
    server = await add_server(stub, ledger, call_timeout_seconds=1.0)
    wait = server["wait"]
    key = f"wait:{uuid.uuid4()}"
    for _ in range(2):  # the first runs and times out; the second replays the error
        await testing.expect_rpc_error(
            call(stub, wait, {"seconds": 5}, idempotency_key=key),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "did not answer within 1 s",
        )
    [event] = await testing.published_events(integration, TOOL_CALLED, wait)
    payload = event["payload"]
    assert payload["outcome"] == "timed_out"
    assert payload["error_code"] == "DEADLINE_EXCEEDED"
    assert payload["impact"] == "read" and payload["idempotency_key"] == key
    # The error message is not carried either.
    [body] = await outbox_bodies(integration, wait)
    assert "did not answer" not in body


async def _insert(
    integration,
    key: str,
    state: str,
    *,
    finished_hours_ago: float | None,
    stale_in_hours: float,
    created_hours_ago: float = 400.0,
) -> None:
    await db(integration).execute(
        """INSERT INTO keyed_tool_calls
               (client_id, idempotency_key, name, arguments_sha256, state, stale_at, created_at,
                finished_at)
           VALUES ($1, $2, 'orders__add_note', 'digest', $3,
                   now() + make_interval(secs => $4), now() - make_interval(secs => $5),
                   CASE WHEN $6::float8 IS NULL THEN NULL
                        ELSE now() - make_interval(secs => $6::float8) END)""",
        TENANT,
        key,
        state,
        float(stale_in_hours * 3600),
        float(created_hours_ago * 3600),
        None if finished_hours_ago is None else float(finished_hours_ago * 3600),
    )


async def _keys_left(integration, prefix: str) -> set[str]:
    rows = await db(integration).fetch(
        "SELECT idempotency_key FROM keyed_tool_calls WHERE client_id = $1 "
        "AND idempotency_key LIKE $2",
        TENANT,
        prefix + "%",
    )
    return {r["idempotency_key"] for r in rows}


async def test_the_sweep_deletes_only_expired_finished_calls_in_bounded_batches(
    integration,
) -> None:
    store = tool_store(integration)
    await sweep_keyed_calls(store, RETENTION_HOURS)  # what expired before this test is gone
    p = f"sweep-{uuid.uuid4().hex[:6]}-"
    over = RETENTION_HOURS + 30
    # Expired: finished (done or failed) longer ago than the retention; a claim lost that long.
    await _insert(
        integration, p + "done-old", "done", finished_hours_ago=over, stale_in_hours=-over
    )
    await _insert(
        integration, p + "failed-old", "failed", finished_hours_ago=over, stale_in_hours=-over
    )
    await _insert(
        integration, p + "lost-old", "running", finished_hours_ago=None, stale_in_hours=-over
    )
    # Kept: finished within the retention; running (however old its start) and not yet stale;
    # a lost claim whose stale time is within the retention.
    await _insert(
        integration,
        p + "done-new",
        "done",
        finished_hours_ago=RETENTION_HOURS - 1,
        stale_in_hours=-over,
    )
    await _insert(
        integration,
        p + "running",
        "running",
        finished_hours_ago=None,
        stale_in_hours=1,
        created_hours_ago=over * 2,
    )
    await _insert(
        integration,
        p + "lost-new",
        "running",
        finished_hours_ago=None,
        stale_in_hours=-(RETENTION_HOURS - 1),
    )

    # One batch deletes at most its size (three rows at least are due).
    assert await store.sweep_calls(RETENTION_HOURS, 2) == 2
    assert len(await _keys_left(integration, p)) == 4
    # The whole sweep takes the rest, a batch at a time.
    assert await sweep_keyed_calls(store, RETENTION_HOURS, batch=2) >= 1
    assert await _keys_left(integration, p) == {p + "done-new", p + "running", p + "lost-new"}
    assert await sweep_keyed_calls(store, RETENTION_HOURS, batch=2) == 0


async def test_the_periodic_sweeper_deletes_expired_calls(integration) -> None:
    p = f"periodic-{uuid.uuid4().hex[:6]}-"
    over = RETENTION_HOURS + 1
    await _insert(integration, p + "old", "done", finished_hours_ago=over, stale_in_hours=-over)
    await _insert(integration, p + "new", "failed", finished_hours_ago=1, stale_in_hours=-1)
    store = tool_store(integration)
    sweeper = asyncio.create_task(run_sweeper(store, RETENTION_HOURS, 0.2))
    try:

        async def swept() -> bool:
            return await _keys_left(integration, p) == {p + "new"}

        await testing.wait_until(swept, 30, "the sweeper to delete the expired call")
    finally:
        sweeper.cancel()


async def test_a_repeat_of_an_expired_key_runs_the_tool_again(integration, stub, ledger) -> None:
    server = await add_server(stub, ledger)
    note = server["add_note"]
    key = f"expiring:{uuid.uuid4()}"
    arguments = {"order_id": "X-1", "note": f"again {RUN}"}
    await call(stub, note, arguments, idempotency_key=key)
    await call(stub, note, arguments, idempotency_key=key)  # replayed
    assert ledger.read_text().count(f"add_note X-1 again {RUN}") == 1
    # Time passes: the call finished longer ago than the retention, and the sweep deletes it.
    await db(integration).execute(
        """UPDATE keyed_tool_calls SET finished_at = now() - make_interval(hours => $3)
           WHERE client_id = $1 AND idempotency_key = $2""",
        TENANT,
        key,
        RETENTION_HOURS + 1,
    )
    store = tool_store(integration)
    await sweep_keyed_calls(store, RETENTION_HOURS)
    assert await _keys_left(integration, key) == set()
    # The repeat is a new first call: the tool runs, and publishes its own event.
    await call(stub, note, arguments, idempotency_key=key)
    assert ledger.read_text().count(f"add_note X-1 again {RUN}") == 2
    events = await testing.published_events(integration, TOOL_CALLED, note)
    assert [e["payload"]["idempotency_key"] for e in events] == [key, key]
    assert events[0]["event_id"] != events[1]["event_id"]


async def test_on_the_bus_a_keyed_call_is_one_event_and_a_failed_call_says_failed(
    integration, stub, ledger, nats_engine
) -> None:
    server = await add_server(stub, ledger)
    note, crash = server["add_note"], server["crash"]
    key = f"bus:{uuid.uuid4()}"
    arguments = {"order_id": "B-1", "note": f"bus {RUN}"}
    for _ in range(3):  # one run, two replays
        await call(stub, note, arguments, idempotency_key=key)
    # A tool whose server dies during the call: it ran, and failed.
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call(stub, crash, {})
    # The relay publishes in outbox order: once the crash's event is on the bus, every event of
    # the calls before it is there too.
    seen: list[Any] = []
    bus = await connect_bus(nats_engine.url())
    try:

        async def read() -> None:
            async for event in bus.tail(TOOL_CALLED, client_id=TENANT, from_start=True):
                if event.payload["name"] in (note, crash):
                    seen.append(event)
                if event.payload["name"] == crash:
                    return

        await asyncio.wait_for(read(), timeout=60)
    finally:
        await bus.close()
    [keyed] = [e for e in seen if e.payload["name"] == note]
    assert keyed.payload["idempotency_key"] == key and keyed.payload["outcome"] == "completed"
    assert keyed.client_id == TENANT
    [crashed] = [e for e in seen if e.payload["name"] == crash]
    assert crashed.payload["outcome"] == "failed"
    assert crashed.payload["error_code"] == failed.value.code().name
    assert f"bus {RUN}" not in json.dumps([e.payload for e in seen])
