"""The tool registry over real gRPC: real MCP servers (built with the official SDK, see
mcp_orders_server.py) started by the test over stdio and over streamable HTTP on 127.0.0.1, the
integration service on embedded PostgreSQL, and the knowledge and task services' RPCs as peers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_integration.app import definition
from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT_A = testing.tenant_metadata(f"tools-a-{RUN}")
TENANT_B = testing.tenant_metadata(f"tools-b-{RUN}")
SERVER = str(Path(__file__).with_name("mcp_orders_server.py"))
STDIO = tools_pb2.MCP_TRANSPORT_STDIO
HTTP = tools_pb2.MCP_TRANSPORT_HTTP


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "ledger.txt"
    path.touch()
    return path


@pytest.fixture(scope="module")
def http_server(ledger: Path) -> Iterator[str]:
    """The orders MCP server over streamable HTTP on 127.0.0.1, in its own process."""
    port = free_port()
    argv = [sys.executable, SERVER, "http", str(port), str(ledger)]
    with testing.listening_process(argv, port, "the HTTP MCP server"):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
async def integration(
    postgres_engine, redis_engine, nats_engine, openbao_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_integration_tools", redis_db=7
    )
    async with testing.running_service(
        definition,
        **settings,
        vault_address=openbao_engine.url(),
        vault_token=openbao_engine.root_token,
        # Operator rules: the test's MCP server listens on loopback, and runs from this Python.
        outbound_allow=("127.0.0.1",),
        mcp_stdio_commands=(sys.executable,),
        mcp_health_interval_seconds=0.5,
        tool_call_timeout_seconds=10.0,
    ) as svc:
        yield svc


@pytest.fixture
def stub(integration: testing.RunningService) -> tools_pb2_grpc.ToolServiceStub:
    return tools_pb2_grpc.ToolServiceStub(integration.channel)


def _name() -> str:
    return f"orders-{uuid.uuid4().hex[:6]}"


async def add_stdio(stub, ledger: Path, metadata=TENANT_A, **extra) -> tools_pb2.McpServer:
    return await stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name=_name(),
            transport=STDIO,
            command=sys.executable,
            args=[SERVER, "stdio", str(ledger)],
            **extra,
        ),
        metadata=metadata,
    )


async def call(stub, name: str, arguments: dict, metadata=TENANT_A, **extra):
    return await stub.CallTool(
        tools_pb2.CallToolRequest(name=name, arguments=json.dumps(arguments), **extra),
        metadata=metadata,
    )


def by_remote(server: tools_pb2.McpServer) -> dict[str, tools_pb2.Tool]:
    return {t.remote_name: t for t in server.tools}


async def test_a_stdio_server_lists_its_tools_with_schemas_and_impacts_and_answers_calls(
    stub, ledger
) -> None:
    server = await add_stdio(stub, ledger)
    tools = by_remote(server)
    assert set(tools) >= {"lookup_order", "add_note", "delete_all_records", "wait"}
    lookup = tools["lookup_order"]
    assert lookup.name == f"{server.name}__lookup_order"
    schema = json.loads(lookup.input_schema)
    assert schema["required"] == ["order_id"]
    assert schema["properties"]["order_id"]["type"] == "string"
    assert lookup.impact == tools_pb2.TOOL_IMPACT_READ
    assert tools["add_note"].impact == tools_pb2.TOOL_IMPACT_WRITE
    # No annotation: MCP's defaults say it may destroy, and so does the registry.
    assert tools["delete_all_records"].impact == tools_pb2.TOOL_IMPACT_DESTRUCTIVE

    answer = await call(stub, lookup.name, {"order_id": "A-17"})
    assert answer.content == "Order A-17: shipped 2026-11-30 by Kestrel Freight."
    assert answer.is_error is False
    assert answer.impact == tools_pb2.TOOL_IMPACT_READ

    listed = await stub.ListTools(tools_pb2.ListToolsRequest(), metadata=TENANT_A)
    assert lookup.name in {t.name for t in listed.tools}


async def test_arguments_are_validated_against_the_schema_before_the_tool_runs(
    stub, ledger
) -> None:
    server = await add_stdio(stub, ledger)
    note = by_remote(server)["add_note"].name
    before = ledger.read_text()
    await testing.expect_rpc_error(
        call(stub, note, {"order_id": "A-17"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'note' is a required property",
    )
    await testing.expect_rpc_error(
        call(stub, note, {"order_id": 17, "note": "x"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "arguments['order_id']",
    )
    await testing.expect_rpc_error(
        stub.CallTool(tools_pb2.CallToolRequest(name=note, arguments="[1]"), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be a JSON object",
    )
    assert ledger.read_text() == before
    done = await call(stub, note, {"order_id": "A-17", "note": "call back"})
    assert done.content == "noted"
    assert "add_note A-17 call back" in ledger.read_text()


async def test_a_streamable_http_server_is_called_through_the_outbound_policy(
    stub, ledger, http_server
) -> None:
    server = await stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(name=_name(), transport=HTTP, url=http_server),
        metadata=TENANT_A,
    )
    lookup = by_remote(server)["lookup_order"].name
    answer = await call(stub, lookup, {"order_id": "B-2"})
    assert answer.content == "Order B-2: shipped 2026-11-30 by Kestrel Freight."

    # 127.0.0.2 is loopback too, and no operator rule allows it.
    other = http_server.replace("127.0.0.1", "127.0.0.2")
    await testing.expect_rpc_error(
        stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(name=_name(), transport=HTTP, url=other),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "url",
    )
    await testing.expect_rpc_error(
        stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(
                name=_name(), transport=HTTP, url="http://169.254.169.254/mcp"
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "url",
    )


async def test_an_unreachable_server_is_refused_and_nothing_is_stored(stub) -> None:
    name = _name()
    url = f"http://127.0.0.1:{free_port()}/mcp"
    await testing.expect_rpc_error(
        stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(name=name, transport=HTTP, url=url),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot be reached",
    )
    listed = await stub.ListMcpServers(tools_pb2.ListMcpServersRequest(), metadata=TENANT_A)
    assert name not in {s.name for s in listed.mcp_servers}


async def test_only_commands_the_operator_allows_run_as_stdio_servers(stub) -> None:
    await testing.expect_rpc_error(
        stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(
                name=_name(), transport=STDIO, command="/bin/sh", args=["-c", "id"]
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "EDRS_INTEGRATION_MCP_STDIO_COMMANDS",
    )


async def test_a_call_that_outlasts_its_timeout_fails_and_the_server_keeps_serving(
    stub, ledger
) -> None:
    server = await add_stdio(stub, ledger, call_timeout_seconds=1.0)
    wait = by_remote(server)["wait"].name
    await testing.expect_rpc_error(
        call(stub, wait, {"seconds": 5}),
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "did not answer within 1 s",
    )
    # A shorter limit per call, under the server's.
    await testing.expect_rpc_error(
        call(stub, wait, {"seconds": 5}, timeout_seconds=0.2),
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "within 0.2 s",
    )
    assert (await call(stub, wait, {"seconds": 0})).content == "waited"


async def test_a_stdio_server_that_exits_is_restarted(stub, ledger) -> None:
    server = await add_stdio(stub, ledger)
    tools = by_remote(server)
    first = int((await call(stub, tools["pid"].name, {})).content)
    os.kill(first, signal.SIGKILL)

    async def restarted() -> bool:
        try:
            answer = await call(stub, tools["pid"].name, {})
        except grpc.aio.AioRpcError as exc:
            # While the supervisor notices and restarts it.
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)
            return False
        return int(answer.content) != first

    await testing.wait_until(restarted, 30, "the stdio MCP server to be restarted")


async def test_refresh_keeps_an_operators_impact_override(stub, ledger) -> None:
    server = await add_stdio(stub, ledger)
    note = by_remote(server)["add_note"].name
    updated = await stub.UpdateTool(
        tools_pb2.UpdateToolRequest(name=note, impact=tools_pb2.TOOL_IMPACT_DESTRUCTIVE),
        metadata=TENANT_A,
    )
    assert updated.impact == tools_pb2.TOOL_IMPACT_DESTRUCTIVE
    refreshed = await stub.RefreshMcpServer(
        tools_pb2.RefreshMcpServerRequest(id=server.id), metadata=TENANT_A
    )
    assert by_remote(refreshed)["add_note"].impact == tools_pb2.TOOL_IMPACT_DESTRUCTIVE
    await testing.expect_rpc_error(
        stub.UpdateTool(
            tools_pb2.UpdateToolRequest(name="create_task", impact=tools_pb2.TOOL_IMPACT_READ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "fixed",
    )


async def test_builtins_are_listed_and_those_without_their_service_say_why(stub) -> None:
    listed = await stub.ListTools(
        tools_pb2.ListToolsRequest(names=["knowledge_search", "create_task", "http_request"]),
        metadata=TENANT_A,
    )
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"knowledge_search", "create_task", "http_request"}
    assert tools["knowledge_search"].impact == tools_pb2.TOOL_IMPACT_READ
    assert tools["create_task"].impact == tools_pb2.TOOL_IMPACT_WRITE
    # This service runs without peers; requests through connectors are wired
    # (edrs_integration.connector_calls, tested in test_connector_calls.py).
    assert not tools["knowledge_search"].available
    assert "EDRS_INTEGRATION_PEERS" in tools["knowledge_search"].unavailable_reason
    assert tools["http_request"].available, tools["http_request"].unavailable_reason
    await testing.expect_rpc_error(
        call(stub, "knowledge_search", {"query": "refunds"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "unavailable",
    )


async def test_tenants_see_and_call_only_their_own_servers_and_tools(stub, ledger) -> None:
    server = await add_stdio(stub, ledger)
    lookup = by_remote(server)["lookup_order"].name
    await testing.expect_rpc_error(
        stub.GetMcpServer(tools_pb2.GetMcpServerRequest(id=server.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    await testing.expect_rpc_error(
        call(stub, lookup, {"order_id": "A-1"}, metadata=TENANT_B), grpc.StatusCode.NOT_FOUND
    )
    await testing.expect_rpc_error(
        stub.GetTool(tools_pb2.GetToolRequest(id=lookup), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    await testing.expect_rpc_error(
        stub.UpdateTool(
            tools_pb2.UpdateToolRequest(name=lookup, impact=tools_pb2.TOOL_IMPACT_WRITE),
            metadata=TENANT_B,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await testing.expect_rpc_error(
        stub.RefreshMcpServer(tools_pb2.RefreshMcpServerRequest(id=server.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    await testing.expect_rpc_error(
        stub.DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(id=server.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    names_b = {
        t.name
        for t in (await stub.ListTools(tools_pb2.ListToolsRequest(), metadata=TENANT_B)).tools
    }
    assert lookup not in names_b
    servers_b = await stub.ListMcpServers(tools_pb2.ListMcpServersRequest(), metadata=TENANT_B)
    assert server.id not in {s.id for s in servers_b.mcp_servers}
    # The same name is free in another tenant.
    same = await stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name=server.name,
            transport=STDIO,
            command=sys.executable,
            args=[SERVER, "stdio", str(ledger)],
        ),
        metadata=TENANT_B,
    )
    assert same.id != server.id
    await testing.expect_refused_without_tenant(
        stub.ListTools(tools_pb2.ListToolsRequest()),
        stub.CallTool(tools_pb2.CallToolRequest(name=lookup)),
    )


async def test_delete_removes_the_server_and_its_tools(stub, ledger) -> None:
    server = await add_stdio(stub, ledger)
    lookup = by_remote(server)["lookup_order"].name
    deleted = await stub.DeleteMcpServer(
        tools_pb2.DeleteMcpServerRequest(id=server.id), metadata=TENANT_A
    )
    assert deleted.tools_deleted == len(server.tools)
    await testing.expect_rpc_error(
        call(stub, lookup, {"order_id": "A-1"}), grpc.StatusCode.NOT_FOUND
    )


async def test_a_call_with_an_idempotency_key_runs_once_and_repeats_replay_its_result(
    stub, ledger
) -> None:
    server = await add_stdio(stub, ledger)
    note = by_remote(server)["add_note"].name
    key = f"approval:{uuid.uuid4()}"
    text = f"once {uuid.uuid4().hex[:6]}"
    arguments = {"order_id": "K-1", "note": text}
    first = await call(stub, note, arguments, idempotency_key=key)
    # Concurrent repeats and a later one: none runs the tool; each answers the first result.
    again = await asyncio.gather(
        *(call(stub, note, arguments, idempotency_key=key) for _ in range(5))
    )
    assert first.content == "noted" and not first.is_error
    assert [a.content for a in again] == ["noted"] * 5
    assert {a.impact for a in again} == {tools_pb2.TOOL_IMPACT_WRITE}
    assert ledger.read_text().count(f"add_note K-1 {text}") == 1

    # The same key for other arguments or another tool is refused, and nothing runs.
    await testing.expect_rpc_error(
        call(stub, note, {"order_id": "K-1", "note": "other"}, idempotency_key=key),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already used for another call (other arguments)",
    )
    await testing.expect_rpc_error(
        call(
            stub, by_remote(server)["lookup_order"].name, {"order_id": "K-1"}, idempotency_key=key
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already used for another call (tool",
    )
    assert "add_note K-1 other" not in ledger.read_text()
    # Without a key every call runs.
    await call(stub, note, arguments)
    assert ledger.read_text().count(f"add_note K-1 {text}") == 2


async def test_an_idempotency_key_belongs_to_its_tenant_and_a_first_error_is_replayed(
    stub, ledger
) -> None:
    a, b = await add_stdio(stub, ledger), await add_stdio(stub, ledger, metadata=TENANT_B)
    key = f"approval:{uuid.uuid4()}"
    text = f"tenant {uuid.uuid4().hex[:6]}"
    await call(
        stub, by_remote(a)["add_note"].name, {"order_id": "T-1", "note": text}, idempotency_key=key
    )
    # The same key in tenant B is B's own: its call runs.
    done = await call(
        stub,
        by_remote(b)["add_note"].name,
        {"order_id": "T-1", "note": text},
        metadata=TENANT_B,
        idempotency_key=key,
    )
    assert done.content == "noted"
    assert ledger.read_text().count(f"add_note T-1 {text}") == 2

    # A first call that failed (its timeout) answers the same failure, without running again.
    slow = await add_stdio(stub, ledger, call_timeout_seconds=1.0)
    wait = by_remote(slow)["wait"].name
    failing = f"wait:{uuid.uuid4()}"
    for _ in range(2):
        await testing.expect_rpc_error(
            call(stub, wait, {"seconds": 5}, idempotency_key=failing),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "did not answer within 1 s",
        )
    await testing.expect_rpc_error(
        call(stub, wait, {"seconds": 0}, idempotency_key="x" * 201),
        grpc.StatusCode.INVALID_ARGUMENT,
        "idempotency_key is 201 characters long",
    )
