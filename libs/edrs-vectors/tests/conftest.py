"""Every adapter of the vector port on its real engine: pgvector on the embedded PostgreSQL,
Milvus on Milvus Lite, Qdrant in local mode, Weaviate in Docker (where there is one)."""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from itertools import count
from typing import Any

import pytest
from edrs_core.db import ensure_database
from edrs_vectors import IndexSpec, Metric, VectorIndex

_names = count()

OpenIndex = Callable[..., Awaitable[VectorIndex]]


def docker_available() -> bool:
    return shutil.which("docker") is not None and (
        os.path.exists("/var/run/docker.sock") or bool(os.environ.get("DOCKER_HOST"))
    )


@pytest.fixture(scope="session")
def milvus_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from edrs_vectors._pymilvus import MilvusClient

    # One Milvus Lite server for the session: starting one takes seconds.
    client = MilvusClient(uri=str(tmp_path_factory.mktemp("milvus") / "vectors.db"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def weaviate_address() -> Iterator[tuple[str, int, int]]:
    if not docker_available():
        pytest.skip("Weaviate contract tests need Docker (testcontainers); no Docker engine here")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_container_is_ready

    container = (
        DockerContainer("cr.weaviate.io/semitechnologies/weaviate:1.32.4")
        .with_exposed_ports(8080, 50051)
        .with_env("AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED", "true")
        .with_env("PERSISTENCE_DATA_PATH", "/var/lib/weaviate")
        .with_env("DEFAULT_VECTORIZER_MODULE", "none")
        .with_env("CLUSTER_HOSTNAME", "node1")
    )
    with container:
        host = container.get_container_host_ip()
        http_port = int(container.get_exposed_port(8080))

        @wait_container_is_ready(OSError)
        def ready() -> None:
            url = f"http://{host}:{http_port}/v1/.well-known/ready"
            urllib.request.urlopen(url, timeout=5).close()

        ready()
        yield host, http_port, int(container.get_exposed_port(50051))


@pytest.fixture(
    params=["pgvector", "milvus", "qdrant", pytest.param("weaviate", marks=pytest.mark.docker)]
)
async def open_index(request: pytest.FixtureRequest) -> AsyncIterator[OpenIndex]:
    """A factory of fresh, ensured indexes on the parametrised engine; dropped afterwards."""
    engine = request.param
    made: list[VectorIndex] = []
    cleanups: list[Callable[[], Awaitable[None]]] = []
    qdrant: list[Any] = []

    async def make(
        dimension: int = 16, metric: Metric = Metric.COSINE, name: str = ""
    ) -> VectorIndex:
        spec = IndexSpec(name or f"contract_{os.getpid()}_{next(_names)}", dimension, metric)
        index: VectorIndex
        if engine == "pgvector":
            from edrs_vectors.pgvector import PgVectorIndex

            dsn = str(request.getfixturevalue("postgres_engine").url("edrs_vectors_test"))
            await ensure_database(dsn)
            index = await PgVectorIndex.connect(dsn, spec)
            table = f"vectors_{spec.name}"

            async def drop_table() -> None:
                import asyncpg

                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
                finally:
                    await conn.close()

            cleanups.append(drop_table)
            made.append(index)
        elif engine == "milvus":
            from edrs_vectors.milvus import MilvusIndex

            client = request.getfixturevalue("milvus_client")
            index = MilvusIndex(client, spec, index_type="AUTOINDEX")

            async def drop_collection() -> None:
                client.drop_collection(spec.name)

            cleanups.append(drop_collection)
        elif engine == "qdrant":
            from edrs_vectors.qdrant import QdrantIndex
            from qdrant_client import AsyncQdrantClient

            # Local mode on a folder (not ":memory:"), so its persisted form is exercised too;
            # one client per test, since a folder takes one client at a time.
            if not qdrant:
                path = request.getfixturevalue("tmp_path") / "qdrant"
                qdrant.append(AsyncQdrantClient(path=str(path)))
            index = QdrantIndex(qdrant[0], spec, local=True)
        else:
            from edrs_vectors.weaviate import WeaviateIndex

            host, http_port, grpc_port = request.getfixturevalue("weaviate_address")
            index = await WeaviateIndex.connect(
                spec, http_host=host, http_port=http_port, grpc_port=grpc_port
            )
            made.append(index)

            async def drop_weaviate_collection() -> None:
                await index._client.collections.delete(index._name)  # type: ignore[attr-defined]

            cleanups.append(drop_weaviate_collection)
        await index.ensure()
        return index

    yield make
    for cleanup in cleanups:
        await cleanup()
    for index in made:
        await index.close()
    for client in qdrant:
        await client.close()
