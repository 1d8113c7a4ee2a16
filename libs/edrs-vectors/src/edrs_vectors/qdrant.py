"""The Qdrant adapter: one Qdrant collection per index, tenant and collection as indexed payload.

The tenant and collections are a `must` filter inside the query Qdrant runs; the tenant's
payload index is marked `is_tenant`, which makes Qdrant lay out each tenant's points together.
Local mode (`QdrantIndex.local(path)`) runs the same client API in-process, for development and
the contract tests.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import numpy as np
from qdrant_client import AsyncQdrantClient, models

from edrs_vectors._port import (
    CheckedRecord,
    IndexMismatch,
    IndexSpec,
    Metric,
    VectorHit,
    VectorIndex,
    engine_key,
)

_DISTANCE = {
    Metric.COSINE: models.Distance.COSINE,
    Metric.DOT: models.Distance.DOT,
    Metric.L2: models.Distance.EUCLID,
}


def _match(key: str, values: list[str]) -> models.FieldCondition:
    if len(values) == 1:
        return models.FieldCondition(key=key, match=models.MatchValue(value=values[0]))
    return models.FieldCondition(key=key, match=models.MatchAny(any=values))


class QdrantIndex(VectorIndex):
    def __init__(self, client: AsyncQdrantClient, spec: IndexSpec, *, local: bool = False) -> None:
        super().__init__(spec)
        self._client = client
        self._name = spec.name
        # Local mode filters by scanning and ignores payload indexes (it warns if asked for one).
        self._local = local

    @classmethod
    def connect(cls, url: str, spec: IndexSpec, *, api_key: str | None = None) -> QdrantIndex:
        """A Qdrant server at `url` (http://host:6333)."""
        return cls(AsyncQdrantClient(url=url, api_key=api_key), spec)

    @classmethod
    def local(cls, path: str, spec: IndexSpec) -> QdrantIndex:
        """Qdrant's local mode on a folder (":memory:" for none): same API, in-process."""
        if path == ":memory:":
            return cls(AsyncQdrantClient(location=":memory:"), spec, local=True)
        return cls(AsyncQdrantClient(path=path), spec, local=True)

    async def close(self) -> None:
        await self._client.close()

    async def _ensure(self) -> None:
        if await self._client.collection_exists(self._name):
            info = await self._client.get_collection(self._name)
            params = info.config.params.vectors
            assert isinstance(params, models.VectorParams)
            if params.size != self.spec.dimension or params.distance != _DISTANCE[self.spec.metric]:
                raise IndexMismatch(
                    f"index {self._name!r} exists with dimension {params.size} and distance "
                    f"{params.distance}; asked for dimension {self.spec.dimension} and metric "
                    f"{self.spec.metric}"
                )
            return
        await self._client.create_collection(
            self._name,
            vectors_config=models.VectorParams(
                size=self.spec.dimension, distance=_DISTANCE[self.spec.metric]
            ),
        )
        if self._local:
            return
        await self._client.create_payload_index(
            self._name,
            "tenant",
            field_schema=models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=True
            ),
        )
        for key in ("collection", "document_id"):
            await self._client.create_payload_index(
                self._name, key, field_schema=models.PayloadSchemaType.KEYWORD
            )

    async def _upsert(self, records: list[CheckedRecord]) -> dict[int, str]:
        await self._client.upsert(
            self._name,
            points=[
                models.PointStruct(
                    id=str(engine_key(r.tenant, r.id)),
                    vector=r.vector.tolist(),
                    payload={
                        "tenant": r.tenant,
                        "id": str(r.id),
                        "collection": r.collection,
                        "document_id": r.document_id,
                        "payload": r.payload,
                    },
                )
                for r in records
            ],
            wait=True,
        )
        return {}

    def _filter(
        self,
        tenant: str,
        collections: list[str] | None,
        document_ids: list[str] | None,
    ) -> models.Filter:
        must: list[Any] = [_match("tenant", [tenant])]
        if collections is not None:
            must.append(_match("collection", collections))
        if document_ids is not None:
            must.append(_match("document_id", document_ids))
        return models.Filter(must=must)

    async def _search(
        self,
        tenant: str,
        collections: list[str],
        vector: np.ndarray,
        k: int,
        document_ids: list[str] | None,
    ) -> list[VectorHit]:
        found = await self._client.query_points(
            self._name,
            query=vector.tolist(),
            query_filter=self._filter(tenant, collections, document_ids),
            limit=k,
            with_payload=True,
        )
        hits = []
        for point in found.points:
            payload = point.payload or {}
            # Qdrant scores cosine and dot as similarities, Euclid as the distance.
            score = -point.score if self.spec.metric is Metric.L2 else point.score
            hits.append(
                VectorHit(
                    id=UUID(payload["id"]),
                    score=float(score),
                    collection=payload["collection"],
                    document_id=payload["document_id"],
                    payload=payload.get("payload") or {},
                )
            )
        return hits

    async def _delete_ids(self, tenant: str, ids: list[UUID]) -> None:
        await self._client.delete(
            self._name,
            points_selector=models.PointIdsList(points=[str(engine_key(tenant, i)) for i in ids]),
            wait=True,
        )

    async def _delete_where(
        self, tenant: str, collection: str, document_ids: list[str] | None
    ) -> None:
        await self._client.delete(
            self._name,
            points_selector=models.FilterSelector(
                filter=self._filter(tenant, [collection], document_ids)
            ),
            wait=True,
        )

    async def _count(self, tenant: str, collection: str | None, document_id: str | None) -> int:
        found = await self._client.count(
            self._name,
            count_filter=self._filter(
                tenant,
                None if collection is None else [collection],
                None if document_id is None else [document_id],
            ),
            exact=True,
        )
        return int(found.count)
