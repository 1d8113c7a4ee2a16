"""Shared pieces of the research tests: the mini-web and fetchers wired to it the way a
deployment would be (the outbound resolve setting maps the mini-web's names to loopback, and an
operator allow rule opens those names, not loopback itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from edrs_core import testing
from edrs_core.outbound import OutboundClient
from edrs_research.config import ResearchSettings
from edrs_research.miniweb import MiniWeb
from edrs_research.web.fetch import Fetcher

MINIWEB_ALLOW = ("*.miniweb.test",)


def miniweb_settings(web: MiniWeb, **overrides: Any) -> ResearchSettings:
    """Research settings that reach the mini-web's names (only them) on loopback."""
    values: dict[str, Any] = {
        "database_url": "postgresql://unused/unused",
        "environment": "development",
        "outbound_allow": MINIWEB_ALLOW,
        "outbound_resolve": tuple(web.resolve_entries()),
        "fetch_host_interval_seconds": 0.0,
        "outbound_timeout_seconds": 60.0,
    }
    values.update(overrides)
    return ResearchSettings(**values)


@pytest.fixture
def settings_for() -> Any:
    """`settings_for(web, **settings)`: research settings reaching the mini-web's names."""
    return miniweb_settings


@pytest.fixture
async def miniweb() -> AsyncIterator[MiniWeb]:
    async with MiniWeb() as web:
        yield web


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    """Builds outbound clients from settings, and closes them after the test."""
    made: list[OutboundClient] = []

    def build(settings: ResearchSettings) -> OutboundClient:
        client = settings.outbound_client(user_agent=settings.fetch_user_agent)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


@pytest.fixture
def fetcher_for(client_for: Any) -> Any:
    """`fetcher_for(web, **settings)`: a Fetcher on the mini-web with those settings."""

    def build(web: MiniWeb, **overrides: Any) -> Fetcher:
        settings = miniweb_settings(web, **overrides)
        return Fetcher(client_for(settings), settings.fetch_limits(), tiers=settings.domain_tiers())

    return build


# The reasoning service (the local models) and the knowledge service (the research collection) the
# research service calls: one of each per test module.
@pytest.fixture(scope="module")
async def reasoning(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[Any]:
    from edrs_reasoning.app import definition as reasoning_definition

    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_research_reasoning", redis_db=12
    )
    async with testing.running_service(reasoning_definition, start_timeout=300, **settings) as svc:
        yield svc


@pytest.fixture(scope="module")
async def knowledge(
    postgres_engine, redis_engine, nats_engine, reasoning, tmp_path_factory
) -> AsyncIterator[Any]:
    from edrs_knowledge.app import definition as knowledge_definition

    folder = tmp_path_factory.mktemp("research-knowledge")
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_research_knowledge", redis_db=13
    )
    async with testing.running_service(
        knowledge_definition,
        start_timeout=120,
        peers={"reasoning": reasoning.grpc_address},
        rpc_timeout_seconds=120.0,
        vector_engine="pgvector",
        vector_url="",
        keyword_index_dir=str(folder / "keywords"),
        **settings,
    ) as svc:
        yield svc
