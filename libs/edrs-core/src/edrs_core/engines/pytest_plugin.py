"""Session fixtures ``postgres_engine``, ``redis_engine``, ``nats_engine``, ``temporal_engine``,
``openbao_engine`` for the whole repo.

Each starts its embedded engine once per session in a temporary dir, or points at an existing server
when ``EDRS_TEST_POSTGRES_URL`` / ``EDRS_TEST_REDIS_URL`` / ``EDRS_TEST_NATS_URL`` /
``EDRS_TEST_TEMPORAL_ADDRESS`` is set (OpenBao: ``EDRS_TEST_OPENBAO_URL`` with
``EDRS_TEST_OPENBAO_TOKEN``, a token that may mount and manage auth).
Load it with ``pytest_plugins = ["edrs_core.engines.pytest_plugin"]``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.openbao import EmbeddedOpenBao
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.engines.redis import EmbeddedRedis
from edrs_core.engines.temporal import EmbeddedTemporal

# Test data is thrown away, so durability is traded for speed on the 2-core CI machine.
TEST_POSTGRES_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


@contextmanager
def engine_dir(name: str) -> Iterator[Path]:
    """A fresh folder for an engine that runs as another user, outside pytest's temp folders;
    removed on exit.

    Run as root, PostgreSQL runs as its own system user and reaches its data through every
    ancestor folder. Each pytest session that starts on the machine (a nested one included) sets
    ``/tmp/pytest-of-<user>`` back to 0700, which cut a server under pytest's base folder off from
    its data mid-run (PANIC: could not open file ".../global/pg_control": Permission denied) and
    failed every later test that needed it.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"edrs-test-{name}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@dataclass(frozen=True)
class ExternalPostgres:
    """An existing PostgreSQL server given by URL; same ``url()`` as EmbeddedPostgres."""

    base_url: str

    def url(self, database: str = "postgres") -> str:
        return _with_path(self.base_url, f"/{database}")


@dataclass(frozen=True)
class ExternalRedis:
    """An existing Redis server given by URL; same ``url()`` as EmbeddedRedis."""

    base_url: str

    def url(self, db: int = 0) -> str:
        return _with_path(self.base_url, f"/{db}")


@dataclass(frozen=True)
class ExternalNats:
    """An existing NATS (JetStream enabled) server given by URL; same ``url()`` as EmbeddedNats."""

    base_url: str

    def url(self) -> str:
        return self.base_url


@dataclass(frozen=True)
class ExternalOpenBao:
    """An existing Vault or OpenBao server (KV v2 at ``secret/``); same API as EmbeddedOpenBao."""

    base_url: str
    root_token: str

    def url(self) -> str:
        return self.base_url


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[EmbeddedPostgres | ExternalPostgres]:
    """PostgreSQL with pgvector for the session; ``.url(database)`` gives a DSN."""
    external = os.environ.get("EDRS_TEST_POSTGRES_URL")
    if external:
        yield ExternalPostgres(external)
        return
    with (
        engine_dir("postgres") as folder,
        EmbeddedPostgres(folder, settings=TEST_POSTGRES_SETTINGS) as engine,
    ):
        yield engine


@pytest.fixture(scope="session")
def redis_engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedRedis | ExternalRedis]:
    """Redis for the session; ``.url(db)`` gives a URL."""
    external = os.environ.get("EDRS_TEST_REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as engine:
        yield engine


@pytest.fixture(scope="session")
def nats_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats | ExternalNats]:
    """NATS with JetStream for the session; ``.url()`` gives a URL."""
    external = os.environ.get("EDRS_TEST_NATS_URL")
    if external:
        yield ExternalNats(external)
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as engine:
        yield engine


@dataclass(frozen=True)
class ExternalTemporal:
    """An existing Temporal frontend given as ``host:port``; same ``url()`` as EmbeddedTemporal."""

    address: str

    def url(self) -> str:
        return self.address


@pytest.fixture(scope="session")
def temporal_engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedTemporal | ExternalTemporal]:
    """Temporal's server for the session (namespace ``default``); ``.url()`` gives ``host:port``.

    Tests that restart the server build their own EmbeddedTemporal rather than use this one.
    """
    external = os.environ.get("EDRS_TEST_TEMPORAL_ADDRESS")
    if external:
        yield ExternalTemporal(external)
        return
    with EmbeddedTemporal(tmp_path_factory.mktemp("temporal")) as engine:
        yield engine


@pytest.fixture(scope="session")
def openbao_engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedOpenBao | ExternalOpenBao]:
    """OpenBao for the session: ``.url()`` and ``.root_token``; KV v2 mounted at ``secret/``."""
    external = os.environ.get("EDRS_TEST_OPENBAO_URL")
    if external:
        yield ExternalOpenBao(external, os.environ.get("EDRS_TEST_OPENBAO_TOKEN", ""))
        return
    with EmbeddedOpenBao(tmp_path_factory.mktemp("openbao")) as engine:
        yield engine
