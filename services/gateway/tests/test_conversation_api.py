"""Talking to a persona through the gateway: JSON and SSE replies, the WebSocket, relationships,
co-workers, memories, traces, DLP on message text, validation and tenant isolation.

Real persona, memory and reasoning services (the real models) behind a real gateway
(conftest.py), driven over HTTP and WebSocket as a client would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A few tokens are enough to see a reply generated and streamed; CI has two cores.
OPTIONS = {"maxTokens": 12, "temperature": 0.2}
PERSONA = {
    "name": "Ada",
    "role": "research analyst",
    "skills": ["research"],
    "tone": "warm, concise",
    "instructions": "Answer in one short sentence.",
}


@pytest.fixture(scope="module")
async def tenant(conversation_fleet) -> uuid.UUID:
    return await conversation_fleet.new_tenant()


@pytest.fixture(scope="module")
async def member(conversation_fleet, tenant) -> dict[str, str]:
    return await conversation_fleet.login(tenant, "member")


@pytest.fixture
async def client(conversation_fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=conversation_fleet.url, timeout=120) as http:
        yield http


async def new_persona(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    reply = await client.post("/api/v1/personas", headers=headers, json={**PERSONA, **fields})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def say(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    persona_id: str,
    conversation: str,
    text: str,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages",
        headers=headers,
        json={"text": text, "options": OPTIONS},
    )


def sse_events(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    events, event, data = [], "message", []
    for line in lines:
        if line == "":
            if data:
                events.append((event, json.loads("\n".join(data))))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    return events


async def test_a_message_gets_a_generated_reply_as_json(client, member) -> None:
    persona_id = await new_persona(client, member)
    reply = await say(client, member, persona_id, "first-chat", "My manager is Priya.")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["reply"]["text"].strip(), body
    assert body["usage"]["completionTokens"] > 0
    assert body["timings"]["generationMs"] > 0
    assert any(f["attribute"] == "manager" and f["value"] == "Priya" for f in body["learned"])

    # The transcript and the conversation list are the caller's.
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/first-chat/messages", headers=member
    )
    assert messages.status_code == 200, messages.text
    stored = messages.json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["text"] == "My manager is Priya."
    assert stored[1]["text"] == body["reply"]["text"]
    assert stored[1]["traceId"] == body["reply"]["traceId"]
    listed = await client.get(f"/api/v1/personas/{persona_id}/conversations", headers=member)
    assert [(c["id"], c["messageCount"]) for c in listed.json()["conversations"]] == [
        ("first-chat", 2)
    ]

    # What the persona remembers of the caller, with the parts of each score.
    memories = await client.get(
        f"/api/v1/personas/{persona_id}/memories",
        params={"query": "who is my manager", "limit": 5},
        headers=member,
    )
    assert memories.status_code == 200, memories.text
    recalled = memories.json()["memories"]
    assert any("Priya" in m["memory"]["text"] for m in recalled), recalled
    assert all({"score", "recency", "importance", "relevance"} <= set(m) for m in recalled)


async def test_the_trace_behind_a_reply_is_readable_by_its_user_and_admins_only(
    conversation_fleet, client, tenant, member
) -> None:
    persona_id = await new_persona(client, member)
    body = (await say(client, member, persona_id, "traced", "Hello there.")).json()
    trace_id = body["reply"]["traceId"]

    mine = await client.get(f"/api/v1/traces/{trace_id}", headers=member)
    assert mine.status_code == 200, mine.text
    trace = mine.json()
    assert trace["answer"] == body["reply"]["text"]
    assert "Hello there." in trace["prompt"]
    assert trace["labels"]["conversation_id"] == "traced"

    listed = await client.get("/api/v1/traces", params={"conversationId": "traced"}, headers=member)
    assert [t["id"] for t in listed.json()["traces"]] == [trace_id]

    colleague = await conversation_fleet.login(tenant, "member")
    assert (await client.get(f"/api/v1/traces/{trace_id}", headers=colleague)).status_code == 404
    theirs = await client.get("/api/v1/traces", headers=colleague)
    assert trace_id not in {t["id"] for t in theirs.json()["traces"]}
    admin = await conversation_fleet.login(tenant, "admin")
    assert (await client.get(f"/api/v1/traces/{trace_id}", headers=admin)).status_code == 200


async def test_a_reply_streams_over_sse_in_several_deltas(client, member) -> None:
    persona_id = await new_persona(client, member)
    async with client.stream(
        "POST",
        f"/api/v1/personas/{persona_id}/conversations/streamed/messages",
        headers={**member, "Accept": "text/event-stream"},
        json={"text": "Describe the sea.", "options": OPTIONS},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in stream.aiter_lines()]
    events = sse_events(lines)
    names = [name for name, _ in events]
    assert names[0] == "accepted" and names[1] == "started" and names[-1] == "completed", names
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) > 1, names
    completed = events[-1][1]
    assert "".join(deltas) == completed["reply"]["text"]
    assert completed["messageId"] == events[0][1]["messageId"]


async def test_a_refused_turn_is_a_plain_http_error_even_when_streaming(client, member) -> None:
    persona_id = await new_persona(client, member)
    archived = await client.post(f"/api/v1/personas/{persona_id}/archive", headers=member)
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    for accept in ("application/json", "text/event-stream"):
        reply = await client.post(
            f"/api/v1/personas/{persona_id}/conversations/c/messages",
            headers={**member, "Accept": accept},
            json={"text": "Hello?"},
        )
        assert reply.status_code == 409, (accept, reply.text)
        assert reply.json()["code"] == "failed_precondition"


async def test_message_text_is_redacted_before_it_reaches_the_persona(client, member) -> None:
    persona_id = await new_persona(client, member)
    reply = await client.post(
        f"/api/v1/personas/{persona_id}/conversations/dlp/messages",
        headers=member,
        json={"text": "Mail me at ann@example.com please.", "options": {"maxTokens": 4}},
    )
    assert reply.status_code == 200, reply.text
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/dlp/messages", headers=member
    )
    assert messages.json()["messages"][0]["text"] == "Mail me at [REDACTED:email] please."


async def test_a_blocking_tenant_policy_refuses_the_message(conversation_fleet, client) -> None:
    tenant = await conversation_fleet.new_tenant()
    await conversation_fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", tenant
    )
    member = await conversation_fleet.login(tenant, "member")
    persona_id = await new_persona(client, member)
    reply = await say(client, member, persona_id, "dlp", "My card is 4111 1111 1111 1111.")
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "sensitive_data_blocked"
    assert reply.json()["errors"][0]["pointer"] == "/text"
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/dlp/messages", headers=member
    )
    # Nothing reached the persona.
    assert messages.status_code == 404 or messages.json()["messages"] == [], messages.text


# -- WebSocket ---------------------------------------------------------------------------------


def ws_url(fleet) -> str:  # type: ignore[no-untyped-def]
    return fleet.url.replace("http://", "ws://") + "/api/v1/ws"


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def frames_until(socket: ClientConnection, done: Any) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = json.loads(await socket.recv())
        frames.append(frame)
        if done(frame):
            return frames


async def test_a_conversation_over_the_websocket(conversation_fleet, client, member) -> None:
    persona_id = await new_persona(client, member)
    async with connect(
        ws_url(conversation_fleet), subprotocols=["edrs.v1", f"bearer.{token_of(member)}"]
    ) as socket:
        assert socket.subprotocol == "edrs.v1"
        await socket.send(json.dumps({"type": "typing", "conversationId": "ws"}))
        await socket.send(json.dumps({"type": "ping", "requestId": "p1"}))
        # The typing frame is acknowledged without an answer: the next frame is the pong.
        assert json.loads(await socket.recv()) == {"type": "pong", "requestId": "p1"}

        await socket.send(json.dumps({"type": "message", "personaId": persona_id}))
        error = json.loads(await socket.recv())
        assert error["type"] == "error" and error["problem"]["status"] == 422
        assert {e["pointer"] for e in error["problem"]["errors"]} >= {"/conversationId", "/text"}
        await socket.send("not json")
        assert json.loads(await socket.recv())["problem"]["code"] == "invalid_frame"

        message = {
            "type": "message",
            "personaId": persona_id,
            "conversationId": "ws",
            "text": "Describe the moon.",
            "options": OPTIONS,
            "requestId": "r1",
        }
        await socket.send(json.dumps(message))
        frames = await frames_until(
            socket, lambda f: f["type"] == "typing" and f.get("state") == "stopped"
        )
    kinds = [f["type"] if f["type"] != "typing" else f"typing:{f['state']}" for f in frames]
    assert kinds[0] == "accepted" and kinds[1] == "typing:started", kinds
    assert kinds[-2:] == ["completed", "typing:stopped"], kinds
    assert kinds.count("delta") > 1, kinds
    assert all(f["conversationId"] == "ws" and f["requestId"] == "r1" for f in frames)
    completed = frames[-2]
    assert "".join(f["text"] for f in frames if f["type"] == "delta") == completed["reply"]["text"]


async def test_the_websocket_runs_several_conversations_at_once(
    conversation_fleet, client, member
) -> None:
    persona_id = await new_persona(client, member)
    url = f"{ws_url(conversation_fleet)}?access_token={token_of(member)}"
    async with connect(url) as socket:
        for n in (1, 2):
            await socket.send(
                json.dumps(
                    {
                        "type": "message",
                        "personaId": persona_id,
                        "conversationId": f"parallel-{n}",
                        "text": f"Count to {n}.",
                        "options": {"maxTokens": 4},
                    }
                )
            )
        stopped: set[str] = set()
        completed: set[str] = set()
        while len(stopped) < 2:
            frame = json.loads(await socket.recv())
            if frame["type"] == "completed":
                completed.add(frame["conversationId"])
            if frame["type"] == "typing" and frame["state"] == "stopped":
                stopped.add(frame["conversationId"])
    assert completed == {"parallel-1", "parallel-2"}


async def test_the_websocket_needs_a_valid_token(conversation_fleet, tenant) -> None:
    viewer = await conversation_fleet.login(tenant, "viewer")
    cases = [
        ({}, 4401),
        ({"additional_headers": {"Authorization": "Bearer nonsense"}}, 4401),
        ({"additional_headers": viewer}, 4403),
    ]
    for options, code in cases:
        async with connect(ws_url(conversation_fleet), **options) as socket:
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == code, (options, closed.value.rcvd)
        assert closed.value.rcvd.reason


# -- relationships, co-workers, personas -------------------------------------------------------


async def test_the_caller_reads_corrects_and_deletes_what_the_persona_knows(client, member) -> None:
    persona_id = await new_persona(client, member)
    me = f"/api/v1/personas/{persona_id}/relationships/me"
    empty = await client.get(me, headers=member)
    assert empty.status_code == 200, empty.text
    assert empty.json()["facts"] == [] and empty.json()["interactionCount"] == 0

    for value in ("Priya", "Omar"):
        stated = await client.post(
            f"{me}/facts", headers=member, json={"attribute": "manager", "value": value}
        )
        assert stated.status_code == 200, stated.text
    facts = {f["value"]: f for f in stated.json()["facts"] if f["attribute"] == "manager"}
    assert facts["Omar"]["status"] == "current" and facts["Omar"]["validTo"] is None
    assert facts["Priya"]["status"] == "superseded"
    assert facts["Priya"]["supersededBy"] == facts["Omar"]["id"]
    assert facts["Priya"]["validTo"] is not None

    noted = await client.patch(me, headers=member, json={"notes": ["Likes dry humour."]})
    assert noted.json()["notes"] == ["Likes dry humour."]

    deleted = await client.delete(f"{me}/facts/{facts['Omar']['id']}", headers=member)
    assert deleted.status_code == 204, deleted.text
    after = (await client.get(me, headers=member)).json()
    assert facts["Omar"]["id"] not in {f["id"] for f in after["facts"]}
    missing = await client.delete(f"{me}/facts/{facts['Omar']['id']}", headers=member)
    assert missing.status_code == 404

    forgotten = await client.delete(me, headers=member)
    assert forgotten.status_code == 200, forgotten.text
    assert (await client.get(me, headers=member)).json()["facts"] == []


async def test_coworkers_are_set_listed_and_removed(client, member) -> None:
    ada = await new_persona(client, member)
    bob = await new_persona(client, member, name="Bob", role="reviewer")
    path = f"/api/v1/personas/{ada}/coworkers/{bob}"
    put = await client.put(
        path, headers=member, json={"relation": "reviews my work", "handover": "Send drafts."}
    )
    assert put.status_code == 200, put.text
    assert put.json()["coworkerName"] == "Bob"
    theirs = await client.get(f"/api/v1/personas/{bob}/coworkers", headers=member)
    assert [c["coworkerId"] for c in theirs.json()["coworkers"]] == [ada]
    assert (await client.delete(path, headers=member)).status_code == 204
    assert (await client.delete(path, headers=member)).status_code == 404
    listed = await client.get(f"/api/v1/personas/{ada}/coworkers", headers=member)
    assert listed.json()["coworkers"] == []


async def test_personas_are_changed_archived_and_listed_with_archived_ones(client, member) -> None:
    persona_id = await new_persona(client, member)
    changed = await client.patch(
        f"/api/v1/personas/{persona_id}", headers=member, json={"tone": "formal"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["tone"] == "formal" and changed.json()["name"] == PERSONA["name"]
    await client.post(f"/api/v1/personas/{persona_id}/archive", headers=member)
    active = await client.get("/api/v1/personas", params={"pageSize": 200}, headers=member)
    assert persona_id not in {p["id"] for p in active.json()["personas"]}
    everything = await client.get(
        "/api/v1/personas", params={"pageSize": 200, "includeArchived": "true"}, headers=member
    )
    assert persona_id in {p["id"] for p in everything.json()["personas"]}
    refused = await client.patch(
        f"/api/v1/personas/{persona_id}", headers=member, json={"tone": "warm"}
    )
    assert refused.status_code == 409, refused.text


# -- validation and isolation ------------------------------------------------------------------


async def test_bad_requests_are_validation_problems(client, member, tenant, conversation_fleet):
    persona_id = await new_persona(client, member)
    base = f"/api/v1/personas/{persona_id}"
    cases = [
        ("POST", f"{base}/conversations/has%20space/messages", {"text": "hi"}, "/conversationId"),
        ("POST", f"{base}/conversations/{'x' * 101}/messages", {"text": "hi"}, "/conversationId"),
        ("POST", "/api/v1/personas/not-a-uuid/conversations/c/messages", {"text": "hi"}, None),
        ("POST", f"{base}/conversations/c/messages", {"text": ""}, "/text"),
        ("POST", f"{base}/conversations/c/messages", {"text": "hi", "extra": 1}, "/extra"),
        (
            "POST",
            f"{base}/conversations/c/messages",
            {"text": "hi", "options": {"maxTokens": 0}},
            "/options/maxTokens",
        ),
        (
            "POST",
            f"{base}/conversations/c/messages",
            {"text": "hi", "options": {"strategy": "guess"}},
            "/options/strategy",
        ),
        ("POST", f"{base}/relationships/me/facts", {"attribute": "Bad Name", "value": "x"}, None),
        ("PATCH", f"{base}/relationships/me", {"notes": [""]}, "/notes/0"),
        ("PUT", f"{base}/coworkers/{uuid.uuid4()}", {"relation": "a\nb"}, "/relation"),
        ("GET", f"{base}/memories?limit=0", None, None),
        ("GET", "/api/v1/traces/not-a-uuid", None, None),
    ]
    for method, path, body, pointer in cases:
        reply = await client.request(method, path, headers=member, json=body)
        assert reply.status_code == 422, (method, path, reply.text)
        problem = reply.json()
        assert problem["code"] == "validation_failed", problem
        if pointer is not None:
            assert pointer in {e["pointer"] for e in problem["errors"]}, (path, problem)

    viewer = await conversation_fleet.login(tenant, "viewer")
    refused = await say(client, viewer, persona_id, "c", "hi")
    assert refused.status_code == 403


async def test_another_tenant_gets_404_on_every_route(conversation_fleet, client, member) -> None:
    persona_id = await new_persona(client, member)
    other = await new_persona(client, member, name="Other")
    turn = (await say(client, member, persona_id, "private", "My manager is Priya.")).json()
    fact_id = turn["learned"][0]["id"]
    stranger = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
    p = f"/api/v1/personas/{persona_id}"
    routes = [
        ("GET", p, None),
        ("PATCH", p, {"tone": "curt"}),
        ("POST", f"{p}/archive", None),
        ("POST", f"{p}/conversations/private/messages", {"text": "Who is my manager?"}),
        ("GET", f"{p}/conversations", None),
        ("GET", f"{p}/conversations/private/messages", None),
        ("GET", f"{p}/relationships/me", None),
        ("PATCH", f"{p}/relationships/me", {"notes": ["nosy"]}),
        ("DELETE", f"{p}/relationships/me", None),
        ("POST", f"{p}/relationships/me/facts", {"attribute": "manager", "value": "Mallory"}),
        ("DELETE", f"{p}/relationships/me/facts/{fact_id}", None),
        ("GET", f"{p}/coworkers", None),
        ("PUT", f"{p}/coworkers/{other}", {"relation": "spies"}),
        ("DELETE", f"{p}/coworkers/{other}", None),
        ("GET", f"{p}/memories?query=manager", None),
        ("GET", f"/api/v1/traces/{turn['reply']['traceId']}", None),
    ]
    for method, path, body in routes:
        for accept in ("application/json", "text/event-stream")[: 2 if "messages" in path else 1]:
            reply = await client.request(
                method, path, headers={**stranger, "Accept": accept}, json=body
            )
            assert reply.status_code == 404, (method, path, reply.status_code, reply.text)
            assert reply.headers["content-type"] == "application/problem+json"
    traces = await client.get("/api/v1/traces", headers=stranger)
    assert turn["reply"]["traceId"] not in {t["id"] for t in traces.json()["traces"]}
    listed = await client.get("/api/v1/personas?includeArchived=true", headers=stranger)
    assert persona_id not in {x["id"] for x in listed.json()["personas"]}

    # Nothing of it changed for its owner.
    facts = (await client.get(f"{p}/relationships/me", headers=member)).json()["facts"]
    assert [(f["attribute"], f["value"]) for f in facts] == [("manager", "Priya")]
