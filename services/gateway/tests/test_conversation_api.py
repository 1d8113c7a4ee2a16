"""Talking to a persona through the gateway: JSON and SSE replies, the WebSocket, relationships,
co-workers, memories, traces, DLP on message text, validation and tenant isolation.

Real persona, memory and reasoning services (the real models) behind a real gateway
(conftest.py), driven over HTTP and WebSocket as a client would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from edrs_core.testing import HTTP_TIMEOUT
from edrs_gateway.auth.tokens import TokenService
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


async def test_traces_filter_by_persona_and_user_and_members_only_by_themselves(
    conversation_fleet, client, tenant, member
) -> None:
    ada = await new_persona(client, member)
    bob = await new_persona(client, member, name="Bob")
    colleague = await conversation_fleet.login(tenant, "member")
    mine_ada = (await say(client, member, ada, "filters", "Hello Ada.")).json()["reply"]["traceId"]
    mine_bob = (await say(client, member, bob, "filters", "Hello Bob.")).json()["reply"]["traceId"]
    theirs = (await say(client, colleague, ada, "filters", "Hi.")).json()["reply"]["traceId"]

    async def user_of(trace_id: str, headers: dict[str, str]) -> str:
        reply = await client.get(f"/api/v1/traces/{trace_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["labels"]["user_id"])

    async def listed(headers: dict[str, str], **params: str) -> httpx.Response:
        return await client.get(
            "/api/v1/traces", params={"pageSize": 200, **params}, headers=headers
        )

    def ids(reply: httpx.Response) -> set[str]:
        assert reply.status_code == 200, reply.text
        return {t["id"] for t in reply.json()["traces"]}

    me, them = await user_of(mine_ada, member), await user_of(theirs, colleague)
    # docs/api.md: a member filtering on another userId gets 403.
    refused = await listed(member, userId=them)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert ids(await listed(member, personaId=ada)) == {mine_ada}
    assert ids(await listed(member, personaId=bob, userId=me)) == {mine_bob}
    assert ids(await listed(colleague, personaId=ada)) == {theirs}
    admin = await conversation_fleet.login(tenant, "admin")
    assert ids(await listed(admin, personaId=ada)) == {mine_ada, theirs}
    assert ids(await listed(admin, personaId=ada, userId=them)) == {theirs}
    assert ids(await listed(admin, userId=them)) == {theirs}


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


def sse_ids(lines: list[str]) -> list[str]:
    """The `id:` of each event, in order (every event of a streamed turn has one)."""
    return [line[3:].strip() for line in lines if line.startswith("id:")]


async def test_a_broken_stream_resumes_with_nothing_lost_or_repeated(
    client, member, conversation_fleet, tenant
) -> None:
    persona_id = await new_persona(client, member)
    base = f"/api/v1/personas/{persona_id}/conversations/resumed/messages"
    seen: list[str] = []
    # The client goes away after the first delta, as a page reloaded mid-reply does.
    async with client.stream(
        "POST",
        base,
        headers={**member, "Accept": "text/event-stream"},
        json={"text": "Describe the sea in detail.", "options": {**OPTIONS, "maxTokens": 24}},
    ) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            seen.append(line)
            if line == "" and any(x.startswith("event: delta") for x in seen):
                break  # the whole first delta (up to the blank line that ends it)
    first_events = sse_events(seen)
    message_id = first_events[0][1]["messageId"]
    ids = sse_ids(seen)
    assert first_events[0][0] == "accepted" and ids, seen

    # Resumed after the last id seen: the rest, each event once, ending with `completed`.
    async with client.stream(
        "GET", f"{base}/{message_id}/events", headers={**member, "Last-Event-ID": ids[-1]}
    ) as rest:
        assert rest.status_code == 200, await rest.aread()
        rest_lines = [line async for line in rest.aiter_lines()]
    rest_events = sse_events(rest_lines)
    assert rest_events[-1][0] == "completed", rest_events
    assert not set(sse_ids(rest_lines)) & set(ids)
    delivered = [d["text"] for n, d in (*first_events, *rest_events) if n == "delta"]
    assert "".join(delivered) == rest_events[-1][1]["reply"]["text"]

    # From the start: the whole turn again, the same ids, for a page that lost everything.
    whole = await client.get(f"{base}/{message_id}/events", headers=member)
    assert whole.status_code == 200
    whole_events = sse_events(whole.text.splitlines())
    assert whole_events[0] == first_events[0] and whole_events[-1] == rest_events[-1]
    assert sse_ids(whole.text.splitlines()) == [*ids, *sse_ids(rest_lines)]

    # The turn was stored once, though its first client left mid-reply.
    messages = (await client.get(base, headers=member)).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["text"] == rest_events[-1][1]["reply"]["text"]

    # Only the sender reads the turn: another member of the tenant, and another tenant, get 404.
    colleague = await conversation_fleet.login(tenant, "member")
    stranger = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
    for headers in (colleague, stranger):
        refused = await client.get(f"{base}/{message_id}/events", headers=headers)
        assert refused.status_code == 404, refused.text
        assert refused.json()["code"] == "not_found"
    unknown = await client.get(f"{base}/{uuid.uuid4()}/events", headers=member)
    assert unknown.status_code == 404
    bad = await client.get(
        f"{base}/{message_id}/events", headers={**member, "Last-Event-ID": "yesterday"}
    )
    assert bad.status_code == 422, bad.text


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


async def test_a_turn_past_its_timeout_ends_the_started_stream_with_an_error_event(
    conversation_fleet, client, tenant, member, api_of
) -> None:
    persona_id = await new_persona(client, member)
    # The conversation's turn is held by the test, so the message waits in the queue past the
    # gateway's turn timeout, however fast the model is. Ten seconds leave the turn time to be
    # accepted (the stream to begin) on a loaded machine.
    async with (
        conversation_fleet.hold_turn(tenant, persona_id, member, "held"),
        api_of(conversation_fleet.gateway, turn_timeout_seconds=10.0) as timed,
    ):
        reply = await timed.post(
            f"/api/v1/personas/{persona_id}/conversations/held/messages",
            headers={**member, "Accept": "text/event-stream"},
            json={"text": "Are you there?", "options": OPTIONS},
        )
    assert reply.status_code == 200, reply.text
    events = sse_events(reply.text.splitlines())
    assert [name for name, _ in events] == ["accepted", "queued", "error"], events
    assert events[1][1] == {"ahead": 1}
    problem = events[2][1]
    assert problem["status"] == 504 and problem["code"] == "upstream_timeout", problem


async def test_relationship_notes_and_facts_pass_dlp(client, member) -> None:
    persona_id = await new_persona(client, member)
    me = f"/api/v1/personas/{persona_id}/relationships/me"
    noted = await client.patch(me, headers=member, json={"notes": ["Reach me at ann@example.com."]})
    assert noted.status_code == 200, noted.text
    stated = await client.post(
        f"{me}/facts", headers=member, json={"attribute": "email", "value": "ann@example.com"}
    )
    assert stated.status_code == 200, stated.text
    stored = (await client.get(me, headers=member)).json()
    assert stored["notes"] == ["Reach me at [REDACTED:email]."]
    assert [f["value"] for f in stored["facts"] if f["attribute"] == "email"] == [
        "[REDACTED:email]"
    ]
    assert "ann@example.com" not in json.dumps(stored)


async def test_published_events_pass_dlp(conversation_fleet, client) -> None:
    tenant = await conversation_fleet.new_tenant()
    admin = await conversation_fleet.login(tenant, "admin")
    event = {
        "type": "integration.webhook_received",
        "payload": {"webhook_id": "wh-1", "delivery_id": "ann@example.com"},
    }
    async with client.stream(
        "GET", "/api/v1/events/stream", params={"type": "integration.*"}, headers=admin
    ) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        # The first message (a comment and `retry:`) is sent once the start position is fixed.
        while (await asyncio.wait_for(anext(lines), 30)).strip() != "":
            pass
        published = await client.post("/api/v1/events", headers=admin, json=event)
        assert published.status_code == 202, published.text
        data = ""
        while not data:
            line = await asyncio.wait_for(anext(lines), 30)
            if line.startswith("data:"):
                data = line[5:].strip()
    delivered = json.loads(data)
    assert delivered["id"] == published.json()["eventId"]
    assert delivered["data"]["delivery_id"] == "[REDACTED:email]"

    blocking = await conversation_fleet.new_tenant()
    await conversation_fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", blocking
    )
    strict = await conversation_fleet.login(blocking, "admin")
    refused = await client.post("/api/v1/events", headers=strict, json=event)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "sensitive_data_blocked"
    assert refused.json()["errors"][0]["pointer"] == "/payload/delivery_id"
    audit = await client.get("/api/v1/audit-events", headers=strict)
    hits = [e for e in audit.json()["auditEvents"] if e["action"] == "dlp.detected"]
    assert hits and "ann@example.com" not in json.dumps(hits)


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


async def closing_frame(socket: ClientConnection) -> tuple[int, str]:
    """The close code and reason the server ends the socket with (frames before it are read)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(socket.recv(), 60)
    assert closed.value.rcvd is not None, "the socket ended without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def ping(socket: ClientConnection, request_id: str) -> None:
    await socket.send(json.dumps({"type": "ping", "requestId": request_id}))
    assert json.loads(await socket.recv()) == {"type": "pong", "requestId": request_id}


