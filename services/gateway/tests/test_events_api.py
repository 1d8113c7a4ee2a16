"""The events and personas routes over real HTTP, against real NATS and a real persona service.

Authentication is the identity part's job; here a stand-in dependency builds the caller's
Principal from test headers, so each test picks the tenant and role it calls as.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from edrs_core.context import acting_as
from edrs_core.engines.ports import free_port
from edrs_core.grpc_client import PeerChannels
from edrs_core.http import HttpServer
from edrs_core.identity import Identity
from edrs_core.testing import (
    RunningService,
    SseStream,
    engine_settings,
    running_service,
    test_issuer,
    wait_until,
)
from edrs_events.nats_bus import NatsBus
from edrs_gateway.api.app import API_PREFIX
from edrs_gateway.api.problems import install_problem_handlers
from edrs_gateway.api.routes import events, personas
from edrs_gateway.auth.dependencies import act_as
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import get_context
from edrs_persona.app import definition as persona_definition
from fastapi import FastAPI, Request

pytestmark = pytest.mark.integration

NAMESPACE = "gwevents"
WEBHOOK = "integration.webhook_received"


async def caller(request: Request) -> Principal:
    """Test stand-in for `require(...)`: the caller named by the x-test-* headers, acted for as
    `require` does (so calls to the persona service carry its tenant)."""
    principal = Principal(
        tenant_id=request.headers.get("x-test-tenant", "tenant-a"),
        tier="standard",
        subject_id="user-1",
        subject_kind="user",
        role=request.headers.get("x-test-role", "integrator"),
    )
    act_as(principal)
    return principal


def as_(tenant: str, role: str = "integrator") -> dict[str, str]:
    return {"x-test-tenant": tenant, "x-test-role": role}


class ActAsCaller:
    """What the gateway's authentication middleware does for a verified caller: bind their fleet
    identity, so calls to services carry it; here a real token of the test issuer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        tenant = headers.get("x-test-tenant", "tenant-a")
        role = headers.get("x-test-role", "integrator")
        token = test_issuer().token(tenant, subject="user-1", role=role)
        identity = Identity(
            tenant_id=tenant, subject="user-1", role=role, kind="user", expires_at=0, token=token
        )
        with acting_as(identity):
            await self.app(scope, receive, send)


def build_app(bus: NatsBus, peers: PeerChannels) -> FastAPI:
    app = FastAPI()
    app.add_middleware(ActAsCaller)
    install_problem_handlers(app)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(personas.router, prefix=API_PREFIX)
    app.state.event_bus = bus
    context = SimpleNamespace(runtime=SimpleNamespace(peers=peers))
    app.dependency_overrides[get_context] = lambda: context
    for dependency in (
        events.publish_events,
        events.read_events,
        personas.read_personas,
        personas.write_personas,
    ):
        app.dependency_overrides[dependency] = caller
    return app


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    # A real server, not an in-process transport: SSE needs a streamed response and disconnects.
    server = HttpServer(app, "127.0.0.1", 0, "test-gateway")
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def persona(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    settings = engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_gateway_events", redis_db=1
    )
    async with running_service(persona_definition, **settings) as svc:
        yield svc


@pytest.fixture(scope="module")
async def bus(nats_engine) -> AsyncIterator[NatsBus]:
    bus = await NatsBus.connect(nats_engine.url(), namespace=NAMESPACE)
    yield bus
    await bus.js.delete_stream(bus.subjects.events_stream)
    await bus.js.delete_stream(bus.subjects.dlq_stream)
    await bus.close()


@pytest.fixture(scope="module")
async def base_url(bus: NatsBus, persona: RunningService) -> AsyncIterator[str]:
    peers = PeerChannels("gateway", {"persona": persona.grpc_address}, timeout=5.0)
    async with serving(build_app(bus, peers)) as url:
        yield url
    await peers.close()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield client


def webhook(delivery: str, **extra: Any) -> dict[str, Any]:
    return {"type": WEBHOOK, "payload": {"webhook_id": "wh-1", "delivery_id": delivery}, **extra}


