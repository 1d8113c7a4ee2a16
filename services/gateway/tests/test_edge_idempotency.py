"""Idempotency-Key against a real Redis: a side effect happens once however often a POST is retried."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from edrs_core.testing import wait_until
from edrs_gateway.api.problems import install_problem_handlers
from edrs_gateway.auth.principal import Principal
from edrs_gateway.edge.idempotency import IdempotencyMiddleware, IdempotencyStore
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.integration


class Order(BaseModel):
    item: str


@dataclass
class World:
    created: list[str] = field(default_factory=list)
    failures_left: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0


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


def make_app(world: World, store: IdempotencyStore) -> ASGIApp:
    api = FastAPI()
    install_problem_handlers(api)

    @api.post("/api/v1/orders", status_code=201)
    async def create(order: Order) -> dict[str, str]:
        if world.failures_left:
            world.failures_left -= 1
            raise RuntimeError("the database fell over")
        world.created.append(order.item)
        return {"id": f"order-{len(world.created)}", "item": order.item}

    @api.post("/api/v1/slow-orders", status_code=201)
    async def slow(order: Order) -> dict[str, str]:
        world.waiting += 1
        await world.gate.wait()
        world.created.append(order.item)
        return {"item": order.item}

    @api.post("/api/v1/busy")
    async def busy() -> JSONResponse:
        world.created.append("busy")
        return JSONResponse({"code": "rate_limited"}, status_code=429)

    @api.get("/api/v1/orders")
    async def read() -> list[str]:
        return world.created

    return FakeAuth(IdempotencyMiddleware(api, store))


@pytest.fixture
async def setup(redis_engine) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    redis = Redis.from_url(redis_engine.url(0))
    world = World()
    store = IdempotencyStore(redis, key_prefix=f"test:edge:idem:{uuid.uuid4().hex}:")
    transport = httpx.ASGITransport(app=make_app(world, store), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, world
    world.gate.set()
    await redis.aclose()


def key_headers(key: str, tenant: str = "t1") -> dict[str, str]:
    return {"Idempotency-Key": key, "X-Test-Tenant": tenant}


async def test_a_retried_post_creates_once_and_replays_the_response(setup) -> None:
    client, world = setup
    first = await client.post("/api/v1/orders", json={"item": "book"}, headers=key_headers("k1"))
    again = await client.post("/api/v1/orders", json={"item": "book"}, headers=key_headers("k1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() == {"id": "order-1", "item": "book"}
    assert world.created == ["book"]
    assert "idempotent-replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]


async def test_the_same_key_with_another_body_is_refused(setup) -> None:
    client, world = setup
    await client.post("/api/v1/orders", json={"item": "book"}, headers=key_headers("k2"))
    other = await client.post("/api/v1/orders", json={"item": "pen"}, headers=key_headers("k2"))
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "idempotency_key_reused"
    assert world.created == ["book"]


async def test_the_same_key_on_another_path_is_refused_and_runs_nothing(setup) -> None:
    client, world = setup
    await client.post("/api/v1/orders", json={"item": "book"}, headers=key_headers("k-path"))
    elsewhere = await client.post(
        "/api/v1/slow-orders", json={"item": "book"}, headers=key_headers("k-path")
    )
    assert elsewhere.status_code == 422
    assert elsewhere.json()["code"] == "idempotency_key_reused"
    assert world.created == ["book"] and world.waiting == 0


async def test_a_kept_response_lasts_24_hours_and_then_the_key_runs_again(redis_engine) -> None:
    redis = Redis.from_url(redis_engine.url(0))
    prefix = f"test:edge:idem:{uuid.uuid4().hex}:"
    try:
        world = World()
        default = IdempotencyStore(redis, key_prefix=prefix)
        transport = httpx.ASGITransport(app=make_app(world, default))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            await client.post("/api/v1/orders", json={"item": "a"}, headers=key_headers("k-ttl"))
            replay = await client.post(
                "/api/v1/orders", json={"item": "a"}, headers=key_headers("k-ttl")
            )
        assert replay.headers["Idempotent-Replayed"] == "true"
        [kept] = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        assert 24 * 3600 - 60 <= await redis.ttl(kept) <= 24 * 3600

        # Expiry itself, with a store keeping responses one second: once Redis has dropped the
        # record (waited for, not slept on), the same key and body run again.
        short = IdempotencyStore(redis, key_prefix=f"{prefix}short:", ttl_seconds=1)
        transport = httpx.ASGITransport(app=make_app(world, short))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            first = await client.post(
                "/api/v1/orders", json={"item": "b"}, headers=key_headers("k-exp")
            )

            async def expired() -> bool:
                return not [k async for k in redis.scan_iter(match=f"{prefix}short:*")]

            await wait_until(expired, 30, "the kept response to expire")
            again = await client.post(
                "/api/v1/orders", json={"item": "b"}, headers=key_headers("k-exp")
            )
        assert "idempotent-replayed" not in again.headers
        assert again.json() != first.json()  # a new order, not the kept response
        assert world.created == ["a", "b", "b"]  # "a" once: replayed within its 24 hours
    finally:
        await redis.aclose()


async def test_keys_belong_to_one_tenant(setup) -> None:
    client, world = setup
    await client.post("/api/v1/orders", json={"item": "a"}, headers=key_headers("k3", "t1"))
    theirs = await client.post(
        "/api/v1/orders", json={"item": "a"}, headers=key_headers("k3", "t2")
    )
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert world.created == ["a", "a"]


async def test_a_repeat_while_the_first_runs_gets_409(setup) -> None:
    client, world = setup
    first = asyncio.create_task(
        client.post("/api/v1/slow-orders", json={"item": "x"}, headers=key_headers("k4"))
    )

    async def first_is_running() -> bool:
        return world.waiting == 1

    await wait_until(first_is_running, 5, "the first request to reach the route")
    repeat = await client.post("/api/v1/slow-orders", json={"item": "x"}, headers=key_headers("k4"))
    assert repeat.status_code == 409
    assert repeat.json()["code"] == "idempotency_in_progress"
    world.gate.set()
    assert (await first).status_code == 201
    replay = await client.post("/api/v1/slow-orders", json={"item": "x"}, headers=key_headers("k4"))
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert world.created == ["x"]


async def test_concurrent_retries_execute_once(setup) -> None:
    client, world = setup
    replies = await asyncio.gather(
        *(
            client.post("/api/v1/orders", json={"item": "race"}, headers=key_headers("k5"))
            for _ in range(20)
        )
    )
    assert world.created == ["race"]
    assert {r.status_code for r in replies} <= {201, 409}


async def test_a_server_error_releases_the_key_for_a_retry(setup) -> None:
    client, world = setup
    world.failures_left = 1
    failed = await client.post("/api/v1/orders", json={"item": "cup"}, headers=key_headers("k6"))
    assert failed.status_code == 500
    retried = await client.post("/api/v1/orders", json={"item": "cup"}, headers=key_headers("k6"))
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert world.created == ["cup"]


async def test_client_errors_are_stored_but_429_is_not(setup) -> None:
    client, world = setup
    invalid = await client.post("/api/v1/orders", json={"nope": 1}, headers=key_headers("k7"))
    repeat = await client.post("/api/v1/orders", json={"nope": 1}, headers=key_headers("k7"))
    assert invalid.status_code == repeat.status_code == 422
    assert repeat.headers["Idempotent-Replayed"] == "true"
    await client.post("/api/v1/busy", headers=key_headers("k8"))
    again = await client.post("/api/v1/busy", headers=key_headers("k8"))
    assert "idempotent-replayed" not in again.headers
    assert world.created == ["busy", "busy"]


async def test_without_a_key_every_post_executes(setup) -> None:
    client, world = setup
    for _ in range(2):
        await client.post("/api/v1/orders", json={"item": "free"}, headers={"X-Test-Tenant": "t1"})
    assert world.created == ["free", "free"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("k" * 256, "256 characters long"),
        ("tab\there", "printable ASCII"),
        ("", "is empty"),
    ],
)
async def test_a_malformed_key_is_refused_naming_the_header(setup, key: str, reason: str) -> None:
    client, world = setup
    reply = await client.post("/api/v1/orders", json={"item": "a"}, headers=key_headers(key))
    assert reply.status_code == 400
    assert reply.json()["code"] == "invalid_idempotency_key"
    assert "Idempotency-Key" in reply.json()["detail"]
    assert reason in reply.json()["detail"]
    assert world.created == []


async def test_a_key_of_255_characters_is_accepted(setup) -> None:
    client, _ = setup
    reply = await client.post("/api/v1/orders", json={"item": "a"}, headers=key_headers("k" * 255))
    assert reply.status_code == 201
