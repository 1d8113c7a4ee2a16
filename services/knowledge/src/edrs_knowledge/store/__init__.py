"""The knowledge store's records: what the service keeps about collections, documents, their
versions and passages, import jobs and the graph, whatever the engine (`store.postgres`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID


class State(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"


PENDING_STATES = (State.QUEUED, State.PARSING, State.EMBEDDING)


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, kw_only=True)
class Collection:
    id: UUID
    name: str
    description: str
    document_count: int
    chunk_count: int
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class DocumentInput:
    """One document as a client sent it, checked."""

    external_id: str | None
    title: str  # "" lets the document's own title (or the file name) be used
    data: bytes
    is_text: bool
    filename: str
    content_type: str
    source: str
    metadata: dict[str, str] = field(default_factory=dict)
    size: int  # bytes sent (`data` is empty when they were over the limit)
    digest: str  # sha256 of the bytes sent
    failure: tuple[str, str] | None = None  # (code, message): refused before any parsing
    # The tenant's DLP policy for the text parsed from it ("" none, "redact", "block"): set for
    # input the gateway could not scan.
    dlp_policy: str = ""


@dataclass(frozen=True, kw_only=True)
class Document:
    id: UUID
    collection_id: UUID
    external_id: str | None
    title: str
    source: str
    metadata: dict[str, str]
    state: State
    failure_code: str
    failure_message: str
    version: int
    format: str
    size_bytes: int
    page_count: int
    chunk_count: int
    text_length: int
    content_hash: str
    created_at: datetime
    updated_at: datetime
    redactions: dict[str, int] = field(default_factory=dict)  # DLP redactions per kind


@dataclass(frozen=True, kw_only=True)
class Version:
    document_id: UUID
    version: int
    title: str
    metadata: dict[str, str]
    state: State
    failure_code: str
    failure_message: str
    format: str
    size_bytes: int
    page_count: int
    chunk_count: int
    text_length: int
    content_hash: str
    chunks_embedded: int
    chunks_reused: int
    created_at: datetime
    redactions: dict[str, int] = field(default_factory=dict)  # DLP redactions per kind


@dataclass(frozen=True, kw_only=True)
class Work:
    """A version claimed for ingestion, with what it needs."""

    client_id: str
    collection_id: UUID
    document_id: UUID
    version: int
    external_id: str | None
    title: str  # as given: "" lets the document's own title be used
    source: str
    metadata: dict[str, str]
    data: bytes
    is_text: bool
    filename: str
    content_type: str
    dlp_policy: str = ""  # "" (none), "redact", "block": applied to the parsed text


@dataclass(frozen=True, kw_only=True)
class StoredChunk:
    """A passage of a document's indexed version, with its provenance."""

    id: UUID
    document_id: UUID
    collection_id: UUID
    version: int
    index: int
    text: str
    start: int
    end: int
    token_count: int
    heading_path: tuple[str, ...]
    page: int | None
    content_hash: str


@dataclass(frozen=True, kw_only=True)
class PassageRow:
    """A passage with its document's fields, as search returns it."""

    chunk: StoredChunk
    external_id: str | None
    title: str
    source: str
    metadata: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class ImportJob:
    id: UUID
    collection_id: UUID
    total: int
    pending: int
    indexed: int
    unchanged: int
    failed: int
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class ImportItem:
    position: int
    document_id: UUID
    external_id: str | None
    title: str
    outcome: Outcome
    state: State
    failure_code: str
    failure_message: str
    version: int


@dataclass(frozen=True, kw_only=True)
class Entity:
    id: UUID
    name: str
    type: str
    aliases: tuple[str, ...]
    collection_ids: tuple[UUID, ...]
    mention_count: int
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class Relation:
    id: UUID
    subject_id: UUID
    predicate: str
    object_id: UUID
    valid_from: datetime | None
    valid_to: datetime | None
    superseded_by: UUID | None
    supersede_reason: str
    sources: tuple[PassageRow, ...]
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class Deleted:
    """What a deletion removed from the database."""

    documents: int = 0
    versions: int = 0
    chunks: int = 0
    provenance: int = 0
    relations: int = 0
    entities: int = 0
    chunk_ids: tuple[UUID, ...] = ()
