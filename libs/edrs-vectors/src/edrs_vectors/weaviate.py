"""The Weaviate adapter: one multi-tenant Weaviate collection per index, one Weaviate tenant
per EDRS tenant.

Weaviate keeps each tenant in its own shard and every query names its tenant, so the isolation
is the engine's own; the collections are a filter inside the query. Weaviate's tenant names are
limited to 64 of [A-Za-z0-9_-], so an EDRS tenant maps to a fixed-length digest of its id.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any
from uuid import UUID

import numpy as np
import weaviate
from weaviate.classes.config import Configure, Property, Tokenization, VectorDistances
from weaviate.classes.config import DataType as WeaviateType
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.collections import CollectionAsync

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
    Metric.COSINE: VectorDistances.COSINE,
    Metric.DOT: VectorDistances.DOT,
    Metric.L2: VectorDistances.L2_SQUARED,
}
_PROPERTIES = ["record_id", "collection", "document_id", "payload"]


def weaviate_tenant(tenant: str) -> str:
    """The Weaviate tenant name of an EDRS tenant."""
    return "t" + hashlib.sha256(tenant.encode()).hexdigest()[:48]


class WeaviateIndex(VectorIndex):
    def __init__(self, client: weaviate.WeaviateAsyncClient, spec: IndexSpec) -> None:
        super().__init__(spec)
        self._client = client
        # Weaviate capitalises collection names; name it so that what we ask for is what it has.
        self._name = "Vectors_" + spec.name
        self._description = json.dumps(
            {"dimension": spec.dimension, "metric": str(spec.metric)}, sort_keys=True
        )

    @classmethod
    async def connect(
        cls,
        spec: IndexSpec,
        *,
        http_host: str,
        http_port: int = 8080,
        grpc_host: str | None = None,
        grpc_port: int = 50051,
        secure: bool = False,
        api_key: str | None = None,
    ) -> WeaviateIndex:
        """A Weaviate server (its REST and gRPC ports)."""
        client = weaviate.use_async_with_custom(
            http_host=http_host,
            http_port=http_port,
            http_secure=secure,
            grpc_host=grpc_host or http_host,
            grpc_port=grpc_port,
            grpc_secure=secure,
            auth_credentials=weaviate.auth.AuthApiKey(api_key) if api_key else None,
        )
        await client.connect()
        return cls(client, spec)

    async def close(self) -> None:
        await self._client.close()

    def _tenant(self, tenant: str) -> CollectionAsync:
        return self._client.collections.get(self._name).with_tenant(weaviate_tenant(tenant))

    async def _has_tenant(self, tenant: str) -> bool:
        collection = self._client.collections.get(self._name)
        return bool(await collection.tenants.exists(weaviate_tenant(tenant)))

    async def _ensure(self) -> None:
        if await self._client.collections.exists(self._name):
            config = await self._client.collections.get(self._name).config.get()
            if config.description != self._description:
                raise IndexMismatch(
                    f"index {self.spec.name!r} exists as {config.description}; asked for "
                    f"dimension {self.spec.dimension} and metric {self.spec.metric}"
                )
            return
        keyword: dict[str, Any] = {
            "data_type": WeaviateType.TEXT,
            "tokenization": Tokenization.FIELD,
            "index_searchable": False,
        }
        await self._client.collections.create(
            self._name,
            description=self._description,
            properties=[
                Property(name="record_id", **keyword),
                Property(name="collection", **keyword),
                Property(name="document_id", **keyword),
                Property(
                    name="payload",
                    data_type=WeaviateType.TEXT,
                    index_filterable=False,
                    index_searchable=False,
                ),
            ],
            vector_config=Configure.Vectors.self_provided(
                vector_index_config=Configure.VectorIndex.hnsw(
                    distance_metric=_DISTANCE[self.spec.metric]
                )
            ),
            multi_tenancy_config=Configure.multi_tenancy(
                enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
            ),
        )

    async def _upsert(self, records: list[CheckedRecord]) -> dict[int, str]:
        failed: dict[int, str] = {}
        by_tenant: dict[str, list[int]] = {}
        for position, record in enumerate(records):
            by_tenant.setdefault(record.tenant, []).append(position)
        for tenant, positions in by_tenant.items():
            # A batch import replaces an object with the same UUID: an upsert.
            result = await self._tenant(tenant).data.insert_many(
                [
                    DataObject(
                        uuid=engine_key(tenant, records[p].id),
                        vector=records[p].vector.tolist(),
                        properties={
                            "record_id": str(records[p].id),
                            "collection": records[p].collection,
                            "document_id": records[p].document_id,
                            "payload": records[p].payload_json,
                        },
                    )
                    for p in positions
                ]
            )
            for index, error in result.errors.items():
                failed[positions[index]] = f"Weaviate refused the record: {error.message}"
        return failed

    @staticmethod
    def _filter(collections: list[str] | None, document_ids: list[str] | None) -> Any:
        parts = []
        if collections is not None:
            parts.append(Filter.by_property("collection").contains_any(collections))
        if document_ids is not None:
            parts.append(Filter.by_property("document_id").contains_any(document_ids))
        return Filter.all_of(parts) if len(parts) > 1 else (parts[0] if parts else None)

    async def _search(
        self,
        tenant: str,
        collections: list[str],
        vector: np.ndarray,
        k: int,
        document_ids: list[str] | None,
    ) -> list[VectorHit]:
        if not await self._has_tenant(tenant):
            return []
        found = await self._tenant(tenant).query.near_vector(
            near_vector=vector.tolist(),
            limit=k,
            filters=self._filter(collections, document_ids),
            return_metadata=MetadataQuery(distance=True),
            return_properties=_PROPERTIES,
        )
        hits = []
        for obj in found.objects:
            distance = float(obj.metadata.distance or 0.0)
            if self.spec.metric is Metric.COSINE:
                score = 1.0 - distance
            elif self.spec.metric is Metric.DOT:
                score = -distance  # Weaviate's dot distance is the negative inner product
            else:
                score = -math.sqrt(max(distance, 0.0))
            props = obj.properties
            hits.append(
                VectorHit(
                    id=UUID(str(props["record_id"])),
                    score=score,
                    collection=str(props["collection"]),
                    document_id=str(props["document_id"]),
                    payload=json.loads(str(props["payload"])),
                )
            )
        return hits

    async def _delete_ids(self, tenant: str, ids: list[UUID]) -> None:
        if await self._has_tenant(tenant):
            await self._tenant(tenant).data.delete_many(
                where=Filter.by_id().contains_any([engine_key(tenant, i) for i in ids])
            )

    async def _delete_where(
        self, tenant: str, collection: str, document_ids: list[str] | None
    ) -> None:
        if await self._has_tenant(tenant):
            await self._tenant(tenant).data.delete_many(
                where=self._filter([collection], document_ids)
            )

    async def _count(self, tenant: str, collection: str | None, document_id: str | None) -> int:
        if not await self._has_tenant(tenant):
            return 0
        result = await self._tenant(tenant).aggregate.over_all(
            filters=self._filter(
                None if collection is None else [collection],
                None if document_id is None else [document_id],
            ),
            total_count=True,
        )
        return int(result.total_count or 0)
