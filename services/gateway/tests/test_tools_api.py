"""`/api/v1/tools`, `/api/v1/mcp-servers`, a persona's tool calls over SSE, and `/api/v1/mcp` (EDRS
as an MCP server, driven by the official SDK's client) through the real gateway, persona, memory,
reasoning and integration services, with a real MCP server (stdio) started by the test: roles,
validation as problem+json, and tenant B seeing none of tenant A's servers or tools."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import httpx2
import pytest
from edrs_core.engines.ports import free_port
from edrs_core.testing import HTTP_TIMEOUT, engine_settings, running_service, wait_until
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_integration.app import definition as integration_definition
from edrs_memory.app import definition as memory_definition
from edrs_persona.app import definition as persona_definition
from edrs_reasoning.app import definition as reasoning_definition
from edrs_task.app import definition as task_definition
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .conftest import GATEWAY_REDIS_DB, KEY_SECRET, SERVICES_REDIS_DB, ConversationFleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MCP_SERVER = Path(__file__).resolve().parents[2] / "integration/tests/mcp_orders_server.py"
GUARDED_SERVER = Path(__file__).resolve().parents[2] / "integration/tests/mcp_guarded_server.py"


@pytest.fixture(scope="module")
async def fleet(
    postgres_engine, redis_engine, nats_engine, openbao_engine, temporal_engine
) -> AsyncIterator[ConversationFleet]:
    def engines(service: str, redis_db: int = SERVICES_REDIS_DB) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_gateway_tools_{service}",
            redis_db=redis_db,
        )

    async with contextlib.AsyncExitStack() as stack:
        reasoning = await stack.enter_async_context(
            running_service(
                reasoning_definition,
                start_timeout=180.0,
                max_output_tokens=128,
                default_max_tokens=32,
                **engines("reasoning"),
            )
        )
        memory = await stack.enter_async_context(
            running_service(
                memory_definition, peers={"reasoning": reasoning.grpc_address}, **engines("memory")
            )
        )
        integration = await stack.enter_async_context(
            running_service(
                integration_definition,
                vault_address=openbao_engine.url(),
                vault_token=openbao_engine.root_token,
                mcp_stdio_commands=(sys.executable,),
                **engines("integration"),
            )
        )
        # Held tool calls become the task service's approvals; persona and task are each other's
        # peers, so the task service's port is chosen first.
        task_port = free_port()
        persona = await stack.enter_async_context(
            running_service(
                persona_definition,
                peers={
                    "memory": memory.grpc_address,
                    "reasoning": reasoning.grpc_address,
                    "integration": integration.grpc_address,
                    "task": f"127.0.0.1:{task_port}",
                },
                **engines("persona"),
            )
        )
        task = await stack.enter_async_context(
            running_service(
                task_definition,
                grpc_port=task_port,
                peers={"persona": persona.grpc_address},
                temporal_address=temporal_engine.url(),
                **engines("task"),
            )
        )
        gateway = await stack.enter_async_context(
            running_service(
                gateway_definition,
                peers={
                    "persona": persona.grpc_address,
                    "memory": memory.grpc_address,
                    "reasoning": reasoning.grpc_address,
                    "integration": integration.grpc_address,
                    "task": task.grpc_address,
                },
                key_encryption_secret=KEY_SECRET,
                **engines("gateway", GATEWAY_REDIS_DB),
            )
        )
        rt = gateway.runner.runtime
        assert rt is not None
        yield ConversationFleet(
            gateway, GatewayContext.build(rt.settings, rt), redis_engine.url(SERVICES_REDIS_DB)
        )


@pytest.fixture(scope="module")
async def tenant_a(fleet) -> dict[str, object]:
    tenant = await fleet.new_tenant()
    return {
        "id": tenant,
        "admin": await fleet.login(tenant, "admin"),
        "member": await fleet.login(tenant, "member"),
    }


@pytest.fixture(scope="module")
async def tenant_b(fleet) -> dict[str, object]:
    tenant = await fleet.new_tenant()
    return {"id": tenant, "admin": await fleet.login(tenant, "admin")}


@pytest.fixture
async def client(fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gateway-tools") / "ledger.txt"
    path.touch()
    return path


async def add_server(client, headers, ledger: Path, name: str | None = None) -> dict:
    reply = await client.post(
        "/api/v1/mcp-servers",
        json={
            "name": name or f"orders-{uuid.uuid4().hex[:6]}",
            "transport": "stdio",
            "command": sys.executable,
            "args": [str(MCP_SERVER), "stdio", str(ledger)],
        },
        headers=headers,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


async def test_an_admin_adds_an_mcp_server_and_its_tools_are_listed_and_called(
    client, tenant_a, ledger
) -> None:
    server = await add_server(client, tenant_a["admin"], ledger)
    tools = {t["remoteName"]: t for t in server["tools"]}
    lookup = tools["lookup_order"]
    assert lookup["name"] == f"{server['name']}__lookup_order"
    assert lookup["impact"] == "read" and lookup["source"] == "mcp"
    assert lookup["inputSchema"]["required"] == ["order_id"]
    assert tools["delete_all_records"]["impact"] == "destructive"

    listed = await client.get("/api/v1/tools", headers=tenant_a["member"])
    assert listed.status_code == 200
    by_name = {t["name"]: t for t in listed.json()["tools"]}
    assert lookup["name"] in by_name
    assert by_name["create_task"]["source"] == "builtin"
    # This fleet has no task service: listed, unavailable, saying why.
    assert not by_name["create_task"]["available"]
    assert "task" in by_name["create_task"]["unavailableReason"]

    called = await client.post(
        f"/api/v1/tools/{lookup['name']}/calls",
        json={"arguments": {"order_id": "A-17"}},
        headers=tenant_a["admin"],
    )
    assert called.status_code == 200, called.text
    assert called.json()["content"] == "Order A-17: shipped 2026-11-30 by Kestrel Freight."
    bad = await client.post(
        f"/api/v1/tools/{lookup['name']}/calls",
        json={"arguments": {"order_id": 17}},
        headers=tenant_a["admin"],
    )
    assert bad.status_code == 422
    assert "order_id" in bad.json()["detail"]

    changed = await client.patch(
        f"/api/v1/tools/{tools['add_note']['name']}",
        json={"impact": "destructive"},
        headers=tenant_a["admin"],
    )
    assert changed.json()["impact"] == "destructive"
    refreshed = await client.post(
        f"/api/v1/mcp-servers/{server['id']}/refresh", headers=tenant_a["admin"]
    )
    assert {t["remoteName"]: t["impact"] for t in refreshed.json()["tools"]}["add_note"] == (
        "destructive"
    )


async def test_members_read_tools_but_neither_add_servers_nor_call_tools(
    client, tenant_a, ledger
) -> None:
    member = tenant_a["member"]
    refused = await client.post(
        "/api/v1/mcp-servers",
        json={"name": "mine", "transport": "http", "url": "https://tools.example.com/mcp"},
        headers=member,
    )
    assert refused.status_code == 403
    server = await add_server(client, tenant_a["admin"], ledger)
    name = server["tools"][0]["name"]
    call = await client.post(f"/api/v1/tools/{name}/calls", json={}, headers=member)
    assert call.status_code == 403
    assert (await client.get("/api/v1/mcp-servers", headers=member)).status_code == 200


async def test_bad_servers_are_refused_naming_the_field(client, tenant_a) -> None:
    admin = tenant_a["admin"]
    cases = [
        ({"name": "x", "transport": "stdio", "command": "/bin/sh"}, 422, "EDRS_INTEGRATION_MCP"),
        ({"name": "y", "transport": "http", "url": "http://169.254.169.254/mcp"}, 422, "url"),
        ({"name": "Bad Name", "transport": "http", "url": "https://a.example.com/"}, 422, "name"),
        ({"name": "z", "transport": "http", "command": "/x"}, 422, "url"),
    ]
    for body, status, words in cases:
        reply = await client.post("/api/v1/mcp-servers", json=body, headers=admin)
        assert reply.status_code == status, (body, reply.text)
        assert words in reply.text, (body, reply.text)


async def test_a_servers_credentials_are_taken_used_and_answered_as_names_only(
    client, tenant_a
) -> None:
    admin = tenant_a["admin"]
    token = f"key-{uuid.uuid4().hex}"
    reply = await client.post(
        "/api/v1/mcp-servers",
        json={
            "name": f"guarded-{uuid.uuid4().hex[:6]}",
            "transport": "stdio",
            "command": sys.executable,
            "args": [str(GUARDED_SERVER), "stdio", hashlib.sha256(token.encode()).hexdigest()],
            "env": {"API_TOKEN": token},
        },
        headers=admin,
    )
    assert reply.status_code == 201, reply.text
    assert token not in reply.text
    server = reply.json()
    assert server["env"] == {"API_TOKEN": "********"} and server["headers"] == {}
    fetched = await client.get(f"/api/v1/mcp-servers/{server['id']}", headers=admin)
    assert fetched.json()["env"] == {"API_TOKEN": "********"}
    assert token not in fetched.text
    tool = next(t["name"] for t in server["tools"] if t["remoteName"] == "api_token")
    called = await client.post(f"/api/v1/tools/{tool}/calls", json={}, headers=admin)
    assert called.status_code == 200, called.text
    assert called.json()["content"] == "API_TOKEN matches"

    # Rotation: the complete new set; "********" keeps a stored value, a name left out goes.
    credentials = f"/api/v1/mcp-servers/{server['id']}/credentials"
    rotated = await client.put(
        credentials, json={"env": {"API_TOKEN": "next", "REGION": "eu"}}, headers=admin
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["env"] == {"API_TOKEN": "********", "REGION": "********"}
    differs = await client.post(f"/api/v1/tools/{tool}/calls", json={}, headers=admin)
    assert differs.json()["content"] == "API_TOKEN differs"
    kept = await client.put(credentials, json={"env": {"API_TOKEN": "********"}}, headers=admin)
    assert kept.json()["env"] == {"API_TOKEN": "********"}
    bad = await client.put(credentials, json={"env": {"PATH": "/tmp"}}, headers=admin)
    assert bad.status_code == 422 and "PATH is part of the minimal environment" in bad.text
    member = await client.put(credentials, json={"env": {}}, headers=tenant_a["member"])
    assert member.status_code == 403


async def test_bad_credentials_are_refused_naming_the_header_or_variable(client, tenant_a) -> None:
    admin = tenant_a["admin"]
    stdio = {"transport": "stdio", "command": sys.executable, "args": [str(GUARDED_SERVER)]}
    http = {"transport": "http", "url": "https://tools.example.com/mcp"}
    cases = [
        ({**http, "headers": {"Host": "evil.example"}}, "Host is set by the HTTP client"),
        ({**http, "headers": {"Bad Name": "x"}}, "RFC 7230 token"),
        ({**http, "headers": {"Connection": "close"}}, "Connection is a hop-by-hop header"),
        ({**stdio, "env": {"PATH": "/tmp"}}, "PATH is part of the minimal environment"),
        ({**stdio, "env": {"LD_PRELOAD": "/tmp/x.so"}}, "LD_PRELOAD changes what a program"),
        ({**stdio, "headers": {"Authorization": "Bearer x"}}, "not a url or headers"),
        ({**http, "env": {"API_TOKEN": "x"}}, "not a command or env"),
    ]
    for body, words in cases:
        reply = await client.post(
            "/api/v1/mcp-servers", json={"name": "creds", **body}, headers=admin
        )
        assert reply.status_code == 422, (body, reply.text)
        assert words in reply.text, (body, reply.text)


async def test_another_tenant_sees_none_of_the_servers_or_tools(
    client, tenant_a, tenant_b, ledger
) -> None:
    server = await add_server(client, tenant_a["admin"], ledger)
    name = server["tools"][0]["name"]
    b = tenant_b["admin"]
    assert (await client.get(f"/api/v1/mcp-servers/{server['id']}", headers=b)).status_code == 404
    assert (await client.get(f"/api/v1/tools/{name}", headers=b)).status_code == 404
    call = await client.post(f"/api/v1/tools/{name}/calls", json={}, headers=b)
    assert call.status_code == 404
    patch = await client.patch(f"/api/v1/tools/{name}", json={"impact": "read"}, headers=b)
    assert patch.status_code == 404
    refresh = await client.post(f"/api/v1/mcp-servers/{server['id']}/refresh", headers=b)
    assert refresh.status_code == 404
    delete = await client.delete(f"/api/v1/mcp-servers/{server['id']}", headers=b)
    assert delete.status_code == 404
    listed = await client.get("/api/v1/tools", headers=b)
    assert name not in {t["name"] for t in listed.json()["tools"]}
    servers = await client.get("/api/v1/mcp-servers", headers=b)
    assert server["id"] not in {s["id"] for s in servers.json()["mcpServers"]}
    # Still there for its own tenant.
    mine = await client.get(f"/api/v1/mcp-servers/{server['id']}", headers=tenant_a["admin"])
    assert mine.status_code == 200


def sse(text: str) -> list[tuple[str, dict]]:
    events, name = [], ""
    for line in text.splitlines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:].strip())))
    return events


async def test_a_personas_tool_calls_stream_as_sse_events(client, tenant_a, ledger) -> None:
    server = await add_server(client, tenant_a["admin"], ledger)
    lookup = f"{server['name']}__lookup_order"
    created = await client.post(
        "/api/v1/personas",
        json={
            "name": "Otto",
            "role": "order desk assistant",
            "tools": [lookup],
            "toolPolicy": {"choice": "required", "maxRounds": 1},
        },
        headers=tenant_a["member"],
    )
    assert created.status_code == 201, created.text
    otto = created.json()
    assert otto["tools"] == [lookup]
    assert otto["toolPolicy"] == {
        "write": "required",
        "destructive": "required",
        "maxRounds": 1,
        "choice": "required",
    }
    reply = await client.post(
        f"/api/v1/personas/{otto['id']}/conversations/c-tools/messages",
        json={"text": "What is the status of order A-17?", "options": {"maxTokens": 24}},
        headers={**tenant_a["member"], "Accept": "text/event-stream"},
    )
    assert reply.status_code == 200, reply.text
    events = sse(reply.text)
    names = [n for n, _ in events]
    assert names.index("tool_call") < names.index("tool_result") < names.index("completed")
    call = dict(events)["tool_call"]
    assert (call["tool"], call["status"], call["impact"]) == (lookup, "running", "read")
    assert isinstance(call["arguments"]["order_id"], str)
    result = dict(events)["tool_result"]
    assert result["callId"] == call["callId"] and "Kestrel Freight" in result["content"]
    assert dict(events)["completed"]["toolCalls"][0]["tool"] == lookup


async def test_a_held_call_approved_over_http_runs_once_and_the_conversation_tells_it(
    client, tenant_a, tenant_b, ledger
) -> None:
    server = await add_server(client, tenant_a["admin"], ledger)
    note = f"{server['name']}__add_note"
    created = await client.post(
        "/api/v1/personas",
        json={
            "name": "Otto",
            "role": "order desk assistant",
            "tools": [note],
            # The small model must call the write tool; the default policy holds it.
            "toolPolicy": {"choice": "required", "maxRounds": 1},
        },
        headers=tenant_a["member"],
    )
    assert created.status_code == 201, created.text
    messages = f"/api/v1/personas/{created.json()['id']}/conversations/c-held/messages"
    reply = await client.post(
        messages,
        json={"text": "Add the note 'call back' to order B-9.", "options": {"maxTokens": 24}},
        headers={**tenant_a["member"], "Accept": "text/event-stream"},
    )
    assert reply.status_code == 200, reply.text
    call = dict(sse(reply.text))["tool_call"]
    assert (call["tool"], call["status"], call["impact"]) == (note, "held", "write")
    line = f"add_note {call['arguments']['order_id']} {call['arguments']['note']}"
    assert line not in ledger.read_text()
    approval = f"/api/v1/approvals/{call['approvalId']}"
    shown = await client.get(approval, headers=tenant_a["admin"])
    assert shown.status_code == 200, shown.text
    assert shown.json()["details"]["arguments"] == call["arguments"]

    # Another tenant's admin cannot decide it; the member who asked may not either.
    other = await client.post(
        f"{approval}/decision", json={"approve": True}, headers=tenant_b["admin"]
    )
    assert other.status_code == 404, other.text
    member = await client.post(
        f"{approval}/decision", json={"approve": True}, headers=tenant_a["member"]
    )
    assert member.status_code == 403, member.text
    decided = await client.post(
        f"{approval}/decision",
        json={"approve": True, "comment": "fine"},
        headers=tenant_a["admin"],
    )
    assert decided.status_code == 200, decided.text

    async def told() -> list[dict]:
        listed = await client.get(messages, headers=tenant_a["member"])
        assert listed.status_code == 200, listed.text
        return [m for m in listed.json()["messages"] if m["role"] == "tool"]

    async def outcome() -> bool:
        return bool(await told())

    await wait_until(outcome, 120, "the approved call's outcome in the conversation")
    [message] = await told()
    assert "was approved by" in message["text"] and "and ran" in message["text"]
    assert "noted" in message["text"]
    assert ledger.read_text().count(line) == 1


@contextlib.asynccontextmanager
async def mcp_client(fleet, key: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http,
        Client(
            streamable_http_client(f"{fleet.url}/api/v1/mcp", http_client=http),
            mode="legacy",
            cache=None,
        ) as client,
    ):
        yield client


async def api_key(client, admin, role: str) -> str:
    reply = await client.post(
        "/api/v1/api-keys", json={"name": f"agent {role}", "role": role}, headers=admin
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["apiKey"])


async def test_edrs_serves_mcp_to_agents_holding_an_api_key(fleet, client, tenant_a) -> None:
    await client.post(
        "/api/v1/personas",
        json={"name": "Ada", "role": "assistant", "instructions": "Answer in one sentence."},
        headers=tenant_a["admin"],
    )
    key = await api_key(client, tenant_a["admin"], "member")
    async with mcp_client(fleet, key) as mcp:
        listed = await mcp.list_tools()
        assert {t.name for t in listed.tools} == {"ask_persona", "search_knowledge", "create_task"}
        asked = await mcp.call_tool("ask_persona", {"persona": "Ada", "message": "Hello!"})
        assert not asked.is_error, asked.content
        answer = asked.structured_content
        assert answer is not None and answer["reply"] and answer["trace_id"]
        # A service this gateway cannot reach answers a clear error, not a failure.
        search = await mcp.call_tool("search_knowledge", {"query": "refunds"})
        assert search.is_error and "knowledge service" in search.content[0].text  # type: ignore[union-attr]
        # This fleet has a task service (for held tool calls' approvals): the task is created.
        task = await mcp.call_tool("create_task", {"title": "Call back"})
        assert not task.is_error, task.content
        assert task.structured_content is not None
        assert (
            task.structured_content["title"] == "Call back" and task.structured_content["task_id"]
        )

    viewer_key = await api_key(client, tenant_a["admin"], "viewer")
    async with mcp_client(fleet, viewer_key) as mcp:
        refused = await mcp.call_tool("ask_persona", {"persona": "Ada", "message": "Hi"})
        assert refused.is_error and "conversations:write" in refused.content[0].text  # type: ignore[union-attr]


async def test_the_mcp_endpoint_needs_a_valid_api_key(fleet) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=fleet.url) as plain:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"Accept": "application/json, text/event-stream"}
        missing = await plain.post("/api/v1/mcp", json=body, headers=headers)
        assert missing.status_code == 401
        forged = await plain.post(
            "/api/v1/mcp", json=body, headers={**headers, "Authorization": "Bearer edrs_x_y"}
        )
        assert forged.status_code == 401
        assert forged.headers["WWW-Authenticate"] == "Bearer"


async def test_a_persona_asked_over_mcp_is_found_only_in_the_keys_tenant(
    fleet, client, tenant_a, tenant_b
) -> None:
    await client.post(
        "/api/v1/personas", json={"name": "Zed", "role": "assistant"}, headers=tenant_a["admin"]
    )
    key_b = await api_key(client, tenant_b["admin"], "member")
    async with mcp_client(fleet, key_b) as mcp:
        asked = await mcp.call_tool("ask_persona", {"persona": "Zed", "message": "Hello"})
        assert asked.is_error and "no persona named 'Zed'" in asked.content[0].text  # type: ignore[union-attr]


async def test_edrs_tools_lists_and_calls_through_the_gateway(fleet, client, tenant_a, ledger):
    import asyncio

    from edrs_cli.main import app as cli
    from typer.testing import CliRunner

    server = await add_server(client, tenant_a["admin"], ledger)
    lookup = f"{server['name']}__lookup_order"
    token = tenant_a["admin"]["Authorization"].removeprefix("Bearer ")
    common = ["--url", fleet.url, "--token", token]
    runner = CliRunner()
    # The CLI is synchronous: it runs in a thread while this loop serves the fleet.
    listed = await asyncio.to_thread(runner.invoke, cli, ["tools", "list", "--json", *common])
    assert listed.exit_code == 0, listed.output
    assert lookup in {t["name"] for t in json.loads(listed.output)}
    called = await asyncio.to_thread(
        runner.invoke, cli, ["tools", "call", lookup, '{"order_id": "C-3"}', *common]
    )
    assert called.exit_code == 0, called.output
    assert called.output.strip() == "Order C-3: shipped 2026-11-30 by Kestrel Freight."
    bad = await asyncio.to_thread(
        runner.invoke, cli, ["tools", "call", lookup, '{"order_id": 3}', *common]
    )
    assert bad.exit_code == 2 and "order_id" in bad.output

    # Credentials from the command line: stored, named, never printed.
    secret = f"cli-{uuid.uuid4().hex}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    name = f"guarded-{uuid.uuid4().hex[:6]}"
    added = await asyncio.to_thread(
        runner.invoke,
        cli,
        [
            "tools",
            "add-server",
            name,
            "--command",
            sys.executable,
            "--arg",
            str(GUARDED_SERVER),
            "--arg",
            "stdio",
            "--arg",
            digest,
            "--env",
            f"API_TOKEN={secret}",
            "--json",
            *common,
        ],
    )
    assert added.exit_code == 0, added.output
    assert secret not in added.output
    made = json.loads(added.output)
    assert made["env"] == {"API_TOKEN": "********"}
    rotated = await asyncio.to_thread(
        runner.invoke,
        cli,
        [
            "tools",
            "rotate-credentials",
            made["id"],
            "--env",
            "API_TOKEN=other",
            "--env",
            "REGION=eu",
            *common,
        ],
    )
    assert rotated.exit_code == 0, rotated.output
    assert rotated.output.strip() == f"credentials of {name}: API_TOKEN, REGION"
    checked = await asyncio.to_thread(
        runner.invoke, cli, ["tools", "call", f"{name}__api_token", "{}", *common]
    )
    assert checked.output.strip() == "API_TOKEN differs"
    malformed = await asyncio.to_thread(
        runner.invoke, cli, ["tools", "rotate-credentials", made["id"], "--env", "NOPE", *common]
    )
    assert malformed.exit_code == 2 and "--env takes NAME=VALUE" in malformed.output
