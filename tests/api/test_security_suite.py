"""The gateway as an attacker meets it: two real gateway processes sharing Redis and PostgreSQL,
a real persona service behind them, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_core.testing import HTTP_TIMEOUT, RunningService, running_service, wait_until
from edrs_gateway.auth.passwords import Passwords
from edrs_gateway.identity.users import UserStore
from edrs_gateway.store import NewTenant
from edrs_gateway.store.postgres import PostgresTenantStore
from edrs_persona.app import definition as persona_definition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
DATABASE = "test_security_gateway"


@dataclass
class Gateways:
    urls: list[str]
    database_url: str


@pytest.fixture(scope="module")
async def persona(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_security_persona", redis_db=1
    )
    async with running_service(persona_definition, **settings) as svc:
        yield svc


@pytest.fixture(scope="module")
def gateways(
    postgres_engine, redis_engine, nats_engine, persona, tmp_path_factory
) -> Iterator[Gateways]:
    """Two gateway processes, as two replicas behind a load balancer would run."""
    logs = tmp_path_factory.mktemp("gateways")
    procs, urls = [], []
    for i in range(2):
        http = free_port()
        env = {
            **os.environ,
            "EDRS_ENVIRONMENT": "development",
            "EDRS_GATEWAY_GRPC_PORT": str(free_port()),
            "EDRS_GATEWAY_HTTP_PORT": str(http),
            "EDRS_GATEWAY_METRICS_PORT": str(free_port()),
            "EDRS_GATEWAY_DATABASE_URL": postgres_engine.url(DATABASE),
            "EDRS_GATEWAY_REDIS_URL": redis_engine.url(0),
            "EDRS_GATEWAY_BUS_URL": nats_engine.url(),
            "EDRS_GATEWAY_PEERS": f'{{"persona": "{persona.grpc_address}"}}',
            "EDRS_GATEWAY_MAX_BODY_BYTES": str(64 * 1024),
        }
        with (logs / f"gateway-{i}.log").open("w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edrs_gateway"], env=env, stdout=log, stderr=log
                )
            )
        urls.append(f"http://127.0.0.1:{http}")
    # The persona service trusts the test issuer's JWKS: the gateways' keys join it, so the
    # identities they forward verify (as the fleet JWKS publishes them in a deployment).
    jwks = [f"{url}/api/v1/.well-known/fleet-jwks.json" for url in urls]
    try:
        for url, proc in zip(urls, procs, strict=True):
            asyncio.run(_wait_ready(url, proc))
        for url in jwks:
            testing.test_issuer().trust(url)
        yield Gateways(urls, postgres_engine.url(DATABASE))
    finally:
        for url in jwks:
            testing.test_issuer().distrust(url)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(30) == 0


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async def ready() -> bool:
        assert proc.poll() is None, f"gateway exited with {proc.returncode}"
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"{url}/health/readiness")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(ready, 60, f"gateway at {url} to be ready")


async def tenant_admin(gateways: Gateways, tier: str) -> tuple[str, str]:
    """A new tenant of `tier` with an admin, as the operator creates them; returns (id, token)."""
    pool = await asyncpg.create_pool(gateways.database_url, min_size=1, max_size=2)
    try:
        tenant = await PostgresTenantStore(pool).create(
            NewTenant(name=f"sec-{uuid.uuid4().hex[:10]}", tier=tier)
        )
        email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        await UserStore(pool).create(
            tenant.id,
            email=email,
            display_name="Admin",
            password_hash=await Passwords().hash(PASSWORD),
            role="admin",
        )
    finally:
        await pool.close()
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateways.urls[0]) as client:
        reply = await client.post(
            "/api/v1/auth/token",
            json={
                "grantType": "password",
                "tenantId": str(tenant.id),
                "email": email,
                "password": PASSWORD,
            },
        )
    assert reply.status_code == 200, reply.text
    return str(tenant.id), reply.json()["accessToken"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_burst_split_across_two_gateways_shares_one_bucket(gateways) -> None:
    _, token = await tenant_admin(gateways, "standard")  # burst 10, 60/min, 5 concurrent
    clients = [
        httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=url, headers=bearer(token))
        for url in gateways.urls
    ]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = []
        for i in range(24):  # one after the other, alternating between the two processes
            replies.append(await clients[i % 2].get("/api/v1/tenant"))
        elapsed = loop.time() - started
    finally:
        for client in clients:
            await client.aclose()
    statuses = Counter(r.status_code for r in replies)
    # The bucket holds 10 and refills one a second: whatever the split, the two processes
    # together never let more through than that.
    assert statuses[200] >= 10
    assert statuses[200] <= 10 + int(elapsed) + 1, (statuses, elapsed)
    assert statuses[429] == 24 - statuses[200]
    for reply in replies:
        assert reply.headers["X-RateLimit-Limit"] == "10"
        assert 0 <= int(reply.headers["X-RateLimit-Remaining"]) <= 10
        assert int(reply.headers["X-RateLimit-Reset"]) >= 0
    refused = [r for r in replies if r.status_code == 429]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert all(r.headers["X-RateLimit-Remaining"] == "0" for r in refused)
    assert refused[0].headers["content-type"] == "application/problem+json"
    assert refused[0].json()["code"] == "rate_limited"


async def test_concurrent_burst_on_two_gateways_never_exceeds_the_bucket(gateways) -> None:
    _, token = await tenant_admin(gateways, "standard")
    clients = [
        httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=url, headers=bearer(token))
        for url in gateways.urls
    ]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = await asyncio.gather(*(clients[i % 2].get("/api/v1/tenant") for i in range(40)))
        elapsed = loop.time() - started
    finally:
        for client in clients:
            await client.aclose()
    statuses = Counter(r.status_code for r in replies)
    assert set(statuses) <= {200, 429}
    assert 1 <= statuses[200] <= 10 + int(elapsed) + 1, (statuses, elapsed)


async def test_oversized_body_is_413(gateways) -> None:
    _, token = await tenant_admin(gateways, "enterprise")
    async with httpx.AsyncClient(
        timeout=HTTP_TIMEOUT, base_url=gateways.urls[1], headers=bearer(token)
    ) as client:
        reply = await client.post(
            "/api/v1/personas", json={"name": "Big", "role": "r", "instructions": "x" * 70_000}
        )
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"


async def test_a_tenant_header_from_the_client_is_ignored(gateways) -> None:
    tenant_a, token_a = await tenant_admin(gateways, "enterprise")
    tenant_b, token_b = await tenant_admin(gateways, "enterprise")
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateways.urls[0]) as client:
        made = await client.post(
            "/api/v1/personas", json={"name": "B's", "role": "r"}, headers=bearer(token_b)
        )
        assert made.status_code == 201, made.text
        # Tenant A claims to be tenant B through the internal metadata header.
        smuggled = await client.get(
            f"/api/v1/personas/{made.json()['id']}",
            headers={**bearer(token_a), "x-edrs-client-id": tenant_b},
        )
        own = await client.get(
            "/api/v1/tenant", headers={**bearer(token_a), "x-edrs-client-id": tenant_b}
        )
    assert smuggled.status_code == 404
    assert own.json()["id"] == tenant_a


async def test_security_headers_on_api_responses(gateways) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateways.urls[0]) as client:
        reply = await client.get("/api/v1/tenant")
    assert reply.status_code == 401
    assert reply.headers["Strict-Transport-Security"].startswith("max-age=")
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


async def test_idempotency_key_replays_instead_of_creating_twice(gateways) -> None:
    _, token = await tenant_admin(gateways, "enterprise")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"name": "Once", "role": "Planner"}
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, headers=bearer(token)) as client:
        first = await client.post(f"{gateways.urls[0]}/api/v1/personas", json=body, headers=key)
        again = await client.post(f"{gateways.urls[1]}/api/v1/personas", json=body, headers=key)
        other = await client.post(
            f"{gateways.urls[0]}/api/v1/personas", json={**body, "name": "Twice"}, headers=key
        )
        listed = await client.get(f"{gateways.urls[0]}/api/v1/personas")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert [p["name"] for p in listed.json()["personas"]] == ["Once"]


async def test_sensitive_text_is_redacted_before_the_persona_service_and_audited(gateways) -> None:
    _, token = await tenant_admin(gateways, "enterprise")
    secret = "4111 1111 1111 1111"
    async with httpx.AsyncClient(
        timeout=HTTP_TIMEOUT, base_url=gateways.urls[0], headers=bearer(token)
    ) as client:
        made = await client.post(
            "/api/v1/personas",
            json={"name": "Clerk", "role": "r", "instructions": f"Pay with card {secret} today"},
        )
        audit = await client.get("/api/v1/audit-events")
    assert made.status_code == 201, made.text
    assert secret not in made.text
    assert "[REDACTED:payment_card]" in made.json()["instructions"]
    hits = [e for e in audit.json()["auditEvents"] if e["action"] == "dlp.detected"]
    assert hits and secret not in audit.text