@asynccontextmanager
async def sse(
    client: httpx.AsyncClient, tenant: str, *, last_event_id: str | None = None, **params: str
) -> AsyncIterator[SseStream]:
    headers = as_(tenant)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with client.stream(
        "GET", f"{API_PREFIX}/events/stream", params=params, headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = SseStream(response, response.aiter_lines())
        # The first message (a comment and `retry:`) is sent once the start position is fixed:
        # from here on, every event published is delivered.
        first = await stream.next_event()
        assert first == {"retry": "2000"}, first
        assert stream.comments and stream.comments[0].startswith("following from")
        yield stream


async def publish(client: httpx.AsyncClient, tenant: str, body: dict[str, Any]) -> str:
    reply = await client.post(f"{API_PREFIX}/events", json=body, headers=as_(tenant))
    assert reply.status_code == 202, reply.text
    return str(reply.json()["eventId"])


# --- events in -------------------------------------------------------------------------------


async def test_published_event_is_stamped_with_the_callers_tenant(
    client: httpx.AsyncClient, bus: NatsBus
) -> None:
    start = await bus.last_sequence() + 1
    event_id = await publish(client, "tenant-a", webhook("d-1", correlationId="order-7"))
    tail = bus.tail_sequenced(WEBHOOK, start_sequence=start)
    stored = (await asyncio.wait_for(anext(tail), 10)).event
    await tail.aclose()
    assert str(stored.event_id) == event_id
    assert stored.client_id == "tenant-a"
    assert stored.source_container == "gateway"
    assert stored.correlation_id == "order-7"
    assert stored.payload == {"webhook_id": "wh-1", "delivery_id": "d-1"}


@pytest.mark.parametrize("smuggled", [{"tenantId": "tenant-b"}, {"clientId": "tenant-b"}])
async def test_a_tenant_in_the_body_is_refused_and_nothing_is_published(
    client: httpx.AsyncClient, bus: NatsBus, smuggled: dict[str, str]
) -> None:
    before = await bus.last_sequence()
    reply = await client.post(
        f"{API_PREFIX}/events", json=webhook("d-2", **smuggled), headers=as_("tenant-a")
    )
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["errors"][0]["pointer"] == f"/{next(iter(smuggled))}"
    assert await bus.last_sequence() == before


async def test_invalid_payload_is_refused_naming_the_field(
    client: httpx.AsyncClient, bus: NatsBus
) -> None:
    before = await bus.last_sequence()
    body = {"type": WEBHOOK, "payload": {"webhook_id": "wh-1", "delivery_id": 42}}
    reply = await client.post(f"{API_PREFIX}/events", json=body, headers=as_("tenant-a"))
    problem = reply.json()
    assert reply.status_code == 422
    assert problem["code"] == "validation_failed"
    assert problem["errors"][0]["pointer"] == "/payload/delivery_id"
    assert "/payload/delivery_id" in problem["detail"]
    missing = {"type": WEBHOOK, "payload": {"webhook_id": "wh-1"}}
    reply = await client.post(f"{API_PREFIX}/events", json=missing, headers=as_("tenant-a"))
    assert reply.json()["errors"][0]["pointer"] == "/payload/delivery_id"
    assert await bus.last_sequence() == before


async def test_unknown_event_type_names_the_type_field(client: httpx.AsyncClient) -> None:
    body = {"type": "integration.no_such_thing", "payload": {}}
    reply = await client.post(f"{API_PREFIX}/events", json=body, headers=as_("tenant-a"))
    assert reply.status_code == 422
    assert reply.json()["errors"][0]["pointer"] == "/type"
    assert "integration.no_such_thing" in reply.json()["detail"]


async def test_integrator_may_not_publish_another_services_facts(
    client: httpx.AsyncClient, bus: NatsBus
) -> None:
    before = await bus.last_sequence()
    body = {"type": "task.task_created", "payload": {"task_id": "t1", "title": "not theirs"}}
    reply = await client.post(f"{API_PREFIX}/events", json=body, headers=as_("tenant-a"))
    assert reply.status_code == 403
    assert reply.json()["code"] == "event_type_forbidden"
    assert WEBHOOK in reply.json()["detail"], "the refusal lists what the role may publish"
    assert await bus.last_sequence() == before
    as_admin = await client.post(
        f"{API_PREFIX}/events", json=body, headers=as_("tenant-a", role="admin")
    )
    assert as_admin.status_code == 202


# --- events out (SSE) ------------------------------------------------------------------------


async def test_stream_carries_only_the_callers_tenant(client: httpx.AsyncClient) -> None:
    async with (
        sse(client, "tenant-a", type="integration.*") as stream_a,
        sse(client, "tenant-b", type="integration.*") as stream_b,
    ):
        a_id = await publish(client, "tenant-a", webhook("for-a"))
        b_id = await publish(client, "tenant-b", webhook("for-b"))
        got_b = await stream_b.next_event()
        got_a = await stream_a.next_event()
    assert json.loads(got_b["data"])["id"] == b_id
    assert json.loads(got_b["data"])["clientid"] == "tenant-b"
    assert json.loads(got_a["data"])["id"] == a_id
    assert got_a["event"] == WEBHOOK
    assert int(got_b["id"]) > int(got_a["id"]), "ids are bus sequences, shared by all tenants"


async def test_stream_type_filter_leaves_out_other_types(client: httpx.AsyncClient) -> None:
    async with sse(client, "tenant-c", type="gateway.event_published") as stream:
        published = await publish(client, "tenant-c", webhook("receipted"))
        receipt = json.loads((await stream.next_event())["data"])
    assert receipt["type"] == "gateway.event_published"
    assert receipt["data"]["published_event_id"] == published
    assert receipt["causationid"] == published


async def test_stream_priority_filter_carries_only_that_lane(client: httpx.AsyncClient) -> None:
    async with sse(client, "tenant-p", type="integration.*", priority="high") as stream:
        await publish(client, "tenant-p", webhook("ordinary", priority="normal"))
        await publish(client, "tenant-p", webhook("quiet", priority="low"))
        urgent = await publish(client, "tenant-p", webhook("urgent", priority="high"))
        got = json.loads((await stream.next_event())["data"])
    # The normal and low events were published first: the first event of the stream is the
    # high one only because the filter left them out.
    assert got["id"] == urgent
    assert got["data"]["delivery_id"] == "urgent"


async def test_reconnecting_with_last_event_id_resumes_right_after_it(
    client: httpx.AsyncClient,
) -> None:
    async with sse(client, "tenant-d", type="integration.*") as stream:
        sent = [await publish(client, "tenant-d", webhook(f"r-{n}")) for n in range(3)]
        first = await stream.next_event()
    assert json.loads(first["data"])["id"] == sent[0]
    async with sse(client, "tenant-d", last_event_id=first["id"], type="integration.*") as again:
        resumed = [json.loads((await again.next_event())["data"])["id"] for _ in range(2)]
    assert resumed == sent[1:]


async def test_malformed_last_event_id_is_refused(client: httpx.AsyncClient) -> None:
    headers = {**as_("tenant-a"), "Last-Event-ID": "yesterday"}
    reply = await client.get(f"{API_PREFIX}/events/stream", headers=headers)
    assert reply.status_code == 422
    assert reply.json()["errors"][0]["in"] == "header"


async def test_closed_stream_leaves_no_consumer_behind(
    client: httpx.AsyncClient, bus: NatsBus
) -> None:
    async def consumers() -> int:
        info = await bus.js.stream_info(bus.subjects.events_stream)
        return int(info.state.consumer_count)

    await wait_until(lambda: _eq(consumers, 0), 30, "earlier streams' consumers to go")
    async with sse(client, "tenant-e") as stream:
        await publish(client, "tenant-e", webhook("open"))
        await stream.next_event()
        assert await consumers() == 1
    await wait_until(lambda: _eq(consumers, 0), 30, "the closed stream's consumer to go")


async def _eq(value: Any, expected: int) -> bool:
    return bool(await value() == expected)


# --- personas over gRPC ----------------------------------------------------------------------


async def test_create_then_get_a_persona(client: httpx.AsyncClient) -> None:
    body = {"name": " Ada ", "role": "research analyst", "skills": ["sql"], "tone": "warm"}
    created = await client.post(f"{API_PREFIX}/personas", json=body, headers=as_("tenant-p"))
    assert created.status_code == 201, created.text
    persona = created.json()
    assert persona["name"] == "Ada"
    assert persona["status"] == "active"
    assert created.headers["location"] == f"{API_PREFIX}/personas/{persona['id']}"
    fetched = await client.get(created.headers["location"], headers=as_("tenant-p"))
    assert fetched.status_code == 200
    assert fetched.json() == persona


async def test_another_tenants_persona_is_not_found(client: httpx.AsyncClient) -> None:
    body = {"name": "Private", "role": "analyst"}
    created = await client.post(f"{API_PREFIX}/personas", json=body, headers=as_("tenant-p"))
    url = created.headers["location"]
    reply = await client.get(url, headers=as_("tenant-q"))
    assert reply.status_code == 404
    assert reply.json()["code"] == "not_found"
    assert reply.headers["content-type"] == "application/problem+json"


async def test_unknown_persona_is_404(client: httpx.AsyncClient) -> None:
    reply = await client.get(f"{API_PREFIX}/personas/{uuid.uuid4()}", headers=as_("tenant-p"))
    assert reply.status_code == 404
    assert reply.json()["code"] == "not_found"


async def test_list_pages_through_the_tenants_personas(client: httpx.AsyncClient) -> None:
    tenant = as_(f"tenant-{uuid.uuid4().hex[:8]}")
    made = []
    for n in range(5):
        body = {"name": f"P{n}", "role": "r"}
        made.append((await client.post(f"{API_PREFIX}/personas", json=body, headers=tenant)).json())
    seen: list[str] = []
    token = ""
    while True:
        params = {"pageSize": "2", **({"pageToken": token} if token else {})}
        page = (await client.get(f"{API_PREFIX}/personas", params=params, headers=tenant)).json()
        assert len(page["personas"]) <= 2
        seen += [p["id"] for p in page["personas"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == [p["id"] for p in made]


async def test_foreign_page_token_names_the_parameter(client: httpx.AsyncClient) -> None:
    params = {"pageToken": "not-a-token"}
    reply = await client.get(f"{API_PREFIX}/personas", params=params, headers=as_("tenant-p"))
    assert reply.status_code == 422
    assert reply.json()["code"] == "invalid_page_token"
    assert reply.json()["errors"][0]["pointer"] == "/pageToken"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"role": "analyst"}, "/name"),
        ({"name": "   ", "role": "analyst"}, "/name"),
        ({"name": "n" * 201, "role": "analyst"}, "/name"),
        ({"name": "Ada", "role": "analyst", "skills": ["x"] * 51}, "/skills"),
        ({"name": "Ada", "role": "analyst", "tenantId": "tenant-q"}, "/tenantId"),
    ],
)
async def test_invalid_persona_body_names_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], pointer: str
) -> None:
    reply = await client.post(f"{API_PREFIX}/personas", json=body, headers=as_("tenant-p"))
    assert reply.status_code == 422
    assert reply.json()["errors"][0]["pointer"] == pointer


async def test_unreachable_persona_service_is_503_with_retry_after(bus: NatsBus) -> None:
    # A port nothing listens on: the channel fails to connect, as when the service is down.
    peers = PeerChannels("gateway", {"persona": f"127.0.0.1:{free_port()}"}, timeout=5.0)
    async with (
        serving(build_app(bus, peers)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as down,
    ):
        reply = await down.get(f"{API_PREFIX}/personas/{uuid.uuid4()}", headers=as_("tenant-p"))
    await peers.close()
    assert reply.status_code == 503
    assert reply.json()["code"] == "upstream_unavailable"
    assert reply.headers["retry-after"] == "1"
    assert "127.0.0.1" not in reply.text, "the problem does not describe the fleet's insides"
