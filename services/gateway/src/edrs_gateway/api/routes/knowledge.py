"""`/api/v1/knowledge`: the tenant's knowledge collections, their documents (text posted as JSON or
files uploaded), and search over their passages, served by the knowledge service over gRPC.
Bulk imports are in `knowledge_imports.py`, the graph in `knowledge_graph.py`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

from edrs_proto.knowledge.v1 import knowledge_pb2
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from pydantic import ConfigDict, Field, field_validator

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.knowledge import (
    COLLECTION_NAME_PATTERN,
    DLP_POLICIES,
    EXAMPLE_COLLECTION_ID,
    EXAMPLE_DOCUMENT_ID,
    EXTERNAL_ID_MAX,
    FILENAME_MAX,
    METADATA_KEY_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_MAX,
    SOURCE_MAX,
    STATE_VALUES,
    TITLE_MAX,
    CitationOut,
    CollectionOut,
    CollectionRef,
    DocumentId,
    DocumentOut,
    IngestOut,
    State,
    VersionOut,
    knowledge_stub,
)
from edrs_gateway.api.models import (
    INT32_MAX,
    INT64_MAX,
    MULTI_LINE,
    SINGLE_LINE,
    ApiModel,
    PageOf,
)
from edrs_gateway.api.problems import ApiError
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx
from edrs_gateway.edge.dlp import DlpGuard, blocked_problem

router = APIRouter(prefix="/knowledge", tags=["knowledge"])

read_knowledge = require(Permission.KNOWLEDGE_READ)
write_knowledge = require(Permission.KNOWLEDGE_WRITE)

DESCRIPTION_MAX = 2000
# Text posted as JSON travels to the knowledge service in one gRPC message (4 MiB): a million
# characters fit whatever the script. Longer texts go up as a file (`/files`, 100 MB).
TEXT_MAX = 1_000_000
QUERY_MAX, K_MAX, COLLECTIONS_MAX, FILTERS_MAX = 2000, 100, 100, 20
# Pieces of an uploaded file on their way to the knowledge service (gRPC messages stay small).
UPLOAD_PIECE = 1024 * 1024
# Text files up to this size pass DLP at the gateway (read whole); PDF and DOCX cannot be read
# here, and larger text files stream on unscanned (docs/api.md, "Sensitive data").
TEXT_DLP_MAX = 10 * 1024 * 1024
# What a client that declares nothing in particular sends; not a claim about the format.
_UNDECLARED = {"", "application/octet-stream"}

_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}
_STRING = {"schema": {"type": "string"}}

Metadata = dict[
    Annotated[str, Field(min_length=1, max_length=METADATA_KEY_MAX, pattern=SINGLE_LINE)],
    Annotated[str, Field(max_length=METADATA_VALUE_MAX, pattern=MULTI_LINE)],
]


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > METADATA_KEYS_MAX:
        raise ValueError(f"at most {METADATA_KEYS_MAX} keys, got {len(metadata)}")
    return metadata


# -- collections ------------------------------------------------------------------------------


class CreateCollection(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "handbook", "description": "Company policies and procedures"}]
        }
    )

    name: str = Field(
        pattern=COLLECTION_NAME_PATTERN,
        description="Unique in your tenant, fixed: 1-63 characters of a-z, 0-9, `-` and `_`, "
        "starting with a letter or digit",
    )
    description: str = Field(default="", max_length=DESCRIPTION_MAX, pattern=MULTI_LINE)


class CollectionPage(PageOf):
    collections: list[CollectionOut]


class CollectionDeleted(ApiModel):
    documents_deleted: int
    chunks_deleted: int
    vectors_deleted: int = Field(description="Records removed from the vector index")


@router.post(
    "/collections",
    status_code=201,
    response_model=CollectionOut,
    summary="Create a collection",
    description="A named set of documents searched together; `Location` names it. 409 "
    "`already_exists` when your tenant has a collection of that name.",
    responses={
        201: {"headers": {"Location": {"description": "Path of the collection", **_STRING}}},
        **_ERRORS,
        **problem_responses(409),
    },
)
async def create_collection(
    body: CreateCollection,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_knowledge)],
) -> CollectionOut:
    created = await knowledge_stub(ctx).CreateCollection(
        knowledge_pb2.CreateCollectionRequest(name=body.name, description=body.description)
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.id}"
    return CollectionOut.of(created)


@router.get(
    "/collections",
    response_model=CollectionPage,
    summary="List collections",
    description="Your tenant's collections, oldest first, one page at a time.",
    responses=_ERRORS,
)
async def list_collections(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_knowledge)],
) -> CollectionPage:
    request = knowledge_pb2.ListCollectionsRequest()
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListCollections(request)
    return CollectionPage(
        collections=[CollectionOut.of(c) for c in reply.collections],
        next_page_token=reply.page.next_page_token,
    )


@router.get(
    "/collections/{collection}",
    response_model=CollectionOut,
    summary="Get a collection",
    description="By id or by name.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_collection(
    collection: CollectionRef,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_knowledge)],
) -> CollectionOut:
    found = await knowledge_stub(ctx).GetCollection(
        knowledge_pb2.GetCollectionRequest(id=collection)
    )
    return CollectionOut.of(found)


@router.delete(
    "/collections/{collection}",
    response_model=CollectionDeleted,
    summary="Delete a collection",
    description="With everything derived from it: its documents and their versions, passages, "
    "vectors, keyword index entries, import jobs and graph provenance. Says what was removed.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def delete_collection(
    collection: CollectionRef,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_knowledge)],
) -> CollectionDeleted:
    done = await knowledge_stub(ctx).DeleteCollection(
        knowledge_pb2.DeleteCollectionRequest(id=collection)
    )
    return CollectionDeleted(
        documents_deleted=done.documents_deleted,
        chunks_deleted=done.chunks_deleted,
        vectors_deleted=done.vectors_deleted,
    )


# -- documents --------------------------------------------------------------------------------


class DocumentFields(ApiModel):
    """What every way of ingesting a document shares."""

    external_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=EXTERNAL_ID_MAX,
        pattern=SINGLE_LINE,
        description="Your own id, unique in the collection: ingesting it again updates that "
        "document (a new version, or nothing when nothing changed)",
    )
    title: str = Field(
        default="",
        max_length=TITLE_MAX,
        pattern=SINGLE_LINE,
        description="Empty: the document's own title, else its first heading, else the "
        "externalId, else `Untitled`",
    )
    source: str = Field(
        default="", max_length=SOURCE_MAX, pattern=SINGLE_LINE, description="A URL, a path"
    )
    metadata: Metadata = Field(
        default_factory=dict,
        description="Up to 50 labels (what search `filters` match); keys up to 100 characters, "
        "values up to 2,000",
    )

    _metadata = field_validator("metadata")(check_metadata)


class TextDocument(DocumentFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "externalId": "faq/vpn",
                    "title": "VPN access",
                    "text": "# VPN\n\nConnect with the Acme VPN client; the server is vpn.acme.example.",
                    "metadata": {"team": "it"},
                }
            ]
        }
    )

    text: str = Field(
        min_length=1,
        max_length=TEXT_MAX,
        pattern=MULTI_LINE,
        description="The document's text, up to 1,000,000 characters (longer: upload it as a file)",
    )
    content_type: Literal["text/markdown", "text/plain"] = Field(
        default="text/markdown",
        description="`text/markdown` (headings structure the passages) or `text/plain`",
    )

    def request(self, collection: str) -> knowledge_pb2.IngestDocumentRequest:
        return knowledge_pb2.IngestDocumentRequest(
            collection=collection,
            external_id=self.external_id or "",
            title=self.title,
            text=self.text,
            # Markdown is how the knowledge service reads text unless told "text/plain".
            content_type="text/plain" if self.content_type == "text/plain" else "",
            source=self.source,
            metadata=self.metadata,
        )


_INGESTED: dict[int | str, dict[str, Any]] = {
    200: {"description": "`unchanged`: the collection already holds exactly this"},
    202: {
        "description": "`created` or `updated`: stored and queued; follow `document.state` at "
        "`Location`",
        "headers": {"Location": {"description": "Path of the document", **_STRING}},
        "model": IngestOut,
    },
}


def _answer(reply: knowledge_pb2.IngestDocumentResponse, response: Response) -> IngestOut:
    ingested = IngestOut.of(reply)
    response.status_code = 200 if ingested.outcome == "unchanged" else 202
    response.headers["Location"] = f"/api/v1/knowledge/documents/{ingested.document.id}"
    return ingested


@router.post(
    "/collections/{collection}/documents",
    response_model=IngestOut,
    status_code=202,
    summary="Add a document as text",
    description="Markdown (or plain) text posted as JSON. Ingestion runs in the background: the "
    "document comes back `queued`; follow its state at `Location`. With an `externalId` the "
    "collection holds, the document is updated (a new version) or, when nothing changed, left "
    "alone (`unchanged`, 200). The text passes your tenant's DLP policy first.",
    responses={**_INGESTED, **_ERRORS, **problem_responses(404)},
)
async def add_text(
    collection: CollectionRef,
    body: TextDocument,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_knowledge)],
) -> IngestOut:
    reply = await knowledge_stub(ctx).IngestDocument(body.request(collection))
    return _answer(reply, response)


def _form_metadata(raw: str) -> dict[str, str]:
    """The `metadata` form field: a JSON object of strings."""
    if not raw:
        return {}
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise _form_error("metadata", 'must be a JSON object of strings, e.g. {"team": "it"}')
    try:
        metadata = DocumentFields(metadata=parsed).metadata
    except ValueError as exc:
        raise _form_error("metadata", str(exc).splitlines()[-1].strip()) from None
    return metadata


def _form_error(field: str, detail: str) -> ApiError:
    return ApiError(
        422,
        "validation_failed",
        f"/{field}: {detail}",
        errors=[{"in": "body", "pointer": f"/{field}", "detail": detail}],
    )


async def _pieces(
    first: knowledge_pb2.IngestDocumentRequest, file: UploadFile, head: bytes
) -> AsyncIterator[knowledge_pb2.UploadDocumentRequest]:
    yield knowledge_pb2.UploadDocumentRequest(document=first)
    if head:
        yield knowledge_pb2.UploadDocumentRequest(data=head)
    while piece := await file.read(UPLOAD_PIECE):
        yield knowledge_pb2.UploadDocumentRequest(data=piece)


async def _after_dlp(guard: DlpGuard, caller: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` redacted by the tenant's DLP policy, or 422 `sensitive_data_blocked`."""
    verdict = await guard.inspect(caller, fields)
    if verdict.blocked:
        detail, errors = blocked_problem(verdict.hits)
        raise ApiError(422, "sensitive_data_blocked", detail, errors=errors)
    clean: dict[str, Any] = verdict.clean
    return clean


