"""The knowledge gRPC servicer: validates requests, scopes them to the caller's tenant."""

from __future__ import annotations

from collections.abc import Mapping

from edrs_core import InvalidArgument, NotFound, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc

from edrs_knowledge.store import Document, KnowledgeStore, NewDocument

DEFAULT_SEARCH_LIMIT = 10
MAX_SEARCH_LIMIT = 50
MAX_METADATA_KEYS = 50


def to_proto(d: Document) -> knowledge_pb2.Document:
    return knowledge_pb2.Document(
        id=str(d.id),
        title=d.title,
        text=d.text,
        source=d.source,
        metadata=d.metadata,
        create_time=timestamp(d.created_at),
    )


def _metadata(values: Mapping[str, str]) -> dict[str, str]:
    if len(values) > MAX_METADATA_KEYS:
        raise InvalidArgument(
            f"metadata has {len(values)} keys; the limit is {MAX_METADATA_KEYS}", field="metadata"
        )
    cleaned: dict[str, str] = {}
    for key, value in sorted(values.items()):
        name = validation.text(key, "metadata key", max_length=100)
        if name in cleaned:
            raise InvalidArgument(
                f"metadata has the key {name!r} twice once white space is trimmed", field="metadata"
            )
        cleaned[name] = validation.text(
            value, f"metadata[{name}]", max_length=2_000, required=False
        )
    return cleaned


class KnowledgeServicer(knowledge_pb2_grpc.KnowledgeServiceServicer):
    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store

    async def IngestDocument(  # noqa: N802 (gRPC method name)
        self, request: knowledge_pb2.IngestDocumentRequest, context: ServicerContext
    ) -> knowledge_pb2.Document:
        client_id = require_client_id()
        new = NewDocument(
            title=validation.text(request.title, "title", max_length=500),
            text=validation.text(request.text, "text", max_length=1_000_000),
            source=validation.text(request.source, "source", max_length=2_000, required=False),
            metadata=_metadata(request.metadata),
        )
        return to_proto(await self.store.create(client_id, new))

    async def GetDocument(  # noqa: N802
        self, request: knowledge_pb2.GetDocumentRequest, context: ServicerContext
    ) -> knowledge_pb2.Document:
        client_id = require_client_id()
        document = await self.store.get(client_id, parse_id(request.id))
        if document is None:
            raise NotFound(f"document {request.id} not found")
        return to_proto(document)

    async def Search(  # noqa: N802
        self, request: knowledge_pb2.SearchRequest, context: ServicerContext
    ) -> knowledge_pb2.SearchResponse:
        client_id = require_client_id()
        query = validation.text(request.query, "query", max_length=2_000)
        limit = validation.limit(
            request.limit, "limit", default=DEFAULT_SEARCH_LIMIT, maximum=MAX_SEARCH_LIMIT
        )
        hits = await self.store.search(client_id, query, limit)
        return knowledge_pb2.SearchResponse(
            hits=[
                knowledge_pb2.SearchHit(
                    document_id=str(h.document_id), title=h.title, snippet=h.snippet, score=h.score
                )
                for h in hits
            ]
        )
