"""The product's main job, end to end on the fleet `make run` starts, with the real models.

A persona is told something in one conversation and knows it in the next; a contradicting
statement supersedes the old fact; another tenant sees none of it; one trace id covers the turn.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from edrs_core.testing import wait_until

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

# Small replies keep the suite fast on two cores; the model still streams several chunks.
OPTIONS = {"maxTokens": 24, "temperature": 0.2}


@dataclass
class Tenant:
    id: str
    token: str
    api_key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _fields(output: str) -> dict[str, str]:
    """`name: value` lines printed by `edrs admin ...`."""
    return dict(
        line.split(": ", 1) for line in output.splitlines() if re.match(r"^\w+: ", line.strip())
    )


def make_tenant(fleet, name: str) -> Tenant:
    """A tenant and its first admin made with `edrs admin` (the gateway's bootstrap command), and
    an admin API key made by that admin through the REST API, exchanged for an access token."""
    password = secrets.token_urlsafe(16)
    made = fleet.edrs_in_fleet(
        "admin", "create-tenant", name, "--tier", "enterprise",
        "--admin-email", "admin@tenant.example", "--password-stdin", input=f"{password}\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    tenant_id = _fields(made.stdout)["id"]
    login = httpx.post(
        f"{fleet.gateway_url}/api/v1/auth/token",
        json={"grantType": "password", "tenantId": tenant_id, "email": "admin@tenant.example",
              "password": password},
        timeout=30,
    )  # fmt: skip
    assert login.status_code == 200, login.text
    key = fleet.edrs_in_fleet(
        "admin", "create-api-key", "--name", "fleet test", "--role", "admin",
        "--token", login.json()["accessToken"],
    )  # fmt: skip
    assert key.returncode == 0, key.stderr
    printed = _fields(key.stdout)
    reply = httpx.post(
        f"{fleet.gateway_url}/api/v1/auth/token",
        json={"grantType": "apiKey", "apiKey": printed["apiKey"]},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return Tenant(id=tenant_id, token=reply.json()["accessToken"], api_key_id=printed["id"])


@pytest.fixture(scope="module")
def tenant_a(fleet) -> Tenant:
    return make_tenant(fleet, f"Conversations A {secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def tenant_b(fleet) -> Tenant:
    return make_tenant(fleet, f"Conversations B {secrets.token_hex(3)}")


@pytest.fixture
async def api(fleet) -> AsyncIterator[httpx.AsyncClient]:
    # Generation on CPU takes seconds; the gateway's own request timeout still applies.
    async with httpx.AsyncClient(base_url=fleet.gateway_url, timeout=180) as client:
        yield client


async def create_persona(api: httpx.AsyncClient, tenant: Tenant, name: str = "Ada") -> str:
    reply = await api.post(
        "/api/v1/personas",
        headers=tenant.headers,
        json={
            "name": name,
            "role": "Executive assistant",
            "responsibilities": ["keep the calendar", "draft replies"],
            "skills": ["scheduling", "writing"],
            "tone": "warm and concise",
            "instructions": "Answer briefly. Use what you know about the user.",
        },
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def say(
    api: httpx.AsyncClient, tenant: Tenant, persona_id: str, conversation: str, text: str
) -> dict[str, Any]:
    reply = await api.post(
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages",
        headers=tenant.headers,
        json={"text": text, "options": OPTIONS},
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def sse_events(body: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream, data parsed as JSON."""
    event, data = "message", []
    for line in body:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def test_a_preference_stated_in_one_conversation_shapes_the_next(
    api, tenant_a: Tenant
) -> None:
    persona_id = await create_persona(api, tenant_a)
    first = await say(
        api, tenant_a, persona_id, "conv-a", "I prefer bullet points in every answer."
    )
    assert any(
        f["attribute"] == "preference" and "bullet points" in f["value"] for f in first["learned"]
    ), first["learned"]

    # A new conversation, streamed: the persona must bring the preference back from memory.
    events: list[tuple[str, dict[str, Any]]] = []
    async with api.stream(
        "POST",
        f"/api/v1/personas/{persona_id}/conversations/conv-b/messages",
        headers={**tenant_a.headers, "Accept": "text/event-stream"},
        json={"text": "How should you format your answers for me?", "options": OPTIONS},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in stream.aiter_lines()]
    events = list(sse_events(iter(lines)))
    names = [name for name, _ in events]
    assert names[0] == "accepted" and names[-1] == "completed", names
    assert "started" in names, names
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) > 1, f"the reply came in {len(deltas)} chunk(s), not streamed"
    completed = events[-1][1]
    assert "".join(deltas) == completed["reply"]["text"]

    # Recall returned the stated preference, from the other conversation.
    recalled = [m["memory"]["text"] for m in completed["recalled"]]
    assert any("bullet points" in text for text in recalled), recalled
    assert all(m["memory"]["conversationId"] != "conv-b" for m in completed["recalled"])

    # The prompt the model read contained it, and the model generated the reply.
    trace = await api.get(
        f"/api/v1/traces/{completed['reply']['traceId']}", headers=tenant_a.headers
    )
    assert trace.status_code == 200, trace.text
    body = trace.json()
    assert "bullet points" in body["prompt"]
    assert body["answer"] == completed["reply"]["text"]
    assert body["completionTokens"] > 1
    assert "smollm2" in body["model"].lower()

    # The conversation's transcript keeps both messages.
    transcript = await api.get(
        f"/api/v1/personas/{persona_id}/conversations/conv-b/messages", headers=tenant_a.headers
    )
    assert transcript.status_code == 200, transcript.text
    roles = [m["role"] for m in transcript.json()["messages"]]
    assert roles == ["user", "assistant"]


