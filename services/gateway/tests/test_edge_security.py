"""Security headers, docs CSP, body limit, request timeouts and CORS, as a client sees them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from edrs_core.testing import wait_until
from edrs_gateway.api.problems import install_problem_handlers
from edrs_gateway.config import GatewaySettings
from edrs_gateway.edge.security import (
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    TimeoutMiddleware,
    cors_middleware,
)
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.types import ASGIApp


@dataclass
class Routes:
    """What the routes of the test API did, and the gates that hold the slow ones."""

    calls: list[str] = field(default_factory=list)
    # Set by a test once a request that started later has timed out: the held routes have then
    # run longer than the timeout, whatever the machine's speed.
    release: asyncio.Event = field(default_factory=asyncio.Event)


def make_api(routes: Routes) -> FastAPI:
    api = FastAPI(docs_url="/api/docs", redoc_url="/api/redoc", openapi_url="/api/openapi.json")
    install_problem_handlers(api)
    calls = routes.calls

    @api.get("/api/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @api.get("/api/v1/framed")
    async def framed() -> PlainTextResponse:
        return PlainTextResponse("x", headers={"X-Frame-Options": "SAMEORIGIN"})

    @api.post("/api/v1/upload")
    async def upload(request: Request) -> dict[str, int]:
        calls.append("upload")
        return {"size": len(await request.body())}

    @api.get("/api/v1/slow")
    async def slow() -> dict[str, str]:
        calls.append("slow")
        try:
            await asyncio.Event().wait()  # never set: only a cancellation ends this route
        except asyncio.CancelledError:
            calls.append("slow cancelled")
            raise
        calls.append("slow finished")
        return {"late": "yes"}

    @api.get("/api/v1/events/stream")
    async def exempt_stream() -> dict[str, str]:
        calls.append("exempt started")
        await routes.release.wait()
        return {"exempt": "yes"}

    @api.get("/api/v1/ticker")
    async def ticker() -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            yield b"data: 0\n\n"
            calls.append("ticker started")
            await routes.release.wait()
            for i in (1, 2):
                yield f"data: {i}\n\n".encode()

        return StreamingResponse(ticks(), media_type="text/event-stream")

    return api


# Far longer than any route of the fixture takes on a loaded machine; the timeout tests use
# their own stack with a short timeout and routes that never finish on their own.
GENEROUS_TIMEOUT = 60.0
SHORT_TIMEOUT = 0.1


def stack(api: ASGIApp, timeout: float = GENEROUS_TIMEOUT) -> ASGIApp:
    timed = TimeoutMiddleware(api, timeout_seconds=timeout)
    return SecurityHeadersMiddleware(BodyLimitMiddleware(timed, max_bytes=1024))


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    routes = Routes()
    transport = httpx.ASGITransport(app=stack(make_api(routes)), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c, routes.calls


@pytest.fixture
async def timed_client() -> AsyncIterator[tuple[httpx.AsyncClient, Routes]]:
    routes = Routes()
    app = stack(make_api(routes), timeout=SHORT_TIMEOUT)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c, routes
    routes.release.set()


async def test_api_responses_carry_the_security_headers(client) -> None:
    c, _ = client
    for reply in (await c.get("/api/v1/ping"), await c.get("/api/v1/nothing-here")):
        assert reply.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        assert reply.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
    assert (await c.get("/api/v1/framed")).headers["X-Frame-Options"] == "SAMEORIGIN"


def _csp_sources(csp: str, directive: str) -> list[str]:
    for part in csp.split(";"):
        name, *values = part.split()
        if name == directive:
            return values
    return []


@pytest.mark.parametrize("path", ["/api/docs", "/api/redoc"])
async def test_docs_pages_may_load_everything_they_reference(client, path: str) -> None:
    c, _ = client
    reply = await c.get(path)
    csp = reply.headers["Content-Security-Policy"]
    html = reply.text
    for src in re.findall(r'<script src="([^"]+)"', html):
        assert any(src.startswith(s) for s in _csp_sources(csp, "script-src")), src
    for inline in re.findall(r"<script>(.*?)</script>", html, re.S):
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in _csp_sources(csp, "script-src")
    for href in re.findall(r'<link[^>]*href="([^"]+)"', html):
        allowed = _csp_sources(csp, "style-src") + _csp_sources(csp, "img-src")
        assert any(href.startswith(s) for s in allowed if s.startswith("https://")), href
    assert "'self'" in _csp_sources(csp, "connect-src")  # the UI fetches /api/openapi.json
    assert "'unsafe-inline'" not in _csp_sources(csp, "script-src")
    assert reply.headers["X-Frame-Options"] == "DENY"


async def test_a_declared_oversized_body_is_refused_without_running_the_route(client) -> None:
    c, calls = client
    reply = await c.post("/api/v1/upload", content=b"x" * 1025)
    assert reply.status_code == 413
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "payload_too_large"
    assert calls == []


async def test_a_chunked_oversized_body_is_refused_while_streaming(client) -> None:
    c, _ = client

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 200

    reply = await c.post("/api/v1/upload", content=chunks())
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_body_at_the_limit_is_accepted(client) -> None:
    c, _ = client

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"z" * 256

    assert (await c.post("/api/v1/upload", content=b"x" * 1024)).json() == {"size": 1024}
    assert (await c.post("/api/v1/upload", content=chunks())).json() == {"size": 1024}


async def test_paths_matching_a_pattern_have_their_own_limit_and_the_413_names_it() -> None:
    routes = Routes()
    api = make_api(routes)

    @api.post("/api/v1/collections/{cid}/files")
    async def big_upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app = BodyLimitMiddleware(
        api,
        max_bytes=1024,
        pattern_limits=[(re.compile(r"/api/v1/collections/[^/]+/files"), 4096)],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"q" * 512

    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        assert (await c.post("/api/v1/collections/c1/files", content=b"x" * 4096)).json() == {
            "size": 4096
        }
        assert (await c.post("/api/v1/collections/c1/files", content=chunks(8))).json() == {
            "size": 4096
        }
        for body in (b"x" * 4097, chunks(9)):
            refused = await c.post("/api/v1/collections/c1/files", content=body)
            assert refused.status_code == 413
            assert refused.json()["limit"] == 4096
            assert "larger than 4096 bytes" in refused.json()["detail"]
        # Only the matching paths: the rest keep the general limit, and a longer path is no match.
        other = await c.post("/api/v1/upload", content=b"x" * 2000)
        assert (other.status_code, other.json()["limit"]) == (413, 1024)
        deeper = await c.post("/api/v1/collections/c1/files/x", content=b"x" * 2000)
        assert deeper.status_code == 413


async def test_a_slow_request_gets_504_and_its_route_is_cancelled(timed_client) -> None:
    c, routes = timed_client
    reply = await c.get("/api/v1/slow")
    assert reply.status_code == 504
    assert reply.json()["code"] == "timeout"
    assert reply.headers["Strict-Transport-Security"]
    # The route was cancelled before the 504 was sent, not left running: an orphaned route
    # would still be waiting, with no "slow cancelled" recorded.
    assert routes.calls == ["slow", "slow cancelled"]


async def test_streams_and_exempt_paths_are_not_timed(timed_client) -> None:
    c, routes = timed_client

    async def ticker() -> httpx.Response:
        return await c.get("/api/v1/ticker")

    exempt = asyncio.create_task(c.get("/api/v1/events/stream"))
    stream = asyncio.create_task(ticker())

    async def both_running() -> bool:
        return {"exempt started", "ticker started"} <= set(routes.calls)

    await wait_until(both_running, 30, "the exempt route and the stream to start")
    # A request started after both has timed out, so both have outlived the timeout.
    assert (await c.get("/api/v1/slow")).status_code == 504
    assert not exempt.done() and not stream.done()
    routes.release.set()
    assert (await exempt).json() == {"exempt": "yes"}
    ticked = await stream
    assert ticked.status_code == 200
    assert ticked.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


def _settings(**values: object) -> GatewaySettings:
    return GatewaySettings(
        environment="development", database_url="postgresql://x/y", redis_url="redis://x", **values
    )


def test_settings_defaults_and_env_forms(monkeypatch) -> None:
    defaults = _settings()
    assert defaults.max_body_bytes == 10 * 1024 * 1024
    assert defaults.cors_origins == []
    assert defaults.rate_limits_enabled is True
    monkeypatch.setenv("EDRS_GATEWAY_CORS_ORIGINS", "https://a.example, https://b.example")
    assert _settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("EDRS_GATEWAY_CORS_ORIGINS", '["https://c.example"]')
    assert _settings().cors_origins == ["https://c.example"]


async def test_cors_follows_the_settings() -> None:
    assert cors_middleware(_settings()) is None
    middleware = cors_middleware(_settings(cors_origins=["https://console.example"]))
    assert middleware is not None
    api = FastAPI(middleware=[middleware])

    @api.get("/api/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        preflight = await c.options(
            "/api/v1/ping",
            headers={
                "Origin": "https://console.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Idempotency-Key",
            },
        )
        foreign = await c.get("/api/v1/ping", headers={"Origin": "https://evil.example"})
        allowed = await c.get("/api/v1/ping", headers={"Origin": "https://console.example"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://console.example"
    assert "access-control-allow-origin" not in foreign.headers
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://console.example"
    assert "X-RateLimit-Remaining" in allowed.headers["Access-Control-Expose-Headers"]
