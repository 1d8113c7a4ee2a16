"""The public API's documentation is served beside the health endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from edrs_core.testing import HTTP_TIMEOUT, RunningService, running_service
from edrs_gateway.app import definition

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def gateway(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    async with running_service(
        definition,
        database_url=postgres_engine.url("test_gateway_api"),
        redis_url=redis_engine.url(0),
        bus_url=nats_engine.url(),
        # Outside development the gateway refuses its default key-encryption secret.
        key_encryption_secret="test-key-encryption-secret-0123456789",
    ) as svc:
        yield svc


async def test_openapi_docs_and_health_share_the_http_port(gateway) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as client:
        spec = (await client.get("/api/openapi.json")).json()
        docs = await client.get("/api/docs")
        redoc = await client.get("/api/redoc")
        live = await client.get("/health/liveness")
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] == "EDRS API"
    assert "swagger-ui" in docs.text
    assert redoc.status_code == 200
    assert live.json() == {"status": "alive"}


async def test_unknown_route_is_a_problem_document(gateway) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as client:
        reply = await client.get("/api/v1/no-such-thing")
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "not_found"


async def test_a_path_no_route_can_match_is_still_a_problem_document(gateway) -> None:
    # A newline in a path segment matches no route pattern at all, not even the API's mount.
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as client:
        reply = await client.get(
            "/api/v1/users/%3F%C2%AD%5C%F3%93%9C%B6%0A%F2%8F%A2%94%C2%8E%F0%B9%A8%8D"
        )
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert body["code"] == "not_found" and body["status"] == 404, body


async def test_every_event_stream_route_documents_its_events(gateway) -> None:
    """The SSE routes' OpenAPI: one event as the schema, the names of the events the route sends
    plus `error`, and `data` described as JSON text."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as client:
        spec = (await client.get("/api/openapi.json")).json()
    for path, events in (
        ("/api/v1/runs/{runId}/events", ["step", "finished", "error"]),
        ("/api/v1/research/jobs/{jobId}/events", ["update", "ended", "error"]),
    ):
        content = spec["paths"][path]["get"]["responses"]["200"]["content"]
        schema = content["text/event-stream"]["schema"]
        assert schema["properties"]["event"]["enum"] == events, path
        assert schema["properties"]["data"]["contentMediaType"] == "application/json", path