async def test_a_websocket_closes_with_4401_when_its_token_is_revoked_mid_session(
    conversation_fleet, client, tenant
) -> None:
    for idle in (False, True):
        headers = await conversation_fleet.login(tenant, "member")
        async with connect(f"{ws_url(conversation_fleet)}?access_token={token_of(headers)}") as ws:
            await ping(ws, "before")
            revoked = await client.post("/api/v1/auth/revoke", json={"token": token_of(headers)})
            assert revoked.status_code == 204
            if not idle:
                # The next frame is not served: the socket closes instead of answering it.
                await ws.send(json.dumps({"type": "ping", "requestId": "after"}))
            code, reason = await closing_frame(ws)
        assert (code, reason) == (4401, "the access token has been revoked"), idle


async def test_a_websocket_closes_with_4401_when_its_token_expires(
    conversation_fleet, tenant
) -> None:
    ctx = conversation_fleet.ctx
    member = await conversation_fleet.login(tenant, "member")
    principal = (await ctx.tokens.verify(token_of(member))).principal
    # A token of ten seconds: long enough to be used first on a loaded machine, short enough
    # to wait for.
    short = TokenService(
        ctx.tokens.keys,
        issuer=ctx.tokens.issuer,
        audience=ctx.tokens.audience,
        ttl_seconds=10,
    )
    token = (await short.issue(principal)).token
    async with connect(f"{ws_url(conversation_fleet)}?access_token={token}") as socket:
        await ping(socket, "while-valid")
        code, reason = await closing_frame(socket)
    assert (code, reason) == (4401, "the access token has expired")


