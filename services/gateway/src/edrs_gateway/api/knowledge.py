"""What the `/api/v1/knowledge` routes share: the knowledge service's stub, the path parameters,
and the JSON shapes of collections, documents, import jobs and citations (camelCase), converted
from the knowledge service's messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from fastapi import Path
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ConfigDict, Field, JsonValue

from edrs_gateway.api.models import ApiModel
from edrs_gateway.context import GatewayContext

# The knowledge service's limits (knowledge.proto), checked here so a bad body names its field.
TITLE_MAX, EXTERNAL_ID_MAX, FILENAME_MAX, SOURCE_MAX = 500, 500, 500, 2000
METADATA_KEYS_MAX, METADATA_KEY_MAX, METADATA_VALUE_MAX = 50, 100, 2000
# A collection's name: lower-case letters, digits, "-" and "_", starting with a letter or digit.
COLLECTION_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

EXAMPLE_COLLECTION_ID = "0190d6a0-0000-7000-8000-0000000000d1"
EXAMPLE_DOCUMENT_ID = "0190d6a0-0000-7000-8000-0000000000d2"
EXAMPLE_JOB_ID = "0190d6a0-0000-7000-8000-0000000000d4"
EXAMPLE_ENTITY_ID = "0190d6a0-0000-7000-8000-0000000000e1"

CollectionRef = Annotated[
    str,
    Path(
        alias="collection",
        min_length=1,
        max_length=100,
        pattern=r"^[^/\x00-\x1f]+$",
        description="The collection's id or its name",
        examples=["handbook", EXAMPLE_COLLECTION_ID],
    ),
]
DocumentId = Annotated[UUID, Path(alias="documentId", examples=[EXAMPLE_DOCUMENT_ID])]
JobId = Annotated[UUID, Path(alias="jobId", examples=[EXAMPLE_JOB_ID])]
EntityId = Annotated[UUID, Path(alias="entityId", examples=[EXAMPLE_ENTITY_ID])]

State = Literal["queued", "parsing", "embedding", "indexed", "failed"]
Outcome = Literal["created", "updated", "unchanged"]

STATES: dict[int, State] = {
    knowledge_pb2.DOCUMENT_STATE_QUEUED: "queued",
    knowledge_pb2.DOCUMENT_STATE_PARSING: "parsing",
    knowledge_pb2.DOCUMENT_STATE_EMBEDDING: "embedding",
    knowledge_pb2.DOCUMENT_STATE_INDEXED: "indexed",
    knowledge_pb2.DOCUMENT_STATE_FAILED: "failed",
}
STATE_VALUES: dict[State, knowledge_pb2.DocumentState.ValueType] = {
    "queued": knowledge_pb2.DOCUMENT_STATE_QUEUED,
    "parsing": knowledge_pb2.DOCUMENT_STATE_PARSING,
    "embedding": knowledge_pb2.DOCUMENT_STATE_EMBEDDING,
    "indexed": knowledge_pb2.DOCUMENT_STATE_INDEXED,
    "failed": knowledge_pb2.DOCUMENT_STATE_FAILED,
}
OUTCOMES: dict[int, Outcome] = {
    knowledge_pb2.INGEST_OUTCOME_CREATED: "created",
    knowledge_pb2.INGEST_OUTCOME_UPDATED: "updated",
    knowledge_pb2.INGEST_OUTCOME_UNCHANGED: "unchanged",
}


def knowledge_stub(ctx: GatewayContext) -> knowledge_pb2_grpc.KnowledgeServiceAsyncStub:
    return ctx.runtime.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub)


def time_of(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def time_or_none(message: Any, field: str) -> datetime | None:
    return time_of(getattr(message, field)) if message.HasField(field) else None


class CollectionOut(ApiModel):
    id: UUID
    name: str
    description: str
    document_count: int = Field(description="Documents in the collection, in every state")
    chunk_count: int = Field(description="Passages of its indexed documents")
    created_at: datetime

    @classmethod
    def of(cls, c: knowledge_pb2.Collection) -> CollectionOut:
        return cls(
            id=UUID(c.id),
            name=c.name,
            description=c.description,
            document_count=c.document_count,
            chunk_count=c.chunk_count,
            created_at=time_of(c.create_time),
        )


# The tenant's DLP policy as the knowledge service takes it for a file the gateway cannot scan.
DLP_POLICIES = {"redact": knowledge_pb2.DLP_POLICY_REDACT, "block": knowledge_pb2.DLP_POLICY_BLOCK}


class FailureOut(ApiModel):
    code: str = Field(
        description="`format_mismatch`, `unsupported_format`, `encrypted`, `corrupt`, `empty`, "
        "`too_large`, `sensitive_data_blocked` (your tenant's DLP policy blocks what the file's "
        "text holds), `embedding_failed` or `indexing_failed` (the last two: ingesting the same "
        "input again retries)"
    )
    message: str


def failure_of(state: int, failure: knowledge_pb2.DocumentFailure) -> FailureOut | None:
    if state != knowledge_pb2.DOCUMENT_STATE_FAILED:
        return None
    return FailureOut(code=failure.code, message=failure.message)


_DOCUMENT_EXAMPLE: dict[str, JsonValue] = {
    "id": EXAMPLE_DOCUMENT_ID,
    "collectionId": EXAMPLE_COLLECTION_ID,
    "externalId": "policies/travel.pdf",
    "title": "Travel policy",
    "source": "https://intranet.example/policies/travel.pdf",
    "metadata": {"team": "finance"},
    "state": "indexed",
    "failure": None,
    "version": 2,
    "format": "pdf",
    "sizeBytes": 482133,
    "pageCount": 12,
    "chunkCount": 41,
    "textLength": 38211,
    "contentHash": "5d41402abc4b2a76b9719d911017c592ae9f1b6c3c0f3d1b7c4a2d33b5e8e6f1",
    "createdAt": "2025-01-01T12:00:00Z",
    "updatedAt": "2025-01-02T09:30:00Z",
    "redactions": {},
}


class DocumentOut(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_DOCUMENT_EXAMPLE]})

    id: UUID
    collection_id: UUID
    external_id: str | None = Field(description="Your own id, unique in the collection")
    title: str
    source: str
    metadata: dict[str, str]
    state: State = Field(
        description="Of the current version: `queued` → `parsing` → `embedding` → `indexed`, "
        "or `failed` (see `failure`)"
    )
    failure: FailureOut | None = Field(description="Why it failed; null unless `failed`")
    version: int = Field(description="1 for the first, +1 for each changed re-ingestion")
    format: str = Field(description="Read from the bytes: pdf, docx, html, markdown or text")
    size_bytes: int
    page_count: int = Field(description="Pages (PDF only; 0 otherwise)")
    chunk_count: int = Field(description="Passages it was cut into")
    text_length: int = Field(description="Characters of the stored text (`/text` reads it)")
    content_hash: str = Field(description="SHA-256 (hex) of the input bytes")
    created_at: datetime
    updated_at: datetime = Field(description="When its current version was ingested")
    redactions: dict[str, int] = Field(
        description="Sensitive data your tenant's DLP policy redacted from the text of a file the "
        "gateway could not scan itself (PDF, DOCX, base64 content, text over 10 MB), counted "
        "per kind (`email`: 2); empty when nothing was"
    )

    @classmethod
    def of(cls, d: knowledge_pb2.Document) -> DocumentOut:
        return cls(
            id=UUID(d.id),
            collection_id=UUID(d.collection_id),
            external_id=d.external_id or None,
            title=d.title,
            source=d.source,
            metadata=dict(d.metadata),
            state=STATES.get(d.state, "queued"),
            failure=failure_of(d.state, d.failure),
            version=d.version,
            format=d.format,
            size_bytes=d.size_bytes,
            page_count=d.page_count,
            chunk_count=d.chunk_count,
            text_length=d.text_length,
            content_hash=d.content_hash,
            created_at=time_of(d.create_time),
            updated_at=time_of(d.update_time),
            redactions=dict(d.redactions),
        )


class VersionOut(ApiModel):
    version: int
    title: str
    metadata: dict[str, str]
    state: State
    failure: FailureOut | None = Field(description="Why it failed; null unless `failed`")
    format: str
    size_bytes: int
    page_count: int
    chunk_count: int
    text_length: int
    content_hash: str
    chunks_embedded: int = Field(description="Passages embedded for this version")
    chunks_reused: int = Field(
        description="Passages whose embedding was reused from the previous version (their text "
        "did not change)"
    )
    created_at: datetime
    redactions: dict[str, int] = Field(
        description="Sensitive data your tenant's DLP policy redacted from the text of a file the "
        "gateway could not scan itself (PDF, DOCX, base64 content, text over 10 MB), counted "
        "per kind (`email`: 2); empty when nothing was"
    )

    @classmethod
    def of(cls, v: knowledge_pb2.DocumentVersion) -> VersionOut:
        return cls(
            version=v.version,
            title=v.title,
            metadata=dict(v.metadata),
            state=STATES.get(v.state, "queued"),
            failure=failure_of(v.state, v.failure),
            format=v.format,
            size_bytes=v.size_bytes,
            page_count=v.page_count,
            chunk_count=v.chunk_count,
            text_length=v.text_length,
            content_hash=v.content_hash,
            chunks_embedded=v.chunks_embedded,
            chunks_reused=v.chunks_reused,
            created_at=time_of(v.create_time),
            redactions=dict(v.redactions),
        )


class IngestOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "outcome": "created",
                    "document": {**_DOCUMENT_EXAMPLE, "state": "queued", "version": 1},
                }
            ]
        }
    )

    outcome: Outcome = Field(
        description="`created`, `updated` (a new version of the document with that "
        "`externalId`) or `unchanged` (same content, title and metadata: nothing was done)"
    )
    document: DocumentOut

    @classmethod
    def of(cls, r: knowledge_pb2.IngestDocumentResponse) -> IngestOut:
        return cls(outcome=OUTCOMES.get(r.outcome, "created"), document=DocumentOut.of(r.document))


class ImportJobOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": EXAMPLE_JOB_ID,
                    "collectionId": EXAMPLE_COLLECTION_ID,
                    "state": "running",
                    "total": 2500,
                    "pending": 1320,
                    "indexed": 1170,
                    "unchanged": 8,
                    "failed": 2,
                    "createdAt": "2025-01-01T12:00:00Z",
                    "finishedAt": None,
                }
            ]
        }
    )

    id: UUID
    collection_id: UUID
    state: Literal["running", "done"]
    total: int = Field(description="Documents sent")
    pending: int = Field(description="Documents still queued, parsing or embedding")
    indexed: int
    unchanged: int = Field(description="Identical to what the collection held: nothing done")
    failed: int = Field(description="Documents that failed (`/items?failedOnly=true` says why)")
    created_at: datetime
    finished_at: datetime | None = Field(description="Set once `done`")

    @classmethod
    def of(cls, j: knowledge_pb2.ImportJob) -> ImportJobOut:
        return cls(
            id=UUID(j.id),
            collection_id=UUID(j.collection_id),
            state="done" if j.state == knowledge_pb2.IMPORT_JOB_STATE_DONE else "running",
            total=j.total,
            pending=j.pending,
            indexed=j.indexed,
            unchanged=j.unchanged,
            failed=j.failed,
            created_at=time_of(j.create_time),
            finished_at=time_or_none(j, "finish_time"),
        )


class CitationOut(ApiModel):
    """Where a passage is in its source."""

    page: int | None = Field(description="1-based page of a PDF; null for other formats")
    heading_path: list[str] = Field(description="The headings it sits under, outermost first")
    start_offset: int = Field(
        description="Characters (code points) into the stored text of `documentVersion`: "
        "`text[startOffset:endOffset]` is the passage exactly"
    )
    end_offset: int
    content_hash: str = Field(description="SHA-256 (hex) of the passage text (UTF-8)")
    document_version: int
    chunk_index: int = Field(description="0-based position of the passage in the document")

    @classmethod
    def of(cls, c: knowledge_pb2.Citation) -> CitationOut:
        return cls(
            page=c.page or None,
            heading_path=list(c.heading_path),
            start_offset=c.start,
            end_offset=c.end,
            content_hash=c.content_hash,
            document_version=c.document_version,
            chunk_index=c.chunk_index,
        )
