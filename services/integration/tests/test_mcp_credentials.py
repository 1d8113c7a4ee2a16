"""Credentials of MCP servers over real gRPC: an HTTP MCP server started by the test that answers
401 without the right bearer token, a stdio one that says whether its `API_TOKEN` is the expected
one (mcp_guarded_server.py), the integration service on embedded PostgreSQL with the credentials in
the embedded OpenBao. The values must show nowhere but the secret store: not in an answer, the
database, an event or a log line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import hvac
import hvac.exceptions
import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_integration.app import definition
from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc
from mcp.client.stdio import DEFAULT_INHERITED_ENV_VARS

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT_A = testing.tenant_metadata(f"mcpcred-a-{RUN}")
TENANT_B = testing.tenant_metadata(f"mcpcred-b-{RUN}")
PREFIX = f"edrs-test-{RUN}"
SERVER = str(Path(__file__).with_name("mcp_guarded_server.py"))
STDIO = tools_pb2.MCP_TRANSPORT_STDIO
HTTP = tools_pb2.MCP_TRANSPORT_HTTP
# The credentials of this run: each must show nowhere but in the secret store.
BEARER = f"tok-{secrets.token_hex(16)}"
BEARER_NEXT = f"tok-{secrets.token_hex(16)}"  # the guarded server accepts both
API_TOKEN = f"key-{secrets.token_hex(16)}"
MASK = "********"


@pytest.fixture(scope="module")
def guarded_url() -> Iterator[str]:
    """The guarded MCP server over streamable HTTP on 127.0.0.1, in its own process."""
    port = free_port()
    guard = {**os.environ, "GUARD_TOKEN": f"{BEARER},{BEARER_NEXT}"}
    argv = [sys.executable, SERVER, "http", str(port)]
    with testing.listening_process(argv, port, "the HTTP MCP server", env=guard):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
async def integration(
    postgres_engine, redis_engine, nats_engine, openbao_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine,
        redis_engine,
        nats_engine,
        database="test_integration_mcp_credentials",
        redis_db=14,
    )
    async with testing.running_service(
        definition,
        **settings,
        vault_address=openbao_engine.url(),
        vault_token=openbao_engine.root_token,
        vault_path_prefix=PREFIX,
        outbound_allow=("127.0.0.1",),
        mcp_stdio_commands=(sys.executable,),
        mcp_health_interval_seconds=0.5,
        tool_call_timeout_seconds=20.0,
    ) as svc:
        yield svc


@pytest.fixture
def stub(integration: testing.RunningService) -> tools_pb2_grpc.ToolServiceStub:
    return tools_pb2_grpc.ToolServiceStub(integration.channel)


@pytest.fixture(scope="module")
def vault(openbao_engine) -> hvac.Client:
    return hvac.Client(url=openbao_engine.url(), token=openbao_engine.root_token)


def stored_secret(
    vault: hvac.Client, metadata: Any, server_id: str, *, version: bool = False
) -> Any:
    """The server's credentials as the secret store holds them (InvalidPath when absent), with
    their version number when `version`."""
    read = vault.secrets.kv.v2.read_secret_version(
        path=f"{PREFIX}/tenants/{testing.tenant_of(metadata)}/mcp-servers/{server_id}",
        mount_point="secret",
        raise_on_deleted_version=True,
    )
    values = dict(read["data"]["data"])
    return (values, read["data"]["metadata"]["version"]) if version else values


def rotate(stub, server_id: str, metadata=TENANT_A, **credentials: dict[str, str]):
    return stub.UpdateMcpServerCredentials(
        tools_pb2.UpdateMcpServerCredentialsRequest(id=server_id, **credentials),
        metadata=metadata,
    )


def _name() -> str:
    return f"guarded-{uuid.uuid4().hex[:6]}"


def add_http(stub, url: str, headers: dict[str, str], metadata=TENANT_A):
    return stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(name=_name(), transport=HTTP, url=url, headers=headers),
        metadata=metadata,
    )


def add_stdio(stub, env: dict[str, str], metadata=TENANT_A):
    expected = hashlib.sha256(API_TOKEN.encode()).hexdigest()
    return stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name=_name(),
            transport=STDIO,
            command=sys.executable,
            args=[SERVER, "stdio", expected],
            env=env,
        ),
        metadata=metadata,
    )


async def call(stub, name: str, arguments: dict[str, Any], metadata=TENANT_A):
    return await stub.CallTool(
        tools_pb2.CallToolRequest(name=name, arguments=json.dumps(arguments)),
        metadata=metadata,
    )


def db(integration: testing.RunningService) -> Any:
    assert integration.runner.runtime is not None
    return integration.runner.runtime.db


async def drop_session(integration: testing.RunningService, server_id: str) -> None:
    """End the server's session, as a restart would: the next use opens a new one, whose
    credentials are read from the secret store (not from what the add kept in memory)."""
    await integration.servicer("ToolService").registry.connections.drop(server_id)


async def assert_nowhere_but_the_store(
    integration: testing.RunningService, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = await db(integration).fetch("SELECT * FROM mcp_servers")
    assert rows, "the servers' rows are there to scan"
    assert value not in json.dumps([{k: str(v) for k, v in dict(r).items()} for r in rows])
    tools = await db(integration).fetch("SELECT * FROM mcp_tools")
    assert value not in json.dumps([{k: str(v) for k, v in dict(r).items()} for r in tools])
    events = await db(integration).fetch("SELECT * FROM edrs_outbox")
    assert events, "the calls' events are there to scan"
    for event in events:
        assert value not in json.dumps({k: str(v) for k, v in dict(event).items()})
        assert value.encode() not in bytes(event["body"])
    assert caplog.records, "the service's log lines are there to scan"
    for record in caplog.records:
        assert value not in record.getMessage()
    assert value not in caplog.text


async def test_an_http_server_that_needs_a_bearer_token_is_used_with_it_and_shows_it_nowhere(
    integration, stub, guarded_url, vault, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    # Without the header, or with another token, the server answers 401: nothing is stored.
    await testing.expect_rpc_error(
        add_http(stub, guarded_url, {}), grpc.StatusCode.FAILED_PRECONDITION, "cannot be reached"
    )
    await testing.expect_rpc_error(
        add_http(stub, guarded_url, {"Authorization": "Bearer not-the-token"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot be reached",
    )

    server = await add_http(stub, guarded_url, {"Authorization": f"Bearer {BEARER}"})
    assert dict(server.headers) == {"Authorization": MASK}
    assert dict(server.env) == {}
    tools = {t.remote_name: t for t in server.tools}
    assert "secret_report" in tools
    answer = await call(stub, tools["secret_report"].name, {"quarter": "Q3"})
    assert not answer.is_error
    assert answer.content == "Figures for Q3: 42 orders."

    # Answers name the header, never its value.
    fetched = await stub.GetMcpServer(
        tools_pb2.GetMcpServerRequest(id=server.id), metadata=TENANT_A
    )
    assert dict(fetched.headers) == {"Authorization": MASK}
    listed = await stub.ListMcpServers(tools_pb2.ListMcpServersRequest(), metadata=TENANT_A)
    [mine] = [s for s in listed.mcp_servers if s.id == server.id]
    assert dict(mine.headers) == {"Authorization": MASK}
    for reply in (server, fetched, listed, answer):
        assert BEARER not in str(reply)

    # The value is in the secret store, under the tenant's folder; the row keeps the name.
    assert stored_secret(vault, TENANT_A, server.id) == {"header:Authorization": f"Bearer {BEARER}"}
    row = await db(integration).fetchrow(
        "SELECT header_names, env_names, secret_version FROM mcp_servers WHERE id = $1::uuid",
        server.id,
    )
    assert list(row["header_names"]) == ["Authorization"] and list(row["env_names"]) == []
    assert row["secret_version"] == 1

    # A new session (as after a restart) reads the header from the secret store: refresh and
    # calls keep working.
    await drop_session(integration, server.id)
    refreshed = await stub.RefreshMcpServer(
        tools_pb2.RefreshMcpServerRequest(id=server.id), metadata=TENANT_A
    )
    assert refreshed.last_error == ""
    assert {t.remote_name for t in refreshed.tools} == set(tools)
    await drop_session(integration, server.id)
    again = await call(stub, tools["secret_report"].name, {"quarter": "Q4"})
    assert again.content == "Figures for Q4: 42 orders."

    await assert_nowhere_but_the_store(integration, BEARER, caplog)

    # Deleting the server destroys its credentials.
    await stub.DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(id=server.id), metadata=TENANT_A)
    with pytest.raises(hvac.exceptions.InvalidPath):
        stored_secret(vault, TENANT_A, server.id)


async def test_a_stdio_server_gets_its_variables_and_only_the_minimal_environment(
    integration, stub, vault, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await add_stdio(stub, {"API_TOKEN": API_TOKEN})
    assert dict(server.env) == {"API_TOKEN": MASK}
    assert dict(server.headers) == {}
    assert API_TOKEN not in str(server)
    tools = {t.remote_name: t.name for t in server.tools}
    assert (await call(stub, tools["api_token"], {})).content == "API_TOKEN matches"
    names = json.loads((await call(stub, tools["environment_names"], {})).structured)["result"]
    # Its own variable and the minimal environment: none of the service's settings (LC_CTYPE is
    # Python's own: its locale coercion, PEP 538, sets it in a process started in the C locale).
    assert "API_TOKEN" in names
    assert set(names) - {"API_TOKEN", "LC_CTYPE"} <= set(DEFAULT_INHERITED_ENV_VARS)
    assert not [n for n in names if n.startswith(("EDRS_", "VAULT_", "BAO_"))]
    assert stored_secret(vault, TENANT_A, server.id) == {"env:API_TOKEN": API_TOKEN}

    # The restarted process gets it from the secret store.
    await drop_session(integration, server.id)
    assert (await call(stub, tools["api_token"], {})).content == "API_TOKEN matches"

    # A server added without it does not get it.
    bare = await add_stdio(stub, {})
    assert dict(bare.env) == {}
    bare_tool = next(t.name for t in bare.tools if t.remote_name == "api_token")
    assert (await call(stub, bare_tool, {})).content == "API_TOKEN is not set"

    await assert_nowhere_but_the_store(integration, API_TOKEN, caplog)


async def test_another_tenant_can_neither_read_nor_use_nor_delete_them(
    integration, stub, guarded_url, vault
) -> None:
    server = await add_http(stub, guarded_url, {"Authorization": f"Bearer {BEARER}"})
    tool = next(t.name for t in server.tools if t.remote_name == "secret_report")
    await testing.expect_rpc_error(
        stub.GetMcpServer(tools_pb2.GetMcpServerRequest(id=server.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListMcpServers(tools_pb2.ListMcpServersRequest(), metadata=TENANT_B)
    assert server.id not in {s.id for s in listed.mcp_servers}
    await testing.expect_rpc_error(
        call(stub, tool, {"quarter": "Q1"}, metadata=TENANT_B), grpc.StatusCode.NOT_FOUND
    )
    await testing.expect_rpc_error(
        stub.RefreshMcpServer(tools_pb2.RefreshMcpServerRequest(id=server.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    await testing.expect_rpc_error(
        stub.DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(id=server.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    # Nothing of tenant B's touched them: still there, still working for tenant A.
    assert stored_secret(vault, TENANT_A, server.id) == {"header:Authorization": f"Bearer {BEARER}"}
    assert (await call(stub, tool, {"quarter": "Q1"})).content == "Figures for Q1: 42 orders."
    # Tenant B has no secret of that server in its own folder either.
    with pytest.raises(hvac.exceptions.InvalidPath):
        stored_secret(vault, TENANT_B, server.id)


BAD_HEADERS = [
    ({"Bad Name": "x"}, "headers['Bad Name']: a header name is 1..100 characters of an RFC 7230"),
    ({"X-Key:": "x"}, "RFC 7230 token"),
    ({"": "x"}, "RFC 7230 token"),
    ({"Host": "evil.example"}, "headers['Host']: Host is set by the HTTP client"),
    ({"Content-Length": "0"}, "Content-Length is set by the HTTP client for each request"),
    ({"Connection": "close"}, "headers['Connection']: Connection is a hop-by-hop header"),
    ({"transfer-encoding": "chunked"}, "transfer-encoding is a hop-by-hop header"),
    ({"Proxy-Authorization": "Basic eA=="}, "is a hop-by-hop header"),
    ({"Mcp-Session-Id": "s"}, "Mcp-Session-Id is set by the MCP transport"),
    ({"X-Api-Key": "a\r\nX-Injected: 1"}, "headers['X-Api-Key']: the value must be"),
    ({"X-Api-Key": ""}, "headers['X-Api-Key']: the value must be"),
    ({"X-Api-Key": "a", "x-api-key": "b"}, "header names are case-insensitive"),
]
BAD_ENV = [
    ({"api_token": "x"}, "env['api_token']: a variable name is 1..100 characters of A-Z"),
    ({"1TOKEN": "x"}, "not starting with a digit"),
    ({"PATH": "/tmp"}, "env['PATH']: PATH is part of the minimal environment"),
    ({"HOME": "/tmp"}, "HOME is part of the minimal environment"),
    ({"SHELL": "/bin/sh"}, "SHELL is part of the minimal environment"),
    ({"LD_PRELOAD": "/tmp/x.so"}, "env['LD_PRELOAD']: LD_PRELOAD changes what a program loads"),
    ({"PYTHONPATH": "/tmp"}, "PYTHONPATH changes what a program loads"),
    ({"API_TOKEN": "a\x00b"}, "env['API_TOKEN']: the value must be at most"),
]


@pytest.mark.parametrize(("headers", "message"), BAD_HEADERS)
async def test_bad_headers_are_refused_naming_the_header(
    stub, guarded_url, headers, message
) -> None:
    error = await testing.expect_rpc_error(
        add_http(stub, guarded_url, headers), grpc.StatusCode.INVALID_ARGUMENT, message
    )
    for value in headers.values():
        if len(value) > 3:
            assert value not in (error.details() or "")


@pytest.mark.parametrize(("env", "message"), BAD_ENV)
async def test_bad_variables_are_refused_naming_the_variable(stub, env, message) -> None:
    error = await testing.expect_rpc_error(
        add_stdio(stub, env), grpc.StatusCode.INVALID_ARGUMENT, message
    )
    for value in env.values():
        if len(value) > 3:
            assert value not in (error.details() or "")


async def test_credentials_of_the_other_transport_are_refused(stub, guarded_url) -> None:
    await testing.expect_rpc_error(
        stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(
                name=_name(), transport=HTTP, url=guarded_url, env={"API_TOKEN": "x"}
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "env is for stdio servers; an HTTP server gets credentials in headers",
    )
    await testing.expect_rpc_error(
        stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(
                name=_name(),
                transport=STDIO,
                command=sys.executable,
                args=[SERVER, "stdio", "0"],
                headers={"Authorization": "Bearer x"},
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "headers are for HTTP servers; a stdio server gets credentials in env",
    )


async def test_rotation_replaces_the_set_once_it_works_and_keeps_masked_values(
    integration, stub, guarded_url, vault, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await add_http(stub, guarded_url, {"Authorization": f"Bearer {BEARER}"})
    tool = next(t.name for t in server.tools if t.remote_name == "secret_report")
    await stub.UpdateTool(
        tools_pb2.UpdateToolRequest(name=tool, impact=tools_pb2.TOOL_IMPACT_WRITE),
        metadata=TENANT_A,
    )

    # A set the server refuses changes nothing: same version, same session, calls still work.
    await testing.expect_rpc_error(
        rotate(stub, server.id, headers={"Authorization": "Bearer revoked"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot be reached",
    )
    assert stored_secret(vault, TENANT_A, server.id, version=True) == (
        {"header:Authorization": f"Bearer {BEARER}"},
        1,
    )
    assert (await call(stub, tool, {"quarter": "Q1"})).content == "Figures for Q1: 42 orders."

    # The next token: a new version in the store, the tools refreshed (the operator's impact
    # kept), the answer naming the header only.
    rotated = await rotate(
        stub, server.id, headers={"Authorization": f"Bearer {BEARER_NEXT}", "X-Team": "ops"}
    )
    assert dict(rotated.headers) == {"Authorization": MASK, "X-Team": MASK}
    assert BEARER_NEXT not in str(rotated)
    assert {t.name: t.impact for t in rotated.tools}[tool] == tools_pb2.TOOL_IMPACT_WRITE
    assert stored_secret(vault, TENANT_A, server.id, version=True) == (
        {"header:Authorization": f"Bearer {BEARER_NEXT}", "header:X-Team": "ops"},
        2,
    )
    assert (await call(stub, tool, {"quarter": "Q2"})).content == "Figures for Q2: 42 orders."
    await drop_session(integration, server.id)
    assert (await call(stub, tool, {"quarter": "Q3"})).content == "Figures for Q3: 42 orders."

    # "********" keeps the stored value; a name left out is removed.
    kept = await rotate(stub, server.id, headers={"Authorization": MASK})
    assert dict(kept.headers) == {"Authorization": MASK}
    assert stored_secret(vault, TENANT_A, server.id) == {
        "header:Authorization": f"Bearer {BEARER_NEXT}"
    }
    assert (await call(stub, tool, {"quarter": "Q4"})).content == "Figures for Q4: 42 orders."
    await testing.expect_rpc_error(
        rotate(stub, server.id, headers={"X-Other": MASK}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "headers['X-Other']: '********' keeps a stored value, and the server has none",
    )
    await testing.expect_rpc_error(
        rotate(stub, server.id, headers={"Host": "x.example"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Host is set by the HTTP client",
    )
    await testing.expect_rpc_error(
        rotate(stub, server.id, env={"API_TOKEN": "x"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "env is for stdio servers",
    )
    # Another tenant cannot rotate them.
    await testing.expect_rpc_error(
        rotate(stub, server.id, metadata=TENANT_B, headers={"Authorization": "Bearer x"}),
        grpc.StatusCode.NOT_FOUND,
    )
    assert stored_secret(vault, TENANT_A, server.id) == {
        "header:Authorization": f"Bearer {BEARER_NEXT}"
    }
    await assert_nowhere_but_the_store(integration, BEARER_NEXT, caplog)


async def test_a_stdio_servers_variables_are_rotated_and_can_be_removed(
    integration, stub, vault
) -> None:
    server = await add_stdio(stub, {"API_TOKEN": "an-old-token"})
    tool = next(t.name for t in server.tools if t.remote_name == "api_token")
    assert (await call(stub, tool, {})).content == "API_TOKEN differs"
    before = integration.servicer("ToolService").registry.connections.peek(server.id)

    rotated = await rotate(stub, server.id, env={"API_TOKEN": API_TOKEN})
    assert dict(rotated.env) == {"API_TOKEN": MASK}
    # A new process with the new value: the old session was replaced.
    assert integration.servicer("ToolService").registry.connections.peek(server.id) is not (before)
    assert (await call(stub, tool, {})).content == "API_TOKEN matches"

    # No credentials at all: every version is destroyed and the process runs without it.
    emptied = await rotate(stub, server.id)
    assert dict(emptied.env) == {}
    with pytest.raises(hvac.exceptions.InvalidPath):
        stored_secret(vault, TENANT_A, server.id)
    assert (await call(stub, tool, {})).content == "API_TOKEN is not set"
