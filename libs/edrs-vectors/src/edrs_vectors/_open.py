"""Opening an index by engine name and address: what a service's settings choose."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from edrs_vectors._port import IndexSpec, InvalidVectorInput, VectorIndex

Engine = Literal["pgvector", "milvus", "qdrant", "weaviate"]
ENGINES: tuple[Engine, ...] = ("pgvector", "milvus", "qdrant", "weaviate")


async def open_vector_index(
    engine: str, url: str, spec: IndexSpec, *, api_key: str | None = None
) -> VectorIndex:
    """Connect to `engine` at `url` and make sure the index exists.

    `url` per engine: pgvector `postgresql://...`; milvus `http://host:19530`, or a path ending in
    `.db` for Milvus Lite; qdrant `http://host:6333`, or `path:/folder` (`path::memory:`) for
    local mode; weaviate `http://host:8080?grpc_port=50051`.
    """
    index: VectorIndex
    if engine == "pgvector":
        from edrs_vectors.pgvector import PgVectorIndex

        index = await PgVectorIndex.connect(url, spec)
    elif engine == "milvus":
        from edrs_vectors.milvus import MilvusIndex

        if url.startswith(("http://", "https://", "tcp://")):
            index = MilvusIndex.connect(url, spec, token=api_key or "")
        else:
            index = MilvusIndex.lite(url, spec)
    elif engine == "qdrant":
        from edrs_vectors.qdrant import QdrantIndex

        if url.startswith("path:"):
            index = QdrantIndex.local(url.removeprefix("path:"), spec)
        else:
            index = QdrantIndex.connect(url, spec, api_key=api_key)
    elif engine == "weaviate":
        from edrs_vectors.weaviate import WeaviateIndex

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidVectorInput(f"a Weaviate URL is http(s)://host:port, got {url!r}")
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        index = await WeaviateIndex.connect(
            spec,
            http_host=parts.hostname,
            http_port=parts.port or (443 if parts.scheme == "https" else 8080),
            grpc_port=int(query.get("grpc_port", "50051")),
            secure=parts.scheme == "https",
            api_key=api_key,
        )
    else:
        raise InvalidVectorInput(f"unknown vector engine {engine!r}; one of {', '.join(ENGINES)}")
    try:
        await index.ensure()
    except BaseException:
        await index.close()
        raise
    return index
