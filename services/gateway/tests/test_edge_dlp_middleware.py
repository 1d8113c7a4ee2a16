"""DLP middleware: what the app receives under each tenant policy, and the policy read from PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any
from uuid import uuid4

import httpx
import pytest
from edrs_core.db import open_database
from edrs_core.dlp import DlpPolicy, DlpScanner, Hit
from edrs_gateway.auth.principal import Principal
from edrs_gateway.edge.dlp import DlpMiddleware
from edrs_gateway.edge.policies import TenantPolicies
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class FakeAuth:
    """Stands in for AuthenticationMiddleware: `X-Test-Tenant` becomes the principal's tenant."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = dict(scope.get("headers", [])).get(b"x-test-tenant")
        if raw:
            scope.setdefault("state", {})["principal"] = Principal(
                tenant_id=raw.decode(),
                tier="standard",
                subject_id="u1",
                subject_kind="user",
                role="member",
            )
        await self.app(scope, receive, send)


class Harness:
    def __init__(self, policies: dict[str, DlpPolicy]) -> None:
        self.policies = policies
        self.policy_reads = 0
        self.received: list[Any] = []
        self.audited: list[tuple[str | None, list[Hit]]] = []

    async def policy_of(self, tenant_id: str) -> DlpPolicy:
        self.policy_reads += 1
        return self.policies.get(tenant_id, "redact")

    async def on_hits(self, principal: Principal | None, hits: list[Hit]) -> None:
        self.audited.append((principal.tenant_id if principal else None, hits))

    def app(self) -> ASGIApp:
        async def echo(request: Request) -> JSONResponse:
            body = await request.body()
            self.received.append(body)
            return JSONResponse({"length": request.headers.get("content-length"), "got": len(body)})

        routes = [
            Route(p, echo, methods=["POST", "PUT", "PATCH", "GET"])
            for p in ("/api/v1/notes", "/api/v1/auth/token")
        ]
        return FakeAuth(
            DlpMiddleware(Starlette(routes=routes), DlpScanner(), self.policy_of, self.on_hits)
        )


@pytest.fixture
async def harness() -> AsyncIterator[tuple[httpx.AsyncClient, Harness]]:
    h = Harness({"blocker": "block"})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=h.app()), base_url="http://gw"
    ) as c:
        yield c, h


SECRET_NOTE = {"title": "hello", "body": ["call +1 415 555 2671", {"card": "4111 1111 1111 1111"}]}


async def test_redact_rewrites_the_body_before_the_app_sees_it(harness) -> None:
    client, h = harness
    reply = await client.post("/api/v1/notes", json=SECRET_NOTE, headers={"X-Test-Tenant": "t1"})
    assert reply.status_code == 200
    seen = json.loads(h.received[0])
    assert seen == {
        "title": "hello",
        "body": ["call [REDACTED:phone]", {"card": "[REDACTED:payment_card]"}],
    }
    assert reply.json() == {"length": str(len(h.received[0])), "got": len(h.received[0])}
    assert h.audited == [("t1", [Hit("phone", "/body/0"), Hit("payment_card", "/body/1/card")])]


async def test_block_refuses_naming_kinds_and_pointers_but_not_the_secret(harness) -> None:
    client, h = harness
    for method in ("POST", "PUT", "PATCH"):
        reply = await client.request(
            method, "/api/v1/notes", json=SECRET_NOTE, headers={"X-Test-Tenant": "blocker"}
        )
        assert reply.status_code == 422
        problem = reply.json()
        assert problem["code"] == "sensitive_data_blocked"
        assert "payment_card" in problem["detail"] and "phone" in problem["detail"]
        assert [(e["pointer"], e["kind"]) for e in problem["errors"]] == [
            ("/body/0", "phone"),
            ("/body/1/card", "payment_card"),
        ]
        assert "4111" not in reply.text and "555" not in reply.text
    assert h.received == []
    assert h.policy_reads == 1  # cached between requests


async def test_clean_bodies_pass_byte_for_byte(harness) -> None:
    client, h = harness
    raw = b'{"title":  "nothing to see", "n": 123456789012345678901234567890}'
    reply = await client.post(
        "/api/v1/notes",
        content=raw,
        headers={"X-Test-Tenant": "blocker", "Content-Type": "application/json"},
    )
    assert reply.status_code == 200
    assert h.received == [raw]
    assert h.audited == []


async def test_a_body_nested_too_deeply_is_a_422_not_an_internal_error(harness) -> None:
    client, h = harness
    # 64 levels pass; 65, 900 (the stdlib parser's recursion) and 5,000 (beyond orjson's 1,024
    # and Python's recursion limit) are refused, before the app or the scan sees them.
    ok = b'{"a":' * 63 + b"[1]" + b"}" * 63
    reply = await client.post(
        "/api/v1/notes",
        content=ok,
        headers={"X-Test-Tenant": "t1", "Content-Type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    for depth in (65, 900, 5_000):
        deep = b"[" * depth + b"]" * depth
        reply = await client.post(
            "/api/v1/notes",
            content=deep,
            headers={"X-Test-Tenant": "t1", "Content-Type": "application/json"},
        )
        assert reply.status_code == 422, (depth, reply.text)
        problem = reply.json()
        assert problem["code"] == "validation_failed"
        assert problem["detail"] == (
            "the JSON body nests arrays and objects more than 64 levels deep"
        )
    assert h.received == [ok]


async def test_exempt_paths_non_json_and_reads_are_not_scanned(harness) -> None:
    client, h = harness
    await client.post("/api/v1/auth/token", json={"password": "+1 415 555 2671"})
    await client.post(
        "/api/v1/notes", content=b"4111 1111 1111 1111", headers={"Content-Type": "text/plain"}
    )
    await client.request("GET", "/api/v1/notes", headers={"X-Test-Tenant": "blocker"})
    assert b"415 555 2671" in h.received[0]
    assert h.received[1] == b"4111 1111 1111 1111"
    assert h.audited == []


async def test_anonymous_requests_are_redacted(harness) -> None:
    client, h = harness
    await client.post("/api/v1/notes", json={"to": "bob@example.com"})
    assert h.received == [b'{"to":"[REDACTED:email]"}']
    assert h.audited == [(None, [Hit("email", "/to")])]


@pytest.mark.integration
async def test_tenant_policies_come_from_the_tenants_table(postgres_engine) -> None:
    pool = await open_database(
        postgres_engine.url("test_gateway_edge"), files("edrs_gateway") / "migrations", 2
    )
    try:
        strict, lenient = uuid4(), uuid4()
        await pool.execute(
            "INSERT INTO tenants (id, name, tier, dlp_policy) VALUES ($1, $2, 'standard', 'block')",
            strict,
            f"strict-{strict}",
        )
        await pool.execute(
            "INSERT INTO tenants (id, name, tier) VALUES ($1, $2, 'standard')",
            lenient,
            f"lenient-{lenient}",
        )
        policies = TenantPolicies(pool)
        assert await policies.dlp_policy(str(strict)) == "block"
        assert await policies.dlp_policy(str(lenient)) == "redact"  # the column's default
        assert await policies.dlp_policy(str(uuid4())) == "redact"
        assert await policies.dlp_policy("not-a-uuid") == "redact"
        with pytest.raises(Exception, match="check"):
            await pool.execute("UPDATE tenants SET dlp_policy = 'ignore' WHERE id = $1", strict)
    finally:
        await pool.close()
