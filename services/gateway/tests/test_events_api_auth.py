"""The events and personas routes behind the gateway's real authentication: tokens, roles, tenants.

The gateway runs as a service (its own database, Redis, NATS, a real persona peer); its public app
is built with `create_api` and served with the events and personas routers included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import nats
import pytest
import uuid6
from edrs_core.testing import HTTP_TIMEOUT, SseStream, engine_settings, running_service
from edrs_events import InMemoryBus, Priority, WireMessage
from edrs_gateway.api.app import API_PREFIX
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_gateway.store import NewTenant
from edrs_persona.app import definition as persona_definition

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
WEBHOOK = {
    "type": "integration.webhook_received",
    "payload": {"webhook_id": "w", "delivery_id": "d"},
}


@dataclass
class Gateway:
    url: str
    metrics_url: str
    ctx: GatewayContext
    bus_url: str


@pytest.fixture(scope="module", params=["nats", "memory"])
async def gateway(
    request: pytest.FixtureRequest, postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[Gateway]:
    """The gateway and its persona peer on NATS, then again on the in-process bus: nothing but
    EDRS_<SERVICE>_BUS_URL tells them apart, and every test here passes on both."""
    persona_settings = engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_gateway_events", redis_db=1
    )
    gateway_settings = engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_gateway_events_auth", redis_db=0
    )
    if request.param == "memory":
        bus_url = f"memory://gateway-events-{uuid.uuid4().hex[:8]}"
        persona_settings["bus_url"] = gateway_settings["bus_url"] = bus_url
    async with (
        running_service(persona_definition, **persona_settings) as persona,
        running_service(
            gateway_definition,
            peers={"persona": persona.grpc_address},
            key_encryption_secret="test-key-encryption-secret-0123456789",
            rate_limits_enabled=False,
            **gateway_settings,
        ) as svc,
    ):
        rt = svc.runner.runtime
        assert rt is not None
        # Stores on the gateway's own pool, to create users the way an admin would.
        yield Gateway(
            svc.http_url,
            svc.metrics_url,
            GatewayContext.build(rt.settings, rt),
            rt.settings.bus_url,
        )


async def login(gateway: Gateway, tenant_id: uuid.UUID, role: str) -> dict[str, str]:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    await gateway.ctx.users.create(
        tenant_id,
        email=email,
        display_name=role,
        password_hash=await gateway.ctx.passwords.hash(PASSWORD),
        role=role,
    )
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.url) as client:
        reply = await client.post(
            f"{API_PREFIX}/auth/token",
            json={
                "grantType": "password",
                "tenantId": str(tenant_id),
                "email": email,
                "password": PASSWORD,
            },
        )
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['accessToken']}"}


async def new_tenant(gateway: Gateway) -> uuid.UUID:
    tenant = await gateway.ctx.tenants.create(NewTenant(name=f"T {uuid.uuid4().hex[:10]}"))
    return tenant.id


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


async def test_every_route_needs_a_token(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", f"{API_PREFIX}/personas"),
        ("GET", f"{API_PREFIX}/personas/{uuid.uuid4()}"),
        ("POST", f"{API_PREFIX}/personas"),
        ("POST", f"{API_PREFIX}/events"),
        ("GET", f"{API_PREFIX}/events/stream"),
    ]:
        reply = await client.request(method, path, json={} if method == "POST" else None)
        assert reply.status_code == 401, (method, path, reply.text)
        assert reply.json()["code"] == "unauthenticated"


async def test_roles_decide_who_publishes_what(gateway: Gateway, client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(gateway)
    viewer = await login(gateway, tenant, "viewer")
    integrator = await login(gateway, tenant, "integrator")
    refused = await client.post(f"{API_PREFIX}/events", json=WEBHOOK, headers=viewer)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    task = {"type": "task.task_created", "payload": {"task_id": "t", "title": "not theirs"}}
    wrong_type = await client.post(f"{API_PREFIX}/events", json=task, headers=integrator)
    assert wrong_type.status_code == 403
    assert wrong_type.json()["code"] == "event_type_forbidden"
    accepted = await client.post(f"{API_PREFIX}/events", json=WEBHOOK, headers=integrator)
    assert accepted.status_code == 202, accepted.text


async def test_a_persona_is_seen_by_its_tenant_only(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    member = await login(gateway, await new_tenant(gateway), "member")
    outsider = await login(gateway, await new_tenant(gateway), "admin")
    created = await client.post(
        f"{API_PREFIX}/personas", json={"name": "Ada", "role": "analyst"}, headers=member
    )
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    assert (await client.get(url, headers=member)).json() == created.json()
    hidden = await client.get(url, headers=outsider)
    assert hidden.status_code == 404
    listed = await client.get(f"{API_PREFIX}/personas", headers=outsider)
    assert listed.json() == {"personas": [], "nextPageToken": ""}


async def raw_publish(bus_url: str, subject: str, body: bytes, **headers: str) -> None:
    """Publish the way docs/events.md tells other languages to: on NATS with nats-py and
    JetStream only, no EDRS package, no `edrs-*` header unless a test adds one. On the in-process
    bus, the same bytes as a wire message with no tenant header unless a test adds one."""
    if bus_url.startswith("memory://"):
        bus = InMemoryBus.shared(bus_url.removeprefix("memory://"))
        await bus.publish_wire(
            [
                WireMessage(
                    event_id=uuid.uuid4().hex,
                    event_type=subject.split(".", 3)[3],
                    priority=Priority.NORMAL,
                    body=body,
                    client_id=headers.get("edrs-client-id"),
                )
            ]
        )
        return
    nc = await nats.connect(bus_url)
    try:
        await nc.jetstream().publish(
            subject, body, headers={"Nats-Msg-Id": uuid.uuid4().hex, **headers}
        )
    finally:
        await nc.close()


def bare_envelope(tenant: str, delivery: str) -> bytes:
    """The envelope as JSON, written by hand as a publisher in another language would."""
    return json.dumps(
        {
            "event_id": str(uuid6.uuid7()),
            "event_type": "integration.webhook_received",
            "source_container": "erp-bridge",
            "occurred_at": "2026-01-02T03:04:05Z",
            "client_id": tenant,
            "payload": {"webhook_id": "w", "delivery_id": delivery},
        }
    ).encode()


async def malformed_count(gateway: Gateway) -> float:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        text = (await client.get(f"{gateway.metrics_url}/metrics")).text
    for line in text.splitlines():
        if line.startswith('edrs_event_malformed_total{reader="tail",service="gateway"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@asynccontextmanager
async def following(
    client: httpx.AsyncClient, headers: dict[str, str], last_event_id: str | None = None
) -> AsyncIterator[SseStream]:
    if last_event_id is not None:
        headers = {**headers, "Last-Event-ID": last_event_id}
    async with client.stream("GET", f"{API_PREFIX}/events/stream", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        stream = SseStream(response, response.aiter_lines())
        assert await stream.next_event() == {"retry": "2000"}  # the stream is live from here
        yield stream


async def test_a_raw_publisher_reaches_its_tenant_and_bad_messages_do_not_end_the_stream(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    tenant = await new_tenant(gateway)
    reader = await login(gateway, tenant, "viewer")
    subject = "edrs.events.normal.integration.webhook_received"
    before = await malformed_count(gateway)
    async with following(client, reader) as stream:
        await raw_publish(gateway.bus_url, subject, bare_envelope(str(tenant), "first"))
        await raw_publish(gateway.bus_url, subject, b"{not an envelope")
        # A header naming this tenant on another tenant's event is a contradiction, not a pass.
        await raw_publish(
            gateway.bus_url,
            subject,
            bare_envelope("another-tenant", "smuggled"),
            **{"edrs-client-id": str(tenant)},
        )
        await raw_publish(gateway.bus_url, subject, bare_envelope(str(tenant), "second"))
        first = await stream.next_event()
        second = await stream.next_event()
    assert first["event"] == second["event"] == "integration.webhook_received"
    assert json.loads(first["data"])["data"]["delivery_id"] == "first"
    assert json.loads(second["data"])["data"]["delivery_id"] == "second"
    assert json.loads(second["data"])["clientid"] == str(tenant)
    assert int(second["id"]) == int(first["id"]) + 3, "two bad messages lay between them"
    assert await malformed_count(gateway) == before + 2

    # Resuming after the first event passes over the bad ones again, and reaches the second.
    async with following(client, reader, last_event_id=first["id"]) as resumed:
        again = await resumed.next_event()
    assert again["id"] == second["id"]
