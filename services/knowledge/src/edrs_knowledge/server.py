"""The knowledge gRPC servicer: validates requests, scopes them to the caller's tenant, and hands
them to the store, the ingestion pipeline and the searcher."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from uuid import UUID

from edrs_core import InvalidArgument, ServicerContext, validation
from edrs_core.context import identity_var, require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc

from edrs_knowledge.gaps import Gap, SearchLog, SearchRecord
from edrs_knowledge.ingestion import Ingestion
from edrs_knowledge.search import Mode, Result, Searcher
from edrs_knowledge.store import (
    Collection,
    Document,
    DocumentInput,
    Entity,
    ImportItem,
    ImportJob,
    Outcome,
    PassageRow,
    Relation,
    State,
    Version,
)
from edrs_knowledge.store.postgres import PostgresKnowledgeStore

DEFAULT_K = 10
MAX_K = 100
MAX_METADATA_KEYS = 50
MAX_FILTERS = 20
MAX_COLLECTIONS = 100
# The largest piece ReadDocumentText returns, in characters.
MAX_TEXT_READ = 1_000_000
MAX_IMPORT_DOCUMENTS = 10_000
DEFAULT_GAP_WINDOW_DAYS = 30
MAX_GAP_WINDOW_DAYS = 365

_COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

_STATES = {
    State.QUEUED: knowledge_pb2.DOCUMENT_STATE_QUEUED,
    State.PARSING: knowledge_pb2.DOCUMENT_STATE_PARSING,
    State.EMBEDDING: knowledge_pb2.DOCUMENT_STATE_EMBEDDING,
    State.INDEXED: knowledge_pb2.DOCUMENT_STATE_INDEXED,
    State.FAILED: knowledge_pb2.DOCUMENT_STATE_FAILED,
}
_STATE_FILTER = {
    knowledge_pb2.DOCUMENT_STATE_UNSPECIFIED: None,
    **{number: state for state, number in _STATES.items()},
}
_OUTCOMES = {
    Outcome.CREATED: knowledge_pb2.INGEST_OUTCOME_CREATED,
    Outcome.UPDATED: knowledge_pb2.INGEST_OUTCOME_UPDATED,
    Outcome.UNCHANGED: knowledge_pb2.INGEST_OUTCOME_UNCHANGED,
}
_MODES = {
    knowledge_pb2.SEARCH_MODE_UNSPECIFIED: Mode.HYBRID,
    knowledge_pb2.SEARCH_MODE_HYBRID: Mode.HYBRID,
    knowledge_pb2.SEARCH_MODE_VECTOR: Mode.VECTOR,
    knowledge_pb2.SEARCH_MODE_KEYWORD: Mode.KEYWORD,
}
_ORIGINS = {
    knowledge_pb2.SEARCH_ORIGIN_UNSPECIFIED: "api",
    knowledge_pb2.SEARCH_ORIGIN_API: "api",
    knowledge_pb2.SEARCH_ORIGIN_TURN: "turn",
    knowledge_pb2.SEARCH_ORIGIN_RESEARCH: "research",
}
_ORIGIN_NUMBERS = {
    "api": knowledge_pb2.SEARCH_ORIGIN_API,
    "turn": knowledge_pb2.SEARCH_ORIGIN_TURN,
    "research": knowledge_pb2.SEARCH_ORIGIN_RESEARCH,
}
_MODE_NUMBERS = {
    Mode.HYBRID: knowledge_pb2.SEARCH_MODE_HYBRID,
    Mode.VECTOR: knowledge_pb2.SEARCH_MODE_VECTOR,
    Mode.KEYWORD: knowledge_pb2.SEARCH_MODE_KEYWORD,
}


# Responses


def collection_proto(c: Collection) -> knowledge_pb2.Collection:
    return knowledge_pb2.Collection(
        id=str(c.id),
        name=c.name,
        description=c.description,
        document_count=c.document_count,
        chunk_count=c.chunk_count,
        create_time=timestamp(c.created_at),
    )


def _failure(code: str, message: str) -> knowledge_pb2.DocumentFailure | None:
    return knowledge_pb2.DocumentFailure(code=code, message=message) if code else None


def document_proto(d: Document) -> knowledge_pb2.Document:
    return knowledge_pb2.Document(
        id=str(d.id),
        collection_id=str(d.collection_id),
        external_id=d.external_id or "",
        title=d.title,
        source=d.source,
        metadata=d.metadata,
        state=_STATES[d.state],
        failure=_failure(d.failure_code, d.failure_message),
        version=d.version,
        format=d.format,
        size_bytes=d.size_bytes,
        page_count=d.page_count,
        chunk_count=d.chunk_count,
        text_length=d.text_length,
        content_hash=d.content_hash,
        create_time=timestamp(d.created_at),
        update_time=timestamp(d.updated_at),
        redactions=d.redactions,
    )


def version_proto(v: Version) -> knowledge_pb2.DocumentVersion:
    return knowledge_pb2.DocumentVersion(
        document_id=str(v.document_id),
        version=v.version,
        title=v.title,
        metadata=v.metadata,
        state=_STATES[v.state],
        failure=_failure(v.failure_code, v.failure_message),
        format=v.format,
        size_bytes=v.size_bytes,
        page_count=v.page_count,
        chunk_count=v.chunk_count,
        text_length=v.text_length,
        content_hash=v.content_hash,
        chunks_embedded=v.chunks_embedded,
        chunks_reused=v.chunks_reused,
        create_time=timestamp(v.created_at),
        redactions=v.redactions,
    )


def job_proto(j: ImportJob) -> knowledge_pb2.ImportJob:
    return knowledge_pb2.ImportJob(
        id=str(j.id),
        collection_id=str(j.collection_id),
        state=(
            knowledge_pb2.IMPORT_JOB_STATE_RUNNING
            if j.pending
            else knowledge_pb2.IMPORT_JOB_STATE_DONE
        ),
        total=j.total,
        pending=j.pending,
        indexed=j.indexed,
        unchanged=j.unchanged,
        failed=j.failed,
        create_time=timestamp(j.created_at),
        finish_time=timestamp(j.finished_at) if j.finished_at else None,
    )


def item_proto(i: ImportItem) -> knowledge_pb2.ImportJobItem:
    return knowledge_pb2.ImportJobItem(
        position=i.position,
        document_id=str(i.document_id),
        external_id=i.external_id or "",
        title=i.title,
        outcome=_OUTCOMES[i.outcome],
        state=_STATES[i.state],
        failure=_failure(i.failure_code, i.failure_message),
        version=i.version,
    )


def citation_proto(p: PassageRow) -> knowledge_pb2.Citation:
    c = p.chunk
    return knowledge_pb2.Citation(
        page=c.page or 0,
        heading_path=list(c.heading_path),
        start=c.start,
        end=c.end,
        content_hash=c.content_hash,
        document_version=c.version,
        chunk_index=c.index,
    )


def passage_proto(r: Result) -> knowledge_pb2.Passage:
    p = r.passage
    return knowledge_pb2.Passage(
        chunk_id=str(p.chunk.id),
        document_id=str(p.chunk.document_id),
        external_id=p.external_id or "",
        collection_id=str(p.chunk.collection_id),
        title=p.title,
        source=p.source,
        text=p.chunk.text,
        score=r.score,
        parts=knowledge_pb2.ScoreParts(
            vector=r.parts.vector,
            keyword=r.parts.keyword,
            graph=r.parts.graph,
            vector_rank=r.parts.vector_rank,
            keyword_rank=r.parts.keyword_rank,
            graph_rank=r.parts.graph_rank,
        ),
        citation=citation_proto(p),
        metadata=p.metadata,
    )


def gap_proto(g: Gap) -> knowledge_pb2.LearningGap:
    message = knowledge_pb2.LearningGap(
        normalized_query=g.normalized_query,
        query=g.query,
        count=g.count,
        no_passage_count=g.no_passage_count,
        first_ask_time=timestamp(g.first_asked),
        last_ask_time=timestamp(g.last_asked),
        origins=[_ORIGIN_NUMBERS[o] for o in g.origins],
    )
    if g.best_similarity is not None:
        message.best_similarity = g.best_similarity
    if g.best_score is not None:
        message.best_score = g.best_score
    return message


def caller_label() -> str:
    """Who is calling, for the search log: a service's name for a service identity, otherwise
    the identity's kind (user, api_key, ...), never a person's id."""
    identity = identity_var.get()
    if identity is None:
        return ""
    return identity.subject if identity.kind == "service" else identity.kind


def entity_proto(e: Entity) -> knowledge_pb2.Entity:
    return knowledge_pb2.Entity(
        id=str(e.id),
        name=e.name,
        type=e.type,
        aliases=list(e.aliases),
        collection_ids=[str(c) for c in e.collection_ids],
        mention_count=e.mention_count,
        create_time=timestamp(e.created_at),
    )


def relation_proto(r: Relation) -> knowledge_pb2.Relation:
    return knowledge_pb2.Relation(
        id=str(r.id),
        subject_id=str(r.subject_id),
        predicate=r.predicate,
        object_id=str(r.object_id),
        valid_from=timestamp(r.valid_from) if r.valid_from else None,
        valid_to=timestamp(r.valid_to) if r.valid_to else None,
        superseded_by=str(r.superseded_by) if r.superseded_by else "",
        supersede_reason=r.supersede_reason,
        sources=[
            knowledge_pb2.RelationSource(
                document_id=str(s.chunk.document_id),
                chunk_id=str(s.chunk.id),
                title=s.title,
                text=s.chunk.text,
                citation=citation_proto(s),
            )
            for s in r.sources
        ],
        create_time=timestamp(r.created_at),
    )


# Requests


def metadata_map(values: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    if len(values) > MAX_METADATA_KEYS:
        raise InvalidArgument(
            f"{field} has {len(values)} keys; the limit is {MAX_METADATA_KEYS}", field=field
        )
    cleaned: dict[str, str] = {}
    for key, value in sorted(values.items()):
        name = validation.text(key, f"{field} key", max_length=100)
        if name in cleaned:
            raise InvalidArgument(
                f"{field} has the key {name!r} twice once white space is trimmed", field=field
            )
        cleaned[name] = validation.text(value, f"{field}[{name}]", max_length=2_000, required=False)
    return cleaned


def document_input(
    request: knowledge_pb2.IngestDocumentRequest,
    *,
    prefix: str = "",
    upload: Upload | None = None,
    max_bytes: int,
) -> DocumentInput:
    """The checked fields of one document; `upload` is what an upload's data messages carried
    (then the message itself must carry neither text nor content). An empty or oversized file is
    not refused: it becomes a document that fails alone, with its reason (the rest of a batch
    goes on)."""
    body = request.WhichOneof("body")
    if upload is not None:
        if body is not None:
            raise InvalidArgument(
                f"{prefix}document: an upload's first message carries no text or content; "
                "the file follows in data messages",
                field=f"{prefix}document",
            )
    elif body == "text":
        upload = Upload.of(request.text.encode("utf-8"), max_bytes, is_text=True)
    elif body == "content":
        upload = Upload.of(request.content, max_bytes)
    else:
        raise InvalidArgument(f"{prefix}text or {prefix}content is required", field=f"{prefix}text")
    external_id = validation.text(
        request.external_id, f"{prefix}external_id", max_length=500, required=False
    )
    return DocumentInput(
        external_id=external_id or None,
        title=validation.text(request.title, f"{prefix}title", max_length=500, required=False),
        data=upload.data,
        is_text=upload.is_text,
        filename=validation.text(
            request.filename, f"{prefix}filename", max_length=500, required=False
        ),
        content_type=validation.text(
            request.content_type, f"{prefix}content_type", max_length=200, required=False
        ),
        source=validation.text(request.source, f"{prefix}source", max_length=2_000, required=False),
        metadata=metadata_map(request.metadata, f"{prefix}metadata"),
        size=upload.size,
        digest=upload.hash.hexdigest(),
        failure=(
            ("too_large", f"the document is {upload.size:,} bytes; the limit is {max_bytes:,}")
            if upload.size > max_bytes
            else None
        ),
        dlp_policy=_dlp_policy(request.dlp_policy, f"{prefix}dlp_policy"),
    )


_DLP_POLICIES = {
    knowledge_pb2.DLP_POLICY_UNSPECIFIED: "",
    knowledge_pb2.DLP_POLICY_REDACT: "redact",
    knowledge_pb2.DLP_POLICY_BLOCK: "block",
}


def _dlp_policy(value: int, field: str) -> str:
    if value not in _DLP_POLICIES:
        raise InvalidArgument(f"{field} {value} is not a DLP policy", field=field)
    return _DLP_POLICIES[value]  # type: ignore[index]


class Upload:
    """A file's bytes as they arrive: kept up to the size limit, counted and hashed beyond it
    (an oversized file is recorded as failed, never stored)."""

    def __init__(self, max_bytes: int, *, is_text: bool = False) -> None:
        self.max_bytes = max_bytes
        self.is_text = is_text
        self.pieces: list[bytes] = []
        self.size = 0
        self.hash = hashlib.sha256()

    @classmethod
    def of(cls, data: bytes, max_bytes: int, *, is_text: bool = False) -> Upload:
        upload = cls(max_bytes, is_text=is_text)
        upload.add(data)
        return upload

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        self.hash.update(piece)
        if self.size <= self.max_bytes:
            self.pieces.append(piece)
        else:
            self.pieces.clear()

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces) if self.size <= self.max_bytes else b""


def collection_name(value: str) -> str:
    name = validation.text(value, "name", max_length=63)
    if not _COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"name {name!r} must be lower-case letters, digits, '-' and '_', starting with a "
            "letter or digit",
            field="name",
        )
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise InvalidArgument(f"name {name!r} must not be a UUID (ids are UUIDs)", field="name")


def search_filters(filters: Sequence[knowledge_pb2.MetadataFilter]) -> dict[str, list[str]]:
    if len(filters) > MAX_FILTERS:
        raise InvalidArgument(
            f"filters has {len(filters)} items; the limit is {MAX_FILTERS}", field="filters"
        )
    cleaned: dict[str, list[str]] = {}
    for i, f in enumerate(filters):
        key = validation.text(f.key, f"filters[{i}].key", max_length=100)
        if not f.values:
            raise InvalidArgument(
                f"filters[{i}].values needs at least one value", field=f"filters[{i}].values"
            )
        values = [
            validation.text(v, f"filters[{i}].values[{j}]", max_length=2_000, required=False)
            for j, v in enumerate(f.values)
        ]
        cleaned.setdefault(key, values)
        if cleaned[key] is not values:
            # Two filters on one key must both match: the values they share.
            cleaned[key] = [v for v in cleaned[key] if v in values]
    return cleaned


class KnowledgeServicer(knowledge_pb2_grpc.KnowledgeServiceServicer):
    def __init__(
        self,
        store: PostgresKnowledgeStore,
        ingestion: Ingestion,
        searcher: Searcher,
        *,
        max_document_bytes: int,
        search_log: SearchLog,
        gap_similarity: float = 0.5,
    ) -> None:
        self.store = store
        self.ingestion = ingestion
        self.searcher = searcher
        self.max_document_bytes = max_document_bytes
        self.search_log = search_log
        self.gap_similarity = gap_similarity

    async def _collection(self, client_id: str, ref: str, field: str) -> UUID:
        return await self.store.resolve_collection(
            client_id, validation.text(ref, field, max_length=100), field
        )

    async def _optional_collection(self, client_id: str, ref: str, field: str) -> UUID | None:
        return await self._collection(client_id, ref, field) if ref.strip() else None

    async def _collections(
        self, client_id: str, refs: Sequence[str], field: str
    ) -> list[UUID] | None:
        """The named collections; None when none are named (every collection)."""
        if len(refs) > MAX_COLLECTIONS:
            raise InvalidArgument(
                f"{field} has {len(refs)} items; the limit is {MAX_COLLECTIONS}", field=field
            )
        if not refs:
            return None
        return list(
            dict.fromkeys(
                [
                    await self._collection(client_id, ref, f"{field}[{i}]")
                    for i, ref in enumerate(refs)
                ]
            )
        )

    # Collections

    async def CreateCollection(  # noqa: N802 (gRPC method name)
        self, request: knowledge_pb2.CreateCollectionRequest, context: ServicerContext
    ) -> knowledge_pb2.Collection:
        client_id = require_client_id()
        created = await self.store.create_collection(
            client_id,
            collection_name(request.name),
            validation.text(request.description, "description", max_length=2_000, required=False),
        )
        return collection_proto(created)

    async def GetCollection(  # noqa: N802
        self, request: knowledge_pb2.GetCollectionRequest, context: ServicerContext
    ) -> knowledge_pb2.Collection:
        client_id = require_client_id()
        collection_id = await self._collection(client_id, request.id, "id")
        return collection_proto(await self.store.get_collection(client_id, collection_id))

    async def ListCollections(  # noqa: N802
        self, request: knowledge_pb2.ListCollectionsRequest, context: ServicerContext
    ) -> knowledge_pb2.ListCollectionsResponse:
        client_id = require_client_id()
        found, token = await self.store.list_collections(
            client_id, request.page.page_token, request.page.page_size
        )
        return knowledge_pb2.ListCollectionsResponse(
            collections=[collection_proto(c) for c in found],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def DeleteCollection(  # noqa: N802
        self, request: knowledge_pb2.DeleteCollectionRequest, context: ServicerContext
    ) -> knowledge_pb2.DeleteCollectionResponse:
        client_id = require_client_id()
        collection_id = await self._collection(client_id, request.id, "id")
        deleted, _ = await self.store.delete_collection(client_id, collection_id)
        vectors = await self.ingestion.forget_collection(client_id, collection_id)
        return knowledge_pb2.DeleteCollectionResponse(
            documents_deleted=deleted.documents,
            chunks_deleted=deleted.chunks,
            vectors_deleted=vectors,
        )

    # Ingestion

    async def _ingest(
        self, collection: str, document: DocumentInput
    ) -> knowledge_pb2.IngestDocumentResponse:
        client_id = require_client_id()
        collection_id = await self._collection(client_id, collection, "collection")
        stored, outcome = await self.store.ingest(client_id, collection_id, document)
        if outcome is not Outcome.UNCHANGED:
            self.ingestion.notify()
        return knowledge_pb2.IngestDocumentResponse(
            document=document_proto(stored), outcome=_OUTCOMES[outcome]
        )

    async def IngestDocument(  # noqa: N802
        self, request: knowledge_pb2.IngestDocumentRequest, context: ServicerContext
    ) -> knowledge_pb2.IngestDocumentResponse:
        require_client_id()
        document = document_input(request, max_bytes=self.max_document_bytes)
        return await self._ingest(request.collection, document)

    async def UploadDocument(  # noqa: N802
        self,
        request_iterator: AsyncIterator[knowledge_pb2.UploadDocumentRequest],
        context: ServicerContext,
    ) -> knowledge_pb2.IngestDocumentResponse:
        require_client_id()
        header: knowledge_pb2.IngestDocumentRequest | None = None
        upload = Upload(self.max_document_bytes)
        async for message in request_iterator:
            part = message.WhichOneof("part")
            if header is None:
                if part != "document":
                    raise InvalidArgument(
                        "the first message of an upload carries document", field="document"
                    )
                header = message.document
                continue
            if part != "data":
                raise InvalidArgument(
                    "only the first message of an upload carries document; the rest carry data",
                    field="data",
                )
            upload.add(message.data)
        if header is None:
            raise InvalidArgument("the upload is empty: no document message", field="document")
        document = document_input(header, upload=upload, max_bytes=self.max_document_bytes)
        return await self._ingest(header.collection, document)

    async def ImportDocuments(  # noqa: N802
        self,
        request_iterator: AsyncIterator[knowledge_pb2.ImportDocumentsRequest],
        context: ServicerContext,
    ) -> knowledge_pb2.ImportJob:
        client_id = require_client_id()
        collection_id: UUID | None = None
        collection_ref = ""
        documents: list[DocumentInput] = []
        size = 0
        async for message in request_iterator:
            part = message.WhichOneof("part")
            if collection_id is None:
                if part != "header":
                    raise InvalidArgument(
                        "the first message of an import carries header", field="header"
                    )
                collection_ref = message.header.collection
                collection_id = await self._collection(
                    client_id, collection_ref, "header.collection"
                )
                continue
            position = len(documents)
            prefix = f"documents[{position}]."
            if part != "document":
                raise InvalidArgument(
                    f"{prefix[:-1]}: only the first message of an import carries header",
                    field=prefix[:-1],
                )
            if len(documents) >= MAX_IMPORT_DOCUMENTS:
                raise InvalidArgument(
                    f"an import holds at most {MAX_IMPORT_DOCUMENTS:,} documents",
                    field="documents",
                )
            given = message.document.collection.strip()
            if given and given != collection_ref.strip() and given != str(collection_id):
                raise InvalidArgument(
                    f"{prefix}collection is {given!r} but the import goes to "
                    f"{collection_ref!r}; leave it empty",
                    field=f"{prefix}collection",
                )
            documents.append(
                document_input(message.document, prefix=prefix, max_bytes=self.max_document_bytes)
            )
            size += len(documents[-1].data)
            if size > self.max_document_bytes:
                raise InvalidArgument(
                    f"the import's documents are over {self.max_document_bytes:,} bytes together, "
                    "the limit of one request; split it",
                    field="documents",
                )
        if collection_id is None:
            raise InvalidArgument("the import is empty: no header message", field="header")
        if not documents:
            raise InvalidArgument("the import has no documents", field="documents")
        first: dict[str, int] = {}
        for position, d in enumerate(documents):
            if d.external_id is None:
                continue
            if d.external_id in first:
                raise InvalidArgument(
                    f"documents[{position}].external_id {d.external_id!r} is also "
                    f"documents[{first[d.external_id]}]'s",
                    field=f"documents[{position}].external_id",
                )
            first[d.external_id] = position
        job = await self.store.create_import(client_id, collection_id, documents)
        self.ingestion.notify()
        return job_proto(job)

    async def GetImportJob(  # noqa: N802
        self, request: knowledge_pb2.GetImportJobRequest, context: ServicerContext
    ) -> knowledge_pb2.ImportJob:
        client_id = require_client_id()
        return job_proto(await self.store.get_import_job(client_id, parse_id(request.id)))

    async def ListImportJobs(  # noqa: N802
        self, request: knowledge_pb2.ListImportJobsRequest, context: ServicerContext
    ) -> knowledge_pb2.ListImportJobsResponse:
        client_id = require_client_id()
        collection_id = await self._optional_collection(client_id, request.collection, "collection")
        jobs, token = await self.store.list_import_jobs(
            client_id, collection_id, request.page.page_token, request.page.page_size
        )
        return knowledge_pb2.ListImportJobsResponse(
            jobs=[job_proto(j) for j in jobs], page=common_pb2.PageInfo(next_page_token=token)
        )

    async def ListImportJobItems(  # noqa: N802
        self, request: knowledge_pb2.ListImportJobItemsRequest, context: ServicerContext
    ) -> knowledge_pb2.ListImportJobItemsResponse:
        client_id = require_client_id()
        items, token = await self.store.list_import_items(
            client_id,
            parse_id(request.job_id, "job_id"),
            request.failed_only,
            request.page.page_token,
            request.page.page_size,
        )
        return knowledge_pb2.ListImportJobItemsResponse(
            items=[item_proto(i) for i in items], page=common_pb2.PageInfo(next_page_token=token)
        )

    # Documents

    async def GetDocument(  # noqa: N802
        self, request: knowledge_pb2.GetDocumentRequest, context: ServicerContext
    ) -> knowledge_pb2.Document:
        client_id = require_client_id()
        return document_proto(await self.store.get_document(client_id, parse_id(request.id)))

    async def ListDocuments(  # noqa: N802
        self, request: knowledge_pb2.ListDocumentsRequest, context: ServicerContext
    ) -> knowledge_pb2.ListDocumentsResponse:
        client_id = require_client_id()
        collection_id = await self._optional_collection(client_id, request.collection, "collection")
        state = validation.enum_value(
            request.state, "state", _STATE_FILTER, knowledge_pb2.DocumentState
        )
        external_id = validation.text(
            request.external_id, "external_id", max_length=500, required=False
        )
        if external_id and collection_id is None:
            raise InvalidArgument(
                "external_id needs collection: external ids are unique per collection",
                field="collection",
            )
        found, token = await self.store.list_documents(
            client_id,
            collection_id,
            state,
            external_id or None,
            request.page.page_token,
            request.page.page_size,
        )
        return knowledge_pb2.ListDocumentsResponse(
            documents=[document_proto(d) for d in found],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def ListDocumentVersions(  # noqa: N802
        self, request: knowledge_pb2.ListDocumentVersionsRequest, context: ServicerContext
    ) -> knowledge_pb2.ListDocumentVersionsResponse:
        client_id = require_client_id()
        versions, token = await self.store.list_versions(
            client_id,
            parse_id(request.document_id, "document_id"),
            request.page.page_token,
            request.page.page_size,
        )
        return knowledge_pb2.ListDocumentVersionsResponse(
            versions=[version_proto(v) for v in versions],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def ReadDocumentText(  # noqa: N802
        self, request: knowledge_pb2.ReadDocumentTextRequest, context: ServicerContext
    ) -> knowledge_pb2.DocumentText:
        client_id = require_client_id()
        document_id = parse_id(request.document_id, "document_id")
        if request.version < 0:
            raise InvalidArgument(
                f"version must not be negative, got {request.version}", field="version"
            )
        if request.start < 0:
            raise InvalidArgument(f"start must not be negative, got {request.start}", field="start")
        if request.end and request.end < request.start:
            raise InvalidArgument(
                f"end ({request.end}) is before start ({request.start})", field="end"
            )
        end = request.end or request.start + MAX_TEXT_READ
        if end - request.start > MAX_TEXT_READ:
            raise InvalidArgument(
                f"a read returns at most {MAX_TEXT_READ:,} characters; read from end for more",
                field="end",
            )
        version, text, length = await self.store.read_text(
            client_id, document_id, request.version, request.start, end
        )
        start = min(request.start, length)
        return knowledge_pb2.DocumentText(
            document_id=str(document_id),
            version=version,
            text=text,
            start=start,
            end=start + len(text),
            text_length=length,
        )

    async def DeleteDocument(  # noqa: N802
        self, request: knowledge_pb2.DeleteDocumentRequest, context: ServicerContext
    ) -> knowledge_pb2.DeleteDocumentResponse:
        client_id = require_client_id()
        document_id = parse_id(request.id)
        deleted, collection_id = await self.store.delete_document(client_id, document_id)
        vectors, keywords = await self.ingestion.forget_document(
            client_id, collection_id, document_id
        )
        return knowledge_pb2.DeleteDocumentResponse(
            versions_deleted=deleted.versions,
            chunks_deleted=deleted.chunks,
            vectors_deleted=vectors,
            keyword_entries_deleted=keywords,
            provenance_deleted=deleted.provenance,
            relations_deleted=deleted.relations,
            entities_deleted=deleted.entities,
        )

    # Search

    async def Search(  # noqa: N802
        self, request: knowledge_pb2.SearchRequest, context: ServicerContext
    ) -> knowledge_pb2.SearchResponse:
        client_id = require_client_id()
        query = validation.text(request.query, "query", max_length=2_000)
        if not 0 <= request.k <= MAX_K:
            raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {request.k}", field="k")
        k = request.k or DEFAULT_K
        mode = validation.enum_value(request.mode, "mode", _MODES, knowledge_pb2.SearchMode)
        filters = search_filters(request.filters)
        origin = validation.enum_value(
            request.origin, "origin", _ORIGINS, knowledge_pb2.SearchOrigin
        )
        collections = await self._collections(client_id, request.collections, "collections")
        if collections is None:
            collections = await self.store.collection_ids(client_id)
        found = await self.searcher.find(client_id, collections, query, k, mode, filters)
        response = knowledge_pb2.SearchResponse(
            passages=[passage_proto(r) for r in found.results], mode=_MODE_NUMBERS[mode]
        )
        # Written in the background: the answer does not wait for the log.
        self.search_log.record(
            SearchRecord(
                client_id=client_id,
                collection_ids=collections,
                query=query,
                mode=mode.value,
                k=k,
                passages=len(found.results),
                best_similarity=found.best_similarity,
                best_score=found.results[0].score if found.results else None,
                origin=origin,
                caller=caller_label(),
            )
        )
        return response

    async def ListLearningGaps(  # noqa: N802
        self, request: knowledge_pb2.ListLearningGapsRequest, context: ServicerContext
    ) -> knowledge_pb2.ListLearningGapsResponse:
        client_id = require_client_id()
        collection_id = await self._collection(client_id, request.collection, "collection")
        if not 0 <= request.window_days <= MAX_GAP_WINDOW_DAYS:
            raise InvalidArgument(
                f"window_days must be between 1 and {MAX_GAP_WINDOW_DAYS}, got "
                f"{request.window_days}",
                field="window_days",
            )
        window = request.window_days or DEFAULT_GAP_WINDOW_DAYS
        threshold = self.gap_similarity
        if request.HasField("max_similarity"):
            threshold = request.max_similarity
            if not -1.0 <= threshold <= 1.0:
                raise InvalidArgument(
                    f"max_similarity must be between -1 and 1 (a cosine), got {threshold}",
                    field="max_similarity",
                )
        gaps, token = await self.search_log.gaps(
            client_id,
            collection_id,
            window_days=window,
            max_similarity=threshold,
            page_token=request.page.page_token,
            requested_size=request.page.page_size,
        )
        return knowledge_pb2.ListLearningGapsResponse(
            gaps=[gap_proto(g) for g in gaps],
            page=common_pb2.PageInfo(next_page_token=token),
            max_similarity=threshold,
            window_days=window,
        )

    # The graph

    async def ListEntities(  # noqa: N802
        self, request: knowledge_pb2.ListEntitiesRequest, context: ServicerContext
    ) -> knowledge_pb2.ListEntitiesResponse:
        client_id = require_client_id()
        collections = await self._collections(client_id, request.collections, "collections")
        found, token = await self.store.list_entities(
            client_id,
            collections,
            validation.text(request.query, "query", max_length=200, required=False),
            validation.text(request.type, "type", max_length=100, required=False),
            request.page.page_token,
            request.page.page_size,
        )
        return knowledge_pb2.ListEntitiesResponse(
            entities=[entity_proto(e) for e in found],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def GetEntity(  # noqa: N802
        self, request: knowledge_pb2.GetEntityRequest, context: ServicerContext
    ) -> knowledge_pb2.Entity:
        client_id = require_client_id()
        return entity_proto(await self.store.get_entity(client_id, parse_id(request.id)))

    async def ListEntityRelations(  # noqa: N802
        self, request: knowledge_pb2.ListEntityRelationsRequest, context: ServicerContext
    ) -> knowledge_pb2.ListEntityRelationsResponse:
        client_id = require_client_id()
        entity_id = parse_id(request.entity_id, "entity_id")
        entity = await self.store.get_entity(client_id, entity_id)
        relations, neighbours, token = await self.store.list_relations(
            client_id,
            entity_id,
            request.include_superseded,
            request.page.page_token,
            request.page.page_size,
        )
        return knowledge_pb2.ListEntityRelationsResponse(
            entity=entity_proto(entity),
            relations=[relation_proto(r) for r in relations],
            neighbours=[entity_proto(e) for e in neighbours],
            page=common_pb2.PageInfo(next_page_token=token),
        )