async def _text_after_dlp(request: Request, caller: Principal, file: UploadFile) -> bytes:
    """A text file (Markdown, HTML, plain text: UTF-8 without NUL bytes, up to TEXT_DLP_MAX)
    read whole and passed through the tenant's DLP policy, as JSON text is: its redacted bytes,
    or 422 `sensitive_data_blocked`. Anything else (PDF, DOCX, larger files) is left for the
    knowledge service to read, unscanned: b"" and the file rewound."""
    data = await file.read(TEXT_DLP_MAX + 1)
    if len(data) > TEXT_DLP_MAX or b"\x00" in data:
        await file.seek(0)
        return b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        await file.seek(0)
        return b""
    clean = await _after_dlp(request.app.state.dlp, caller, {"file": text})
    return str(clean["file"]).encode("utf-8") if clean["file"] != text else data


@router.post(
    "/collections/{collection}/files",
    response_model=IngestOut,
    status_code=202,
    summary="Upload a file",
    description="Multipart: `file` (PDF, DOCX, HTML, Markdown or plain text, up to 100 MB; the "
    "format is read from the bytes, and a file name or content type that says otherwise fails "
    "the document with `format_mismatch`), optional `externalId`, `title`, `source` and "
    "`metadata` (a JSON object of strings). A text file (Markdown, HTML, plain text) up to 10 MB "
    "passes your tenant's DLP policy first. The file streams on to the knowledge service in "
    "pieces; a body over 100 MB is refused with 413 naming the limit. Ingestion runs in the "
    "background: a file that cannot be read (encrypted, corrupt, empty) becomes a `failed` "
    "document with the reason. As `/documents` otherwise (`externalId`, `unchanged`).",
    responses={**_INGESTED, **_ERRORS, **problem_responses(404, 413)},
)
async def upload_file(
    collection: CollectionRef,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_knowledge)],
    file: Annotated[UploadFile, File(description="The document")],
    external_id: Annotated[
        str,
        Form(alias="externalId", max_length=EXTERNAL_ID_MAX, pattern=SINGLE_LINE),
    ] = "",
    title: Annotated[str, Form(max_length=TITLE_MAX, pattern=SINGLE_LINE)] = "",
    source: Annotated[str, Form(max_length=SOURCE_MAX, pattern=SINGLE_LINE)] = "",
    metadata: Annotated[str, Form(max_length=200_000, description="A JSON object of strings")] = "",
) -> IngestOut:
    filename = (file.filename or "")[-FILENAME_MAX:]
    content_type = (file.content_type or "").split(";", 1)[0].strip().lower()
    guard: DlpGuard = request.app.state.dlp
    # The form's text fields pass DLP as a JSON body's would (the middleware reads JSON only).
    fields = await _after_dlp(
        guard,
        caller,
        {
            "externalId": external_id,
            "title": title,
            "source": source,
            "metadata": _form_metadata(metadata),
        },
    )
    first = knowledge_pb2.IngestDocumentRequest(
        collection=collection,
        external_id=fields["externalId"],
        title=fields["title"],
        filename=filename,
        content_type="" if content_type in _UNDECLARED else content_type,
        source=fields["source"],
        metadata=fields["metadata"],
    )
    head = await _text_after_dlp(request, caller, file)
    if not head:
        # A file the gateway cannot read (PDF, DOCX, text over the scan limit): the knowledge
        # service applies the tenant's policy to the text it reads from it.
        first.dlp_policy = DLP_POLICIES[await guard.policy(caller)]
    reply = await knowledge_stub(ctx).UploadDocument(
        _pieces(first, file, head), timeout=ctx.settings.knowledge_timeout_seconds
    )
    return _answer(reply, response)