async def test_a_contradiction_supersedes_the_old_fact_and_keeps_both_times(
    api, tenant_a: Tenant
) -> None:
    persona_id = await create_persona(api, tenant_a, "Grace")
    await say(api, tenant_a, persona_id, "conv-1", "My manager is Priya.")
    await say(api, tenant_a, persona_id, "conv-2", "Actually, my manager is now Omar.")

    reply = await api.get(
        f"/api/v1/personas/{persona_id}/relationships/me", headers=tenant_a.headers
    )
    assert reply.status_code == 200, reply.text
    managers = [f for f in reply.json()["facts"] if f["attribute"] == "manager"]
    by_value = {f["value"]: f for f in managers}
    assert set(by_value) == {"Priya", "Omar"}, managers
    omar, priya = by_value["Omar"], by_value["Priya"]
    assert omar["status"] == "current" and omar.get("validTo") is None
    assert priya["status"] == "superseded"
    assert priya["supersededBy"] == omar["id"]
    when = datetime.fromisoformat
    assert when(priya["validFrom"]) < when(priya["validTo"]) <= when(omar["validFrom"])


async def test_another_tenant_sees_nothing_of_it(api, tenant_a: Tenant, tenant_b: Tenant) -> None:
    persona_id = await create_persona(api, tenant_a, "Hedy")
    partner = await create_persona(api, tenant_a, "Grace")
    turn = await say(api, tenant_a, persona_id, "secret-talk", "My manager is Priya.")
    trace_id = turn["reply"]["traceId"]
    p = f"/api/v1/personas/{persona_id}"
    # What tenant A set, to be found unchanged after tenant B's writes.
    noted = await api.patch(
        f"{p}/relationships/me", headers=tenant_a.headers, json={"notes": ["Owner's note."]}
    )
    assert noted.status_code == 200, noted.text
    paired = await api.put(
        f"{p}/coworkers/{partner}", headers=tenant_a.headers, json={"relation": "peer"}
    )
    assert paired.status_code == 200, paired.text

    async def owners_view() -> dict[str, Any]:
        return {
            path: (await api.get(path, headers=tenant_a.headers)).json()
            for path in (
                p,
                f"{p}/relationships/me",
                f"{p}/coworkers",
                f"{p}/conversations/secret-talk/messages",
            )
        }

    before = await owners_view()
    reads = [
        p,
        f"{p}/conversations",
        f"{p}/conversations/secret-talk/messages",
        f"{p}/relationships/me",
        f"{p}/memories?query=manager",
        f"{p}/coworkers",
        f"/api/v1/traces/{trace_id}",
    ]
    for path in reads:
        reply = await api.get(path, headers=tenant_b.headers)
        assert reply.status_code == 404, f"GET {path} as tenant B: {reply.status_code} {reply.text}"
        assert reply.headers["content-type"].startswith("application/problem+json")
    writes = [
        ("PATCH", p, {"tone": "curt"}),
        ("POST", f"{p}/archive", None),
        ("POST", f"{p}/conversations/secret-talk/messages", {"text": "Who is my manager?"}),
        ("PATCH", f"{p}/relationships/me", {"notes": ["nosy"]}),
        ("POST", f"{p}/relationships/me/facts", {"attribute": "manager", "value": "Mallory"}),
        ("DELETE", f"{p}/relationships/me", None),
        ("PUT", f"{p}/coworkers/{partner}", {"relation": "spies"}),
        ("DELETE", f"{p}/coworkers/{partner}", None),
    ]
    for method, path, body in writes:
        reply = await api.request(method, path, headers=tenant_b.headers, json=body)
        assert reply.status_code == 404, f"{method} {path} as tenant B: {reply.status_code}"
    listed = await api.get("/api/v1/personas", headers=tenant_b.headers)
    assert persona_id not in {p["id"] for p in listed.json()["personas"]}
    traces = await api.get("/api/v1/traces", headers=tenant_b.headers)
    assert traces.status_code == 200, traces.text
    assert trace_id not in {t["id"] for t in traces.json()["traces"]}

    # Nothing changed for tenant A: facts, tone, archive state, notes, co-workers, transcript.
    still = await api.get(f"{p}/relationships/me", headers=tenant_a.headers)
    assert [f["value"] for f in still.json()["facts"] if f["attribute"] == "manager"] == ["Priya"]
    after = await owners_view()
    persona = after[p]
    assert (persona["tone"], persona["status"]) == ("warm and concise", "active")
    assert after[f"{p}/relationships/me"]["notes"] == ["Owner's note."]
    assert [(c["coworkerId"], c["relation"]) for c in after[f"{p}/coworkers"]["coworkers"]] == [
        (partner, "peer")
    ]
    assert after == before


async def test_one_trace_id_spans_gateway_persona_memory_and_reasoning(
    fleet, api, tenant_a: Tenant
) -> None:
    persona_id = await create_persona(api, tenant_a, "Lin")
    trace_id = secrets.token_hex(16)
    reply = await api.post(
        f"/api/v1/personas/{persona_id}/conversations/{uuid.uuid4()}/messages",
        headers={**tenant_a.headers, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        json={"text": "Hello, what can you do?", "options": OPTIONS},
    )
    assert reply.status_code == 200, reply.text

    def logged(name: str) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in fleet.log(name).splitlines()
            if trace_id in line and line.startswith("{")
        ]

    services = ("gateway", "persona", "memory", "reasoning")

    async def all_logged() -> bool:
        return all(logged(name) for name in services)

    await wait_until(all_logged, 15, f"trace {trace_id} in the logs of {services}")
    for name in services:
        assert all(line["trace_id"] == trace_id for line in logged(name)), name
    methods = {line.get("rpc_method", "") for name in services for line in logged(name)}
    assert any(m.endswith("/Converse") for m in methods), methods
    assert any(m.endswith("/Recall") for m in methods), methods
    assert any(m.endswith("/Reason") for m in methods), methods