async def test_websocket_messages_pass_dlp(conversation_fleet, client, member) -> None:
    persona_id = await new_persona(client, member)
    async with connect(f"{ws_url(conversation_fleet)}?access_token={token_of(member)}") as socket:
        await socket.send(
            json.dumps(
                {
                    "type": "message",
                    "personaId": persona_id,
                    "conversationId": "ws-dlp",
                    "text": "Mail me at ann@example.com please.",
                    "options": {"maxTokens": 4},
                }
            )
        )
        await frames_until(socket, lambda f: f["type"] == "typing" and f["state"] == "stopped")
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/ws-dlp/messages", headers=member
    )
    assert messages.json()["messages"][0]["text"] == "Mail me at [REDACTED:email] please."

    blocking = await conversation_fleet.new_tenant()
    await conversation_fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", blocking
    )
    strict = await conversation_fleet.login(blocking, "member")
    strict_persona = await new_persona(client, strict)
    async with connect(f"{ws_url(conversation_fleet)}?access_token={token_of(strict)}") as socket:
        await socket.send(
            json.dumps(
                {
                    "type": "message",
                    "personaId": strict_persona,
                    "conversationId": "ws-dlp",
                    "text": "My card is 4111 1111 1111 1111.",
                    "requestId": "blocked",
                }
            )
        )
        error = json.loads(await socket.recv())
        await ping(socket, "still-open")
    assert error["type"] == "error" and error["requestId"] == "blocked"
    assert error["problem"]["code"] == "sensitive_data_blocked"
    assert error["problem"]["errors"][0]["pointer"] == "/text"
    assert "4111" not in json.dumps(error)
    nothing = await client.get(
        f"/api/v1/personas/{strict_persona}/conversations/ws-dlp/messages", headers=strict
    )
    assert nothing.status_code == 404 or nothing.json()["messages"] == [], nothing.text