class DocumentPage(PageOf):
    documents: list[DocumentOut]


@router.get(
    "/documents",
    response_model=DocumentPage,
    summary="List documents",
    description="Newest first; of one collection, in one state, or the one with an `externalId` "
    "(which needs `collection`).",
    responses={**_ERRORS, **problem_responses(404)},
)
async def list_documents(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_knowledge)],
    collection: Annotated[
        str, Query(max_length=100, pattern=SINGLE_LINE, description="Id or name")
    ] = "",
    state: Annotated[State | None, Query(description="Only documents in this state")] = None,
    external_id: Annotated[
        str, Query(alias="externalId", max_length=EXTERNAL_ID_MAX, pattern=SINGLE_LINE)
    ] = "",
) -> DocumentPage:
    if external_id and not collection:
        raise ApiError(
            422,
            "validation_failed",
            "externalId needs collection: external ids are unique per collection",
            errors=[
                {"in": "query", "pointer": "/collection", "detail": "required with externalId"}
            ],
        )
    request = knowledge_pb2.ListDocumentsRequest(
        collection=collection,
        state=STATE_VALUES[state] if state else knowledge_pb2.DOCUMENT_STATE_UNSPECIFIED,
        external_id=external_id,
    )
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListDocuments(request)
    return DocumentPage(
        documents=[DocumentOut.of(d) for d in reply.documents],
        next_page_token=reply.page.next_page_token,
    )


