"""Engines for edrs-events tests: NATS JetStream and PostgreSQL from pip packages, or from env."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from edrs_events.testing import NatsServer, running_postgres

NATS_URL_ENV = "EDRS_TEST_NATS_URL"
POSTGRES_URL_ENV = "EDRS_TEST_POSTGRES_URL"


def start_nats(tmp_root: Path) -> NatsServer:
    return NatsServer(Path(tempfile.mkdtemp(prefix="nats-", dir=tmp_root))).start()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JetStream server shared by the session (env EDRS_TEST_NATS_URL to use your own)."""
    if os.environ.get(NATS_URL_ENV):
        yield os.environ[NATS_URL_ENV]
        return
    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream server for one test, which the test may stop and restart."""
    server = start_nats(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the session (env EDRS_TEST_POSTGRES_URL to use your own)."""
    if os.environ.get(POSTGRES_URL_ENV):
        yield os.environ[POSTGRES_URL_ENV]
        return
    with running_postgres() as url:
        yield url


def _with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + database
    return f"{base}?{query}" if query else base


@pytest.fixture
async def pg_dsn(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(postgres_url, name)
    finally:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def namespace() -> str:
    """A bus namespace of one test: its own streams and subjects on the shared server."""
    return f"t{uuid.uuid4().hex[:10]}"


async def _eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """`await eventually(async_condition, within=..., what=...)`: wait on a condition, with a deadline."""
    return _eventually
