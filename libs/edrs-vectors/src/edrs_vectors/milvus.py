"""The Milvus adapter: one Milvus collection per index, the tenant as its partition key.

The tenant and collections are a boolean expression inside the search Milvus runs, each name
written as an escaped string literal (Milvus Lite has no expression parameters). Making the tenant the partition
key lets Milvus search only the partitions holding that tenant's vectors. Milvus Lite
(`MilvusIndex.lite(path)`) runs the same client API on a local file, for development and the
contract tests. pymilvus is synchronous: each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

import numpy as np

from edrs_vectors._port import (
    MAX_NAME_LENGTH,
    CheckedRecord,
    IndexMismatch,
    IndexSpec,
    Metric,
    VectorHit,
    VectorIndex,
    engine_key,
)
from edrs_vectors._pymilvus import DataType, MilvusClient

T = TypeVar("T")

_METRIC = {Metric.COSINE: "COSINE", Metric.DOT: "IP", Metric.L2: "L2"}
# VARCHAR lengths count bytes: room for names of MAX_NAME_LENGTH characters of any script.
_NAME_BYTES = 4 * MAX_NAME_LENGTH
_OUTPUT = ["record_id", "collection", "document_id", "payload"]


class MilvusIndex(VectorIndex):
    def __init__(self, client: MilvusClient, spec: IndexSpec, *, index_type: str) -> None:
        super().__init__(spec)
        self._client = client
        self._name = spec.name
        self._index_type = index_type

    @classmethod
    def connect(
        cls, uri: str, spec: IndexSpec, *, token: str = "", index_type: str = "HNSW"
    ) -> MilvusIndex:
        """A Milvus server at `uri` (http://host:19530)."""
        return cls(MilvusClient(uri=uri, token=token), spec, index_type=index_type)

    @classmethod
    def lite(cls, path: str, spec: IndexSpec) -> MilvusIndex:
        """Milvus Lite on a local file (`path` ends in .db); it builds FLAT-family indexes only."""
        return cls(MilvusClient(uri=path), spec, index_type="AUTOINDEX")

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(partial(method, *args, **kwargs))

    async def close(self) -> None:
        await self._call(self._client.close)

    async def _ensure(self) -> None:
        if await self._call(self._client.has_collection, self._name):
            description = await self._call(self._client.describe_collection, self._name)
            dimension = next(
                int(f["params"]["dim"]) for f in description["fields"] if f["name"] == "vector"
            )
            index = await self._call(self._client.describe_index, self._name, "vector")
            metric = index.get("metric_type")
            if dimension != self.spec.dimension or metric != _METRIC[self.spec.metric]:
                raise IndexMismatch(
                    f"index {self._name!r} exists with dimension {dimension} and metric "
                    f"{metric}; asked for dimension {self.spec.dimension} and metric "
                    f"{self.spec.metric}"
                )
            await self._call(self._client.load_collection, self._name)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, max_length=36, is_primary=True)
        schema.add_field("tenant", DataType.VARCHAR, max_length=_NAME_BYTES, is_partition_key=True)
        schema.add_field("record_id", DataType.VARCHAR, max_length=36)
        schema.add_field("collection", DataType.VARCHAR, max_length=_NAME_BYTES)
        schema.add_field("document_id", DataType.VARCHAR, max_length=_NAME_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.spec.dimension)
        schema.add_field("payload", DataType.JSON)
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            field_name="vector", index_type=self._index_type, metric_type=_METRIC[self.spec.metric]
        )
        await self._call(
            self._client.create_collection,
            self._name,
            schema=schema,
            index_params=index_params,
            # A search right after an upsert sees it: the ingestion path relies on that.
            consistency_level="Strong",
        )

    async def _upsert(self, records: list[CheckedRecord]) -> dict[int, str]:
        await self._call(
            self._client.upsert,
            self._name,
            [
                {
                    "key": str(engine_key(r.tenant, r.id)),
                    "tenant": r.tenant,
                    "record_id": str(r.id),
                    "collection": r.collection,
                    "document_id": r.document_id,
                    "vector": r.vector.tolist(),
                    "payload": r.payload,
                }
                for r in records
            ],
        )
        return {}

    @staticmethod
    def _filter(tenant: str, collections: list[str] | None, document_ids: list[str] | None) -> str:
        expression = f"tenant == {_string(tenant)}"
        if collections is not None:
            expression += f" and collection in [{', '.join(map(_string, collections))}]"
        if document_ids is not None:
            expression += f" and document_id in [{', '.join(map(_string, document_ids))}]"
        return expression

    async def _search(
        self,
        tenant: str,
        collections: list[str],
        vector: np.ndarray,
        k: int,
        document_ids: list[str] | None,
    ) -> list[VectorHit]:
        expression = self._filter(tenant, collections, document_ids)
        found = await self._call(
            self._client.search,
            self._name,
            data=[vector.tolist()],
            anns_field="vector",
            limit=k,
            filter=expression,
            output_fields=_OUTPUT,
            search_params={"metric_type": _METRIC[self.spec.metric]},
            consistency_level="Strong",
        )
        hits = []
        for hit in found[0]:
            entity = hit["entity"]
            distance = float(hit["distance"])
            # Milvus gives COSINE and IP as similarities and L2 as the squared distance.
            score = -math.sqrt(max(distance, 0.0)) if self.spec.metric is Metric.L2 else distance
            hits.append(
                VectorHit(
                    id=UUID(entity["record_id"]),
                    score=score,
                    collection=entity["collection"],
                    document_id=entity["document_id"],
                    payload=dict(entity["payload"] or {}),
                )
            )
        return hits

    async def _delete_ids(self, tenant: str, ids: list[UUID]) -> None:
        await self._call(
            self._client.delete, self._name, ids=[str(engine_key(tenant, i)) for i in ids]
        )

    async def _delete_where(
        self, tenant: str, collection: str, document_ids: list[str] | None
    ) -> None:
        await self._call(
            self._client.delete, self._name, filter=self._filter(tenant, [collection], document_ids)
        )

    async def _count(self, tenant: str, collection: str | None, document_id: str | None) -> int:
        expression = self._filter(
            tenant,
            None if collection is None else [collection],
            None if document_id is None else [document_id],
        )
        rows = await self._call(
            self._client.query,
            self._name,
            filter=expression,
            output_fields=["count(*)"],
            consistency_level="Strong",
        )
        return int(rows[0]["count(*)"])


def _string(value: str) -> str:
    """A Milvus expression string literal: its grammar takes C-style escapes, which JSON's are
    (the port refuses NUL in names, the one character JSON escaping would not make safe)."""
    return json.dumps(value, ensure_ascii=False)
