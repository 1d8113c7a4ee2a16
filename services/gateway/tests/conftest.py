"""Gateway tests' fixtures: the part of the fleet a conversation needs, in-process on the test
engines (reasoning with the real models, memory, knowledge, persona, the gateway), and tenants and
logged-in users to drive it with."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from edrs_core.clock import Clock
from edrs_core.testing import (
    HTTP_TIMEOUT,
    RunningService,
    engine_settings,
    running_service,
    unthrottled,
)
from edrs_gateway.api.app import create_api
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_gateway.store import NewTenant
from edrs_knowledge.app import definition as knowledge_definition
from edrs_memory.app import definition as memory_definition
from edrs_persona.app import definition as persona_definition
from edrs_persona.turns import TurnGate, conversation_key
from edrs_reasoning.app import definition as reasoning_definition
from redis.asyncio import Redis

PASSWORD = "correct horse battery staple"


KEY_SECRET = "test-key-encryption-secret-0123456789"
GATEWAY_REDIS_DB, SERVICES_REDIS_DB = 12, 13


@dataclass
class ConversationFleet:
    gateway: RunningService
    ctx: GatewayContext
    # The persona service's Redis, where its conversations' turn locks live.
    services_redis_url: str
    # The knowledge service, when the fleet runs one (start_conversation_fleet does).
    knowledge: RunningService | None = None

    @property
    def url(self) -> str:
        return self.gateway.http_url

    async def new_tenant(self, tier: str = "enterprise") -> uuid.UUID:
        tenant = await self.ctx.tenants.create(
            NewTenant(name=f"T {uuid.uuid4().hex[:10]}", tier=tier)  # type: ignore[arg-type]
        )
        return tenant.id

    async def login(self, tenant_id: uuid.UUID, role: str) -> dict[str, str]:
        """The Authorization header of a new user of `role` in the tenant."""
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        await self.ctx.users.create(
            tenant_id,
            email=email,
            display_name=role,
            password_hash=await self.ctx.passwords.hash(PASSWORD),
            role=role,  # type: ignore[arg-type]
        )
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=self.url) as client:
            reply = await unthrottled(
                lambda: client.post(
                    "/api/v1/auth/token",
                    json={
                        "grantType": "password",
                        "tenantId": str(tenant_id),
                        "email": email,
                        "password": PASSWORD,
                    },
                )
            )
        assert reply.status_code == 200, reply.text
        return {"Authorization": f"Bearer {reply.json()['accessToken']}"}

    @contextlib.asynccontextmanager
    async def hold_turn(
        self, tenant_id: uuid.UUID, persona_id: str, headers: dict[str, str], conversation: str
    ) -> AsyncIterator[None]:
        """Take the conversation's turn, as a turn of another replica would, until the block
        ends: a message sent meanwhile is queued behind it, however fast the model is."""
        token = headers["Authorization"].removeprefix("Bearer ")
        user_id = (await self.ctx.tokens.verify(token)).principal.subject_id
        redis = Redis.from_url(self.services_redis_url)
        gate = TurnGate(redis, policy="queue", max_queued=10, lock_seconds=300)
        turn = await gate.reserve(
            conversation_key(str(tenant_id), persona_id, user_id, conversation), conversation
        )
        try:
            await turn.wait()
            yield
        finally:
            await turn.finish()
            await redis.aclose()

    @contextlib.asynccontextmanager
    async def another_gateway(self, **settings: object) -> AsyncIterator[RunningService]:
        """A second gateway on this one's stores and peers, with `settings` changed."""
        rt = self.gateway.runner.runtime
        assert rt is not None
        current = rt.settings
        async with running_service(
            gateway_definition,
            database_url=current.database_url,
            redis_url=current.redis_url,
            bus_url=current.bus_url,
            peers=current.peers,
            key_encryption_secret=KEY_SECRET,
            **settings,
        ) as gateway:
            yield gateway


@pytest.fixture(scope="module")
async def conversation_fleet(
    request: pytest.FixtureRequest, postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[ConversationFleet]:
    """Reasoning, memory, knowledge, persona and gateway, each on its own `test_gateway_conv_*`
    database; a test module's `REASONING_SETTINGS` (a dict) changes the reasoning service's
    settings."""
    async with start_conversation_fleet(
        postgres_engine,
        redis_engine,
        nats_engine,
        "test_gateway_conv",
        reasoning_settings=getattr(request.module, "REASONING_SETTINGS", None),
    ) as fleet:
        yield fleet


@contextlib.asynccontextmanager
async def start_conversation_fleet(
    postgres_engine,
    redis_engine,
    nats_engine,
    prefix: str,
    reasoning_settings: dict[str, object] | None = None,
    **gateway_settings: object,
) -> AsyncIterator[ConversationFleet]:
    """Each service on its own database `<prefix>_<service>`; `reasoning_settings` and
    `gateway_settings` change those services' settings."""

    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"{prefix}_{service}",
            redis_db=redis_db,
        )

    async with (
        # The models load at start-up.
        running_service(
            reasoning_definition,
            start_timeout=180.0,
            **{**engines("reasoning", SERVICES_REDIS_DB), **(reasoning_settings or {})},
        ) as reasoning,
        running_service(
            memory_definition,
            peers={"reasoning": reasoning.grpc_address},
            **engines("memory", SERVICES_REDIS_DB),
        ) as memory,
        running_service(
            knowledge_definition,
            peers={"reasoning": reasoning.grpc_address},
            **engines("knowledge", SERVICES_REDIS_DB),
        ) as knowledge,
        running_service(
            persona_definition,
            peers={
                "memory": memory.grpc_address,
                "reasoning": reasoning.grpc_address,
                "knowledge": knowledge.grpc_address,
            },
            **engines("persona", SERVICES_REDIS_DB),
        ) as persona,
        running_service(
            gateway_definition,
            peers={
                "persona": persona.grpc_address,
                "memory": memory.grpc_address,
                "reasoning": reasoning.grpc_address,
                "knowledge": knowledge.grpc_address,
            },
            key_encryption_secret=KEY_SECRET,
            **{**engines("gateway", GATEWAY_REDIS_DB), **gateway_settings},
        ) as gateway,
    ):
        rt = gateway.runner.runtime
        assert rt is not None
        # The gateway's own stores, to make tenants and users as an operator would.
        yield ConversationFleet(
            gateway,
            GatewayContext.build(rt.settings, rt),
            redis_engine.url(SERVICES_REDIS_DB),
            knowledge,
        )


@pytest.fixture
def api_of():  # type: ignore[no-untyped-def]
    """`async with api_of(gateway, clock=..., **settings) as client:` (see `open_api_of`)."""
    return open_api_of


@contextlib.asynccontextmanager
async def open_api_of(
    gateway: RunningService,
    *,
    clock: Clock | None = None,
    client_ip: str = "127.0.0.1",
    **settings: object,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a second public API built on a running gateway's stores, with `settings`
    changed and `clock` judging time: the documented behaviour of a setting or of time, tested
    without starting another gateway. Requests come from `client_ip`."""
    rt = gateway.runner.runtime
    assert rt is not None
    changed = rt.settings.model_copy(update=settings)
    # The running gateway's own bus (Runtime.bus): the second API shares it as it shares the stores.
    api = create_api(GatewayContext.build(changed, rt, clock=clock), rt.bus)
    transport = httpx.ASGITransport(app=api, client=(client_ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client