@router.get(
    "/documents/{documentId}",
    response_model=DocumentOut,
    summary="Get a document",
    description="Its current version: state (and why it failed), format, pages, passages.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_document(
    document_id: DocumentId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_knowledge)],
) -> DocumentOut:
    found = await knowledge_stub(ctx).GetDocument(
        knowledge_pb2.GetDocumentRequest(id=str(document_id))
    )
    return DocumentOut.of(found)


class VersionPage(PageOf):
    versions: list[VersionOut]


@router.get(
    "/documents/{documentId}/versions",
    response_model=VersionPage,
    summary="List a document's versions",
    description="Newest first; each with its state and how many passages were embedded anew or "
    "reused from the version before.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def list_versions(
    document_id: DocumentId,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_knowledge)],
) -> VersionPage:
    request = knowledge_pb2.ListDocumentVersionsRequest(document_id=str(document_id))
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListDocumentVersions(request)
    return VersionPage(
        versions=[VersionOut.of(v) for v in reply.versions],
        next_page_token=reply.page.next_page_token,
    )


class DocumentTextOut(ApiModel):
    document_id: UUID
    version: int
    text: str = Field(description="The stored text from `start` (included) to `end` (excluded)")
    start: int
    end: int
    text_length: int = Field(description="Characters of the whole stored text")


