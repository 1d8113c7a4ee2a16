"""`/api/v1/workflows`, `/runs`, `/approvals`, `/schedules` through the real gateway and task
service on the embedded Temporal server: a run watched live over SSE while it waits for a
member's approval, validation as problem+json, roles, and tenant B seeing none of tenant A's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from edrs_core.testing import SseStream, engine_settings, running_service, wait_until
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_persona.app import definition as persona_definition
from edrs_task.app import definition as task_definition

from .conftest import GATEWAY_REDIS_DB, KEY_SECRET, SERVICES_REDIS_DB, ConversationFleet

pytestmark = pytest.mark.integration

API = "/api/v1"


@pytest.fixture(scope="module")
async def fleet(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> AsyncIterator[ConversationFleet]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_gateway_workflows_{service}",
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
                # Its own queue: no other task service of the session takes its workflows.
                temporal_task_queue=f"gateway-workflows-{uuid.uuid4().hex[:8]}",
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
        "admin": await fleet.login(tenant, "admin"),
        "member": await fleet.login(tenant, "member"),
        "viewer": await fleet.login(tenant, "viewer"),
    }


@pytest.fixture(scope="module")
async def tenant_b(fleet) -> dict[str, object]:
    tenant = await fleet.new_tenant()
    return {"admin": await fleet.login(tenant, "admin")}


@pytest.fixture
async def client(fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as c:
        yield c


APPROVE_THEN_WAIT = {
    "steps": [
        {
            "id": "ask",
            "type": "approval",
            "with": {"role": "member", "title": "Publish the report?", "expiresInSeconds": 600},
        },
        {"id": "settle", "type": "wait", "dependsOn": ["ask"], "with": {"seconds": 0.2}},
    ]
}


async def test_a_run_is_watched_live_while_a_member_approves_it(client, tenant_a, tenant_b) -> None:
    admin, member, viewer = tenant_a["admin"], tenant_a["member"], tenant_a["viewer"]
    created = await client.post(
        f"{API}/workflows",
        json={"name": "publish", "description": "Ask, then publish", "spec": APPROVE_THEN_WAIT},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    got = await client.get(f"{API}/workflows/publish", headers=viewer)
    assert got.json()["spec"]["steps"][1]["dependsOn"] == ["ask"]

    key = {"Idempotency-Key": f"start-{uuid.uuid4().hex}"}
    started = await client.post(
        f"{API}/runs", json={"workflowName": "publish"}, headers={**member, **key}
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    assert started.headers["Location"].endswith(f"/runs/{run_id}")

    async with client.stream("GET", f"{API}/runs/{run_id}/events", headers=viewer) as response:
        assert response.status_code == 200
        stream = SseStream(response, response.aiter_lines())

        async def until(event: str, **fields: str) -> dict:
            while True:
                message = await stream.next_event(within=60)
                if message.get("event") != event:
                    continue
                data = json.loads(message["data"])
                if all(data.get(k) == v for k, v in fields.items()):
                    return data

        waiting = await until("step", id="ask", status="waiting_for_approval")
        approval_id = waiting["approvalId"]
        mine = await client.get(
            f"{API}/approvals", params={"forMe": "true", "status": "pending"}, headers=member
        )
        assert approval_id in {a["id"] for a in mine.json()["approvals"]}
        refused = await client.post(
            f"{API}/approvals/{approval_id}/decision", json={"approve": True}, headers=viewer
        )
        assert refused.status_code == 403, refused.text
        assert "for role 'member'" in refused.json()["detail"]
        unseen = await client.get(f"{API}/runs/{run_id}", headers=tenant_b["admin"])
        assert unseen.status_code == 404
        decided = await client.post(
            f"{API}/approvals/{approval_id}/decision",
            json={"approve": True, "comment": "ship it"},
            headers=member,
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "approved"
        finished = await until("finished")
    assert finished["status"] == "succeeded"
    assert [s["status"] for s in finished["steps"]] == ["succeeded", "succeeded"]
    assert finished["output"]["ask"]["comment"] == "ship it"

    again = await client.post(
        f"{API}/runs", json={"workflowName": "publish"}, headers={**member, **key}
    )
    assert again.json()["id"] == run_id
    listed = await client.get(f"{API}/runs", params={"workflowName": "publish"}, headers=viewer)
    assert [r["id"] for r in listed.json()["runs"]] == [run_id]
    other = await client.get(f"{API}/approvals", headers=tenant_b["admin"])
    assert other.json()["approvals"] == []


async def test_definitions_are_validated_with_the_step_and_the_reason(client, tenant_a) -> None:
    admin = tenant_a["admin"]
    cyclic = {
        "steps": [
            {"id": "a", "type": "wait", "dependsOn": ["b"], "with": {"seconds": 1}},
            {"id": "b", "type": "wait", "dependsOn": ["a"], "with": {"seconds": 1}},
        ]
    }
    reply = await client.post(
        f"{API}/workflows", json={"name": "loop", "spec": cyclic}, headers=admin
    )
    assert reply.status_code == 422, reply.text
    assert "cycle through a, b" in reply.json()["detail"]
    tools = {"steps": [{"id": "t", "type": "tool_call", "with": {"tool": "sql"}}]}
    reply = await client.post(
        f"{API}/workflows", json={"name": "tools", "spec": tools}, headers=admin
    )
    assert reply.status_code == 409, reply.text
    assert "no integration service is configured" in reply.json()["detail"]
    viewer = await client.post(
        f"{API}/workflows",
        json={"name": "v", "spec": APPROVE_THEN_WAIT},
        headers=tenant_a["viewer"],
    )
    assert viewer.status_code == 403


async def test_a_schedule_is_created_paused_and_deleted_over_http(
    client, tenant_a, tenant_b
) -> None:
    member = tenant_a["member"]
    await client.post(
        f"{API}/workflows", json={"name": "nightly", "spec": APPROVE_THEN_WAIT}, headers=member
    )
    created = await client.post(
        f"{API}/schedules",
        json={"workflowName": "nightly", "cron": "0 2 * * *", "timeZone": "Europe/Berlin"},
        headers=member,
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert len(schedule["nextRunTimes"]) == 10
    bad = await client.post(
        f"{API}/schedules",
        json={"workflowName": "nightly", "cron": "0 25 * * *"},
        headers=member,
    )
    assert bad.status_code == 422, bad.text
    # A boolean is a JSON boolean: 0 is not taken for false.
    loose = await client.post(
        f"{API}/schedules",
        json={"workflowName": "nightly", "cron": "0 2 * * *", "paused": 0},
        headers=member,
    )
    assert loose.status_code == 422, loose.text
    assert loose.json()["errors"][0]["pointer"] == "/paused"
    hidden = await client.get(f"{API}/schedules/{schedule['id']}", headers=tenant_b["admin"])
    assert hidden.status_code == 404
    paused = await client.post(f"{API}/schedules/{schedule['id']}/pause", headers=member)
    assert paused.json()["paused"] is True and paused.json()["nextRunTimes"] == []
    deleted = await client.delete(f"{API}/schedules/{schedule['id']}", headers=member)
    assert deleted.status_code == 204
    gone = await client.get(f"{API}/schedules/{schedule['id']}", headers=member)
    assert gone.status_code == 404


async def edrs(fleet, headers, *args: str, state_dir) -> tuple[int, str, str]:
    """`edrs workflows <args>` in its own process, as a user runs it, against the test gateway."""
    token = headers["Authorization"].removeprefix("Bearer ")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edrs_cli",
        "workflows",
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


async def test_edrs_workflows_commands(fleet, tenant_a, tmp_path) -> None:
    member = tenant_a["member"]
    spec = tmp_path / "approve.json"
    spec.write_text(json.dumps(APPROVE_THEN_WAIT))
    code, out, err = await edrs(
        fleet, member, "create", "cli-flow", "-f", str(spec), state_dir=tmp_path
    )
    assert (code, out.strip()) == (0, "workflow cli-flow version 1"), err
    code, out, err = await edrs(
        fleet, member, "start", "cli-flow", "--input", '{"n": 1}', "--json", state_dir=tmp_path
    )
    assert code == 0, err
    run_id = json.loads(out)["id"]

    async def pending() -> list:
        code, out, err = await edrs(fleet, member, "approvals", "--json", state_dir=tmp_path)
        assert code == 0, err
        return [a for a in json.loads(out) if a["runId"] == run_id]

    waiting: list = []

    async def asked() -> bool:
        nonlocal waiting
        waiting = await pending()
        return bool(waiting)

    await wait_until(asked, 60, "the run's approval")
    code, out, err = await edrs(
        fleet, member, "approve", waiting[0]["id"], "-m", "fine", state_dir=tmp_path
    )
    assert (code, out.strip()) == (0, f"approval {waiting[0]['id']} approved"), err
    code, out, err = await edrs(fleet, member, "watch", run_id, state_dir=tmp_path)
    assert code == 0, err
    assert f"run {run_id} succeeded" in out and "settle" in out
    code, out, err = await edrs(fleet, member, "runs", "--workflow", "cli-flow", state_dir=tmp_path)
    assert code == 0 and run_id in out
    code, out, err = await edrs(fleet, member, "show", str(uuid.uuid4()), state_dir=tmp_path)
    assert code == 2 and err.startswith("error: run ") and "not found" in err
    code, out, err = await edrs(
        fleet,
        member,
        "schedule",
        "cli-flow",
        "--cron",
        "0 9 * * 1-5",
        "--tz",
        "Asia/Tokyo",
        "--json",
        state_dir=tmp_path,
    )
    assert code == 0, err
    schedule_id = json.loads(out)["id"]
    code, out, err = await edrs(fleet, member, "pause", schedule_id, state_dir=tmp_path)
    assert (code, out.strip()) == (0, f"schedule {schedule_id} paused"), err
    code, out, err = await edrs(fleet, member, "unschedule", schedule_id, state_dir=tmp_path)
    assert (code, out.strip()) == (0, f"schedule {schedule_id} deleted"), err


async def test_a_script_asks_for_an_approval_once_per_key(client, tenant_a) -> None:
    member = tenant_a["member"]
    body = {
        "idempotencyKey": f"drop-table-{uuid.uuid4().hex}",
        "title": "Drop the staging table?",
        "role": "admin",
        "expiresInSeconds": 600,
    }
    first = await client.post(f"{API}/approvals", json=body, headers=member)
    assert first.status_code == 201, first.text
    again = await client.post(f"{API}/approvals", json=body, headers=member)
    assert again.json()["id"] == first.json()["id"]
    assert (again.json()["status"], again.json()["role"]) == ("pending", "admin")
    bad = await client.post(
        f"{API}/approvals", json={**body, "idempotencyKey": "has spaces"}, headers=member
    )
    assert bad.status_code == 422
