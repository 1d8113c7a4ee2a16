"""`/api/v1/tasks`, `/api/v1/budgets` and `/api/v1/usage` through the real gateway, persona and task
services (and the embedded Temporal server the task service connects to): the lifecycle over HTTP,
roles, validation as problem+json, and tenant B seeing none of tenant A's tasks, budgets or usage
on any route."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from edrs_core.testing import engine_settings, running_service
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_persona.app import definition as persona_definition
from edrs_task.app import definition as task_definition

from .conftest import GATEWAY_REDIS_DB, KEY_SECRET, SERVICES_REDIS_DB, ConversationFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def fleet(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> AsyncIterator[ConversationFleet]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_gateway_tasks_{service}",
            redis_db=redis_db,
        )

    async with contextlib.AsyncExitStack() as stack:
        persona = await stack.enter_async_context(
            running_service(persona_definition, **engines("persona", SERVICES_REDIS_DB))
        )
        task = await stack.enter_async_context(
            running_service(
                task_definition,
                peers={"persona": persona.grpc_address},
                temporal_address=temporal_engine.url(),
                **engines("task", SERVICES_REDIS_DB),
            )
        )
        gateway = await stack.enter_async_context(
            running_service(
                gateway_definition,
                peers={"persona": persona.grpc_address, "task": task.grpc_address},
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
        "viewer": await fleet.login(tenant, "viewer"),
    }


@pytest.fixture(scope="module")
async def tenant_b(fleet) -> dict[str, object]:
    tenant = await fleet.new_tenant()
    return {"id": tenant, "admin": await fleet.login(tenant, "admin")}


@pytest.fixture
async def client(fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as c:
        yield c


async def _persona(client, headers, name: str, skills: list[str]) -> str:
    reply = await client.post(
        "/api/v1/personas",
        json={"name": name, "role": "analyst", "skills": skills},
        headers=headers,
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def test_a_task_is_created_listed_cancelled_and_its_timeline_read(client, tenant_a) -> None:
    member = tenant_a["member"]
    ada = await _persona(client, member, "Ada", ["research"])
    created = await client.post(
        "/api/v1/tasks",
        json={
            "title": "Quarterly report",
            "description": "Summarise Q3",
            "assigneePersonaId": ada,
            "priority": 1,
            "dueAt": "2031-01-02T09:00:00+01:00",
            "budget": {"maxTokens": 5000},
        },
        headers=member,
    )
    assert created.status_code == 201, created.text
    task = created.json()
    assert created.headers["Location"] == f"/api/v1/tasks/{task['id']}"
    assert (task["status"], task["assigneePersonaId"], task["priority"]) == ("queued", ada, 1)
    assert task["dueAt"] == "2031-01-02T08:00:00Z"
    assert task["budget"] == {"maxTokens": 5000, "maxToolCalls": 0, "maxCostMicros": 0}

    got = await client.get(f"/api/v1/tasks/{task['id']}", headers=tenant_a["viewer"])
    assert got.json() == task
    listed = await client.get(
        "/api/v1/tasks",
        params={"status": ["queued", "running"], "assigneePersonaId": ada, "priority": 1},
        headers=member,
    )
    assert [t["id"] for t in listed.json()["tasks"]] == [task["id"]]
    none = await client.get("/api/v1/tasks", params={"status": "succeeded"}, headers=member)
    assert task["id"] not in {t["id"] for t in none.json()["tasks"]}

    cancelled = await client.post(
        f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "not needed"}, headers=member
    )
    assert (cancelled.json()["status"], cancelled.json()["outcome"]) == ("cancelled", "not needed")
    timeline = await client.get(f"/api/v1/tasks/{task['id']}/timeline", headers=member)
    assert [(e["kind"], e["fromStatus"], e["toStatus"]) for e in timeline.json()["entries"]] == [
        ("created", None, "queued"),
        ("assigned", None, None),
        ("cancelled", "queued", "cancelled"),
    ]


async def test_refusals_are_problem_documents(client, tenant_a) -> None:
    member, viewer = tenant_a["member"], tenant_a["viewer"]
    missing = await client.post(
        "/api/v1/tasks",
        json={"title": "t", "assigneePersonaId": str(uuid.uuid4())},
        headers=member,
    )
    assert (missing.status_code, missing.json()["code"]) == (409, "failed_precondition")
    bad = await client.post("/api/v1/tasks", json={"title": "", "priority": 9}, headers=member)
    assert bad.status_code == 422
    assert {e["pointer"] for e in bad.json()["errors"]} == {"/title", "/priority"}
    forbidden = await client.post("/api/v1/tasks", json={"title": "t"}, headers=viewer)
    assert forbidden.status_code == 403
    # A cap beyond 2**53 - 1 (a JSON number no client reads exactly; int64 behind) is a 422.
    huge = await client.post(
        "/api/v1/tasks",
        json={"title": "t", "budget": {"maxCostMicros": 2**63 + 192}},
        headers=member,
    )
    assert huge.status_code == 422, huge.text
    assert [e["pointer"] for e in huge.json()["errors"]] == ["/budget/maxCostMicros"]
    largest = await client.post(
        "/api/v1/tasks", json={"title": "t", "budget": {"maxTokens": 2**53 - 1}}, headers=member
    )
    assert largest.status_code == 201, largest.text
    assert largest.json()["budget"]["maxTokens"] == 2**53 - 1
    made = (await client.post("/api/v1/tasks", json={"title": "t"}, headers=member)).json()
    await client.post(f"/api/v1/tasks/{made['id']}/cancel", headers=member)
    # Cancelled is final: decomposing it is refused.
    final = await client.post(f"/api/v1/tasks/{made['id']}/decompose", headers=member)
    assert (final.status_code, final.json()["code"]) == (409, "failed_precondition")
    assert "a finished task is not decomposed" in final.json()["detail"]


async def test_budgets_are_set_by_admins_and_read_with_usage(client, tenant_a) -> None:
    admin, member = tenant_a["admin"], tenant_a["member"]
    ada = await _persona(client, admin, "Ada", [])
    body = {
        "scope": "persona",
        "scopeId": ada,
        "maxTokens": 1000,
        "onExceed": "approval",
        "period": "week",
        "timeZone": "Asia/Tokyo",
    }
    assert (await client.put("/api/v1/budgets", json=body, headers=member)).status_code == 403
    huge = await client.put("/api/v1/budgets", json={**body, "maxToolCalls": 2**53}, headers=admin)
    assert huge.status_code == 422, huge.text
    assert [e["pointer"] for e in huge.json()["errors"]] == ["/maxToolCalls"]
    made = await client.put("/api/v1/budgets", json=body, headers=admin)
    assert made.status_code == 200, made.text
    budget = made.json()
    assert (budget["scope"], budget["scopeId"], budget["maxTokens"], budget["onExceed"]) == (
        "persona",
        ada,
        1000,
        "approval",
    )
    assert budget["used"] == {"tokens": 0, "toolCalls": 0, "costMicros": 0}
    assert budget["granted"] == {"tokens": 0, "toolCalls": 0, "costMicros": 0}
    assert (budget["period"], budget["timeZone"], budget["approvalId"]) == (
        "week",
        "Asia/Tokyo",
        None,
    )
    # A week from Monday midnight in Tokyo (15:00 UTC on Sunday).
    start = datetime.fromisoformat(budget["periodStart"])
    end = datetime.fromisoformat(budget["periodEnd"])
    assert end - start == timedelta(days=7)
    assert start.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%a %H:%M") == "Mon 00:00"
    periods = await client.get(f"/api/v1/budgets/{budget['id']}/periods", headers=member)
    assert periods.status_code == 200, periods.text
    assert periods.json() == {"periods": [], "nextPageToken": ""}  # none charged yet
    unknown_zone = await client.put(
        "/api/v1/budgets", json=body | {"timeZone": "Mars/Olympus"}, headers=admin
    )
    assert unknown_zone.status_code == 422
    assert "'Mars/Olympus' is not an IANA time zone" in unknown_zone.json()["detail"]
    listed = await client.get("/api/v1/budgets", headers=member)
    assert budget["id"] in {b["id"] for b in listed.json()["budgets"]}
    bad = await client.put(
        "/api/v1/budgets", json={"scope": "tenant", "scopeId": "x"}, headers=admin
    )
    assert bad.status_code == 422
    usage = await client.get("/api/v1/usage", params={"from": "2026-01-01"}, headers=member)
    assert usage.status_code == 200 and usage.json() == {"rows": []}
    reversed_range = await client.get(
        "/api/v1/usage", params={"from": "2026-02-01", "to": "2026-01-01"}, headers=member
    )
    assert reversed_range.status_code == 422
    assert "from_day must not be after to_day" in reversed_range.json()["detail"]
    gone = await client.delete(f"/api/v1/budgets/{budget['id']}", headers=admin)
    assert gone.status_code == 204


async def test_tenant_b_sees_none_of_tenant_a_on_any_route(client, tenant_a, tenant_b) -> None:
    a, b = tenant_a["admin"], tenant_b["admin"]
    task = (await client.post("/api/v1/tasks", json={"title": "A's"}, headers=a)).json()
    budget = (
        await client.put("/api/v1/budgets", json={"scope": "tenant", "maxTokens": 9}, headers=a)
    ).json()
    for method, path in (
        ("GET", f"/api/v1/tasks/{task['id']}"),
        ("POST", f"/api/v1/tasks/{task['id']}/cancel"),
        ("GET", f"/api/v1/tasks/{task['id']}/timeline"),
        ("POST", f"/api/v1/tasks/{task['id']}/decompose"),
        ("DELETE", f"/api/v1/budgets/{budget['id']}"),
        ("GET", f"/api/v1/budgets/{budget['id']}/periods"),
    ):
        reply = await client.request(method, path, headers=b)
        assert reply.status_code == 404, (method, path, reply.text)
    theirs = await client.get("/api/v1/tasks", headers=b)
    assert task["id"] not in {t["id"] for t in theirs.json()["tasks"]}
    their_budgets = await client.get("/api/v1/budgets", headers=b)
    assert budget["id"] not in {x["id"] for x in their_budgets.json()["budgets"]}
    assert (await client.get("/api/v1/usage", headers=b)).json() == {"rows": []}
    # A's task and budget are untouched.
    mine = await client.get(f"/api/v1/tasks/{task['id']}", headers=a)
    assert mine.json()["status"] == "queued"
    listed = await client.get("/api/v1/budgets", headers=a)
    assert budget["id"] in {x["id"] for x in listed.json()["budgets"]}


async def test_the_routes_are_in_the_openapi_document(client) -> None:
    paths = (await client.get("/api/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/tasks",
        "/api/v1/tasks/{taskId}",
        "/api/v1/tasks/{taskId}/cancel",
        "/api/v1/tasks/{taskId}/timeline",
        "/api/v1/tasks/{taskId}/decompose",
        "/api/v1/budgets",
        "/api/v1/budgets/{budgetId}",
        "/api/v1/budgets/{budgetId}/periods",
        "/api/v1/usage",
    ):
        assert path in paths, path
    assert "409" in paths["/api/v1/tasks/{taskId}/decompose"]["post"]["responses"]


async def edrs(fleet, headers, *args: str, state_dir) -> tuple[int, str, str]:
    """`edrs tasks <args>` in its own process, as a user runs it, against the test gateway."""
    token = headers["Authorization"].removeprefix("Bearer ")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edrs_cli",
        "tasks",
        *args,
        "--url",
        fleet.url,
        "--token",
        token,
        "--state-dir",
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_edrs_tasks_commands(fleet, client, tenant_a, tmp_path) -> None:
    member, admin = tenant_a["member"], tenant_a["admin"]
    ada = await _persona(client, member, "Ada", [])
    code, out, err = await edrs(
        fleet,
        member,
        "create",
        "CLI report",
        "--persona",
        ada,
        "--priority",
        "2",
        "--max-tokens",
        "900",
        "--json",
        state_dir=tmp_path,
    )
    assert code == 0, err
    task = json.loads(out)
    assert (task["title"], task["assigneePersonaId"], task["budget"]["maxTokens"]) == (
        "CLI report",
        ada,
        900,
    )
    code, out, err = await edrs(
        fleet, member, "list", "--persona", ada, "--json", state_dir=tmp_path
    )
    assert code == 0, err
    assert [t["id"] for t in json.loads(out)] == [task["id"]]
    code, out, err = await edrs(fleet, member, "list", "--persona", ada, state_dir=tmp_path)
    assert code == 0 and task["id"] in out and "CLI report" in out
    code, out, err = await edrs(
        fleet, member, "cancel", task["id"], "--reason", "done by hand", state_dir=tmp_path
    )
    assert code == 0, err
    code, out, err = await edrs(fleet, member, "show", task["id"], "--json", state_dir=tmp_path)
    shown = json.loads(out)
    assert (shown["status"], shown["outcome"]) == ("cancelled", "done by hand")
    assert [e["kind"] for e in shown["timeline"]] == ["created", "assigned", "cancelled"]
    # Refusals: one line on stderr, exit 2 for a request the gateway found wrong.
    code, out, err = await edrs(fleet, member, "show", str(uuid.uuid4()), state_dir=tmp_path)
    assert code == 2 and err.startswith("error: task ") and "not found" in err
    code, out, err = await edrs(
        fleet, admin, "set-budget", "persona", ada, "--max-tokens", "5", state_dir=tmp_path
    )
    assert code == 0 and out.startswith("budget "), err
    budgets = (await client.get("/api/v1/budgets", headers=admin)).json()["budgets"]
    assert any(b["scopeId"] == ada and b["maxTokens"] == 5 for b in budgets)
    code, out, err = await edrs(fleet, admin, "usage", "--json", state_dir=tmp_path)
    assert (code, json.loads(out)) == (0, [])