@router.get(
    "/documents/{documentId}/text",
    response_model=DocumentTextOut,
    summary="Read a document's text",
    description="The stored text every citation's offsets point into, or a range of it "
    "(characters, i.e. Unicode code points; at most 1,000,000 per call: read on from `end`). 409 "
    "`failed_precondition` while the version has no text (not parsed yet, or failed).",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def read_text(
    document_id: DocumentId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_knowledge)],
    version: Annotated[int, Query(ge=0, le=INT32_MAX, description="0: the current version")] = 0,
    start: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    end: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="0: start + 1,000,000 or the end")
    ] = 0,
) -> DocumentTextOut:
    if end and end < start:
        raise ApiError(
            422,
            "validation_failed",
            f"end ({end}) is before start ({start})",
            errors=[{"in": "query", "pointer": "/end", "detail": "must not be before start"}],
        )
    found = await knowledge_stub(ctx).ReadDocumentText(
        knowledge_pb2.ReadDocumentTextRequest(
            document_id=str(document_id), version=version, start=start, end=end
        )
    )
    return DocumentTextOut(
        document_id=UUID(found.document_id),
        version=found.version,
        text=found.text,
        start=found.start,
        end=found.end,
        text_length=found.text_length,
    )


class DocumentDeleted(ApiModel):
    versions_deleted: int
    chunks_deleted: int
    vectors_deleted: int = Field(description="Records removed from the vector index")
    keyword_entries_deleted: int = Field(description="Passages removed from the keyword index")
    provenance_deleted: int = Field(description="Graph provenance links removed")
    relations_deleted: int = Field(description="Relations left without provenance, removed")
    entities_deleted: int = Field(description="Entities left without mentions, removed")


@router.delete(
    "/documents/{documentId}",
    response_model=DocumentDeleted,
    summary="Delete a document",
    description="With every version, passage, vector, keyword index entry and graph provenance "
    "link derived from it. Says what was removed.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def delete_document(
    document_id: DocumentId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_knowledge)],
) -> DocumentDeleted:
    done = await knowledge_stub(ctx).DeleteDocument(
        knowledge_pb2.DeleteDocumentRequest(id=str(document_id))
    )
    return DocumentDeleted(
        versions_deleted=done.versions_deleted,
        chunks_deleted=done.chunks_deleted,
        vectors_deleted=done.vectors_deleted,
        keyword_entries_deleted=done.keyword_entries_deleted,
        provenance_deleted=done.provenance_deleted,
        relations_deleted=done.relations_deleted,
        entities_deleted=done.entities_deleted,
    )


# -- search -----------------------------------------------------------------------------------

Mode = Literal["hybrid", "vector", "keyword"]
MODES: dict[Mode, knowledge_pb2.SearchMode.ValueType] = {
    "hybrid": knowledge_pb2.SEARCH_MODE_HYBRID,
    "vector": knowledge_pb2.SEARCH_MODE_VECTOR,
    "keyword": knowledge_pb2.SEARCH_MODE_KEYWORD,
}
_MODE_NAMES: dict[int, Mode] = {value: name for name, value in MODES.items()}

FilterValues = Annotated[
    list[Annotated[str, Field(max_length=METADATA_VALUE_MAX)]], Field(min_length=1, max_length=100)
]


class SearchIn(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "How do I connect to the VPN?",
                    "collections": ["handbook"],
                    "k": 5,
                    "mode": "hybrid",
                    "filters": {"team": "it", "year": ["2024", "2025"]},
                }
            ]
        }
    )

    query: str = Field(min_length=1, max_length=QUERY_MAX, pattern=MULTI_LINE)
    collections: list[Annotated[str, Field(min_length=1, max_length=100, pattern=SINGLE_LINE)]] = (
        Field(
            default_factory=list,
            max_length=COLLECTIONS_MAX,
            description="Ids or names; empty: every collection of your tenant",
        )
    )
    k: int = Field(default=10, ge=1, le=K_MAX, description="Passages to return")
    mode: Mode = Field(
        default="hybrid",
        description="`hybrid` (vector and keyword scores fused, the keyword weight following "
        "how much of the query the best keyword passages hold, plus graph expansion), `vector` "
        "or `keyword`",
    )
    filters: dict[
        Annotated[str, Field(min_length=1, max_length=METADATA_KEY_MAX, pattern=SINGLE_LINE)],
        str | FilterValues,
    ] = Field(
        default_factory=dict,
        description="Metadata a document must have: each key's value, or one of its values "
        "(a list); every key must match. Up to 20 keys",
    )

    @field_validator("filters")
    @classmethod
    def _few_filters(cls, filters: dict[str, Any]) -> dict[str, Any]:
        if len(filters) > FILTERS_MAX:
            raise ValueError(f"at most {FILTERS_MAX} keys, got {len(filters)}")
        return filters