async def test_websocket_messages_count_against_the_tenants_rate_limit(
    conversation_fleet, client
) -> None:
    # One token a minute after a burst of two: the bucket, not the machine's speed, decides.
    overrides = {"standard": {"perMinute": 1, "burst": 2, "concurrency": 5}}
    tenant = await conversation_fleet.new_tenant(tier="standard")
    member = await conversation_fleet.login(tenant, "member")
    persona_id = await new_persona(client, member)
    async with conversation_fleet.another_gateway(rate_limit_overrides=overrides) as limited:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=limited.http_url) as http:
            spent = [(await http.get("/api/v1/tenant", headers=member)).status_code for _ in "ab"]
            assert spent == [200, 200]
        url = limited.http_url.replace("http://", "ws://") + "/api/v1/ws"
        async with connect(f"{url}?access_token={token_of(member)}") as socket:
            await socket.send(
                json.dumps(
                    {
                        "type": "message",
                        "personaId": persona_id,
                        "conversationId": "ws-limited",
                        "text": "Hello?",
                        "requestId": "third",
                    }
                )
            )
            refused = json.loads(await socket.recv())
            await ping(socket, "still-open")
    assert refused["type"] == "error" and refused["requestId"] == "third"
    assert refused["problem"]["status"] == 429
    assert refused["problem"]["code"] == "rate_limited"


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
    # What the owner set, to be found unchanged after the stranger's writes.
    p = f"/api/v1/personas/{persona_id}"
    noted = await client.patch(f"{p}/relationships/me", headers=member, json={"notes": ["Owner."]})
    assert noted.status_code == 200, noted.text
    paired = await client.put(f"{p}/coworkers/{other}", headers=member, json={"relation": "peer"})
    assert paired.status_code == 200, paired.text
    before = {
        "persona": (await client.get(p, headers=member)).json(),
        "relationship": (await client.get(f"{p}/relationships/me", headers=member)).json(),
        "coworkers": (await client.get(f"{p}/coworkers", headers=member)).json(),
        "messages": (
            await client.get(f"{p}/conversations/private/messages", headers=member)
        ).json(),
    }
    stranger = await conversation_fleet.login(await conversation_fleet.new_tenant(), "admin")
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

    # Nothing of it changed for its owner: facts, tone, archive state, notes, co-workers and
    # the conversation itself.
    facts = (await client.get(f"{p}/relationships/me", headers=member)).json()["facts"]
    assert [(f["attribute"], f["value"]) for f in facts] == [("manager", "Priya")]
    persona = (await client.get(p, headers=member)).json()
    assert persona["tone"] == PERSONA["tone"] and persona["status"] == "active"
    assert persona == before["persona"]
    relationship = (await client.get(f"{p}/relationships/me", headers=member)).json()
    assert relationship["notes"] == ["Owner."]
    assert relationship == before["relationship"]
    coworkers = (await client.get(f"{p}/coworkers", headers=member)).json()
    assert [(c["coworkerId"], c["relation"]) for c in coworkers["coworkers"]] == [(other, "peer")]
    assert coworkers == before["coworkers"]
    messages = await client.get(f"{p}/conversations/private/messages", headers=member)
    assert messages.json() == before["messages"]