class ScoresOut(ApiModel):
    vector: float = Field(description="Cosine similarity of query and passage, -1..1")
    keyword: float = Field(description="BM25 score (0: not found by keywords)")
    graph: float = Field(
        description="Graph expansion's contribution (hybrid only): up to 0.25, in proportion "
        "to the passage's graph score, for a "
        "passage in the neighbourhood of an entity the query names; 0 otherwise"
    )
    vector_rank: int | None = Field(description="1-based rank by vector; null: not found so")
    keyword_rank: int | None
    graph_rank: int | None


class PassageOut(ApiModel):
    chunk_id: UUID
    document_id: UUID
    external_id: str | None
    collection_id: UUID
    title: str
    source: str
    text: str
    score: float = Field(
        description="What passages are ranked by: the fused score in `hybrid`, else the mode's"
    )
    scores: ScoresOut
    citation: CitationOut
    metadata: dict[str, str]

    @classmethod
    def of(cls, p: knowledge_pb2.Passage) -> PassageOut:
        parts = p.parts
        return cls(
            chunk_id=UUID(p.chunk_id),
            document_id=UUID(p.document_id),
            external_id=p.external_id or None,
            collection_id=UUID(p.collection_id),
            title=p.title,
            source=p.source,
            text=p.text,
            score=p.score,
            scores=ScoresOut(
                vector=parts.vector,
                keyword=parts.keyword,
                graph=parts.graph,
                vector_rank=parts.vector_rank or None,
                keyword_rank=parts.keyword_rank or None,
                graph_rank=parts.graph_rank or None,
            ),
            citation=CitationOut.of(p.citation),
            metadata=dict(p.metadata),
        )


class SearchOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "mode": "hybrid",
                    "passages": [
                        {
                            "chunkId": "0190d6a0-0000-7000-8000-0000000000d3",
                            "documentId": EXAMPLE_DOCUMENT_ID,
                            "externalId": "faq/vpn",
                            "collectionId": EXAMPLE_COLLECTION_ID,
                            "title": "VPN access",
                            "source": "",
                            "text": "Connect with the Acme VPN client; the server is "
                            "vpn.acme.example.",
                            "score": 0.9412,
                            "scores": {
                                "vector": 0.71,
                                "keyword": 7.42,
                                "graph": 0.0,
                                "vectorRank": 1,
                                "keywordRank": 2,
                                "graphRank": None,
                            },
                            "citation": {
                                "page": None,
                                "headingPath": ["VPN"],
                                "startOffset": 7,
                                "endOffset": 78,
                                "contentHash": "3b1f0c…",
                                "documentVersion": 1,
                                "chunkIndex": 0,
                            },
                            "metadata": {"team": "it"},
                        }
                    ],
                }
            ]
        }
    )

    mode: Mode = Field(description="The mode that ran")
    passages: list[PassageOut] = Field(description="Best first")


@router.post(
    "/search",
    response_model=SearchOut,
    summary="Search passages",
    description="The passages of your collections that best answer `query`, best first, each "
    "with its document, its score and the parts of it, and a citation that locates it in the "
    "source (page, headings, character offsets, content hash). The query passes your tenant's "
    "DLP policy first.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def search(
    body: SearchIn,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_knowledge)],
) -> SearchOut:
    request = knowledge_pb2.SearchRequest(
        query=body.query,
        collections=body.collections,
        k=body.k,
        mode=MODES[body.mode],
        origin=knowledge_pb2.SEARCH_ORIGIN_API,
    )
    for key, values in body.filters.items():
        request.filters.add(key=key, values=[values] if isinstance(values, str) else values)
    reply = await knowledge_stub(ctx).Search(request)
    return SearchOut(
        mode=_MODE_NAMES.get(reply.mode, body.mode),
        passages=[PassageOut.of(p) for p in reply.passages],
    )
