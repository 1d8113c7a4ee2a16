"""`/api/v1/knowledge/.../imports`: many documents in one request (NDJSON or a JSON array), ingested
in the background as an import job whose progress the client follows.

The whole body is checked before anything is sent on: a bad document is a 422 naming its position
and field, and then nothing of the request is stored (as the knowledge service does itself). DLP:
a JSON array passes the DLP middleware like every JSON body; NDJSON is not JSON to the middleware,
so this route applies the same guard to its documents, with the same pointers (`/3/text`)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import orjson
from edrs_proto.knowledge.v1 import knowledge_pb2
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.knowledge import (
    DLP_POLICIES,
    FILENAME_MAX,
    OUTCOMES,
    STATES,
    CollectionRef,
    FailureOut,
    ImportJobOut,
    JobId,
    Outcome,
    State,
    failure_of,
    knowledge_stub,
)
from edrs_gateway.api.models import MULTI_LINE, SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.api.problems import ApiError
from edrs_gateway.api.routes.knowledge import (
    TEXT_MAX,
    DocumentFields,
    read_knowledge,
    write_knowledge,
)
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx
from edrs_gateway.edge.dlp import DlpGuard, blocked_problem

router = APIRouter(prefix="/knowledge", tags=["knowledge"])

NDJSON = "application/x-ndjson"
# Documents per request: thousands, bounded so one request cannot hold the service for hours.
DOCUMENTS_MAX = 10_000
# A document's file bytes travel in one gRPC message (4 MiB); bigger files go through `/files`.
CONTENT_MAX = 3 * 1024 * 1024
# A refusal lists the problems of the first documents only: enough to fix a systematic mistake.
ERRORS_MAX = 100

_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}


class ImportDocument(DocumentFields):
    """One document of an import: `text`, or a file's bytes in `contentBase64`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"externalId": "kb/1", "title": "Returns", "text": "Returns are free for 30 days."},
                {
                    "externalId": "kb/2",
                    "filename": "warranty.pdf",
                    "contentBase64": "JVBERi0xLjcK...",
                    "metadata": {"team": "support"},
                },
            ]
        }
    )

    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=TEXT_MAX,
        pattern=MULTI_LINE,
        description="Markdown (or plain, with contentType text/plain) text",
    )
    content_base64: str | None = Field(
        default=None,
        min_length=1,
        description="A file's bytes, base64 (PDF, DOCX, HTML, Markdown, text; up to 3 MiB "
        "decoded: larger files go through `/files`)",
    )
    filename: str = Field(
        default="",
        max_length=FILENAME_MAX,
        pattern=SINGLE_LINE,
        description="The file's name; its extension must agree with the bytes",
    )
    content_type: str = Field(
        default="",
        max_length=200,
        pattern=SINGLE_LINE,
        description="The media type; with `text`: `text/markdown` (default) or `text/plain`",
    )

    @model_validator(mode="after")
    def _one_body(self) -> ImportDocument:
        if (self.text is None) == (self.content_base64 is None):
            raise ValueError("give exactly one of text and contentBase64")
        return self

    def request(self) -> knowledge_pb2.IngestDocumentRequest:
        message = knowledge_pb2.IngestDocumentRequest(
            external_id=self.external_id or "",
            title=self.title,
            filename=self.filename,
            content_type=self.content_type,
            source=self.source,
            metadata=self.metadata,
        )
        if self.text is not None:
            message.text = self.text
        else:
            message.content = _decoded(self.content_base64 or "")
        return message


def _decoded(data: str) -> bytes:
    # Checked in `_parse_documents`; here it cannot fail.
    return base64.b64decode(data, validate=True)


def _invalid(errors: list[dict[str, Any]]) -> ApiError:
    first = errors[0]
    where = first["pointer"] or "body"
    return ApiError(422, "validation_failed", f"{where}: {first['detail']}", errors=errors)


def _pointer(position: int, loc: Sequence[Any]) -> str:
    parts = [str(position), *(to_camel(p) if isinstance(p, str) else str(p) for p in loc)]
    return "/" + "/".join(parts)


def _raw_documents(body: bytes, media: str) -> list[Any]:
    """The documents of the body, before validation: a JSON array, or one JSON value per line."""
    if media == NDJSON:
        documents: list[Any] = []
        for number, line in enumerate(body.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                documents.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                detail = f"line {number} is not JSON: {exc}"
                raise _invalid([{"in": "body", "pointer": "", "detail": detail}]) from None
        return documents
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = f"the body is not JSON: {exc}"
        raise _invalid([{"in": "body", "pointer": "", "detail": detail}]) from None
    if not isinstance(parsed, list):
        raise _invalid(
            [{"in": "body", "pointer": "", "detail": "must be a JSON array of documents"}]
        )
    return parsed


def _parse_documents(raw: list[Any]) -> list[ImportDocument]:
    if not raw:
        raise _invalid([{"in": "body", "pointer": "", "detail": "holds no document"}])
    if len(raw) > DOCUMENTS_MAX:
        raise _invalid(
            [
                {
                    "in": "body",
                    "pointer": "",
                    "detail": f"holds {len(raw)} documents; the most per request is "
                    f"{DOCUMENTS_MAX}: send the rest in another request",
                }
            ]
        )
    documents: list[ImportDocument] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(raw):
        if len(errors) >= ERRORS_MAX:
            break
        try:
            document = ImportDocument.model_validate(item)
        except ValidationError as exc:
            errors += [
                {"in": "body", "pointer": _pointer(position, e["loc"]), "detail": e["msg"]}
                for e in exc.errors()
            ]
            continue
        if document.content_base64 is not None:
            try:
                size = len(base64.b64decode(document.content_base64, validate=True))
            except (binascii.Error, ValueError):
                size = -1
            if size < 0 or size > CONTENT_MAX:
                detail = (
                    "is not valid base64"
                    if size < 0
                    else f"decodes to {size} bytes; the most is {CONTENT_MAX} (upload larger "
                    "files through /files)"
                )
                pointer = _pointer(position, ["contentBase64"])
                errors.append({"in": "body", "pointer": pointer, "detail": detail})
                continue
        if document.external_id is not None:
            if document.external_id in seen:
                errors.append(
                    {
                        "in": "body",
                        "pointer": _pointer(position, ["externalId"]),
                        "detail": f"repeats the externalId of document {seen[document.external_id]}",
                    }
                )
                continue
            seen[document.external_id] = position
        documents.append(document)
    if errors:
        raise _invalid(errors)
    return documents


async def _guard_ndjson(request: Request, caller: Principal, raw: list[Any]) -> list[Any]:
    """DLP on NDJSON documents, as the middleware does on JSON bodies (redact, or refuse)."""
    guard: DlpGuard = request.app.state.dlp
    verdict = await guard.inspect(caller, raw)
    if verdict.blocked:
        detail, errors = blocked_problem(verdict.hits)
        raise ApiError(422, "sensitive_data_blocked", detail, errors=errors)
    clean: list[Any] = verdict.clean
    return clean


async def _messages(
    collection: str, documents: list[ImportDocument], dlp_policy: knowledge_pb2.DlpPolicy.ValueType
) -> AsyncIterator[knowledge_pb2.ImportDocumentsRequest]:
    yield knowledge_pb2.ImportDocumentsRequest(
        header=knowledge_pb2.ImportHeader(collection=collection)
    )
    for document in documents:
        message = document.request()
        if message.WhichOneof("body") == "content":
            message.dlp_policy = dlp_policy
        yield knowledge_pb2.ImportDocumentsRequest(document=message)


_JOB_LOCATION = {
    "Location": {"description": "Path of the import job", "schema": {"type": "string"}}
}


@router.post(
    "/collections/{collection}/imports",
    status_code=202,
    response_model=ImportJobOut,
    summary="Import many documents",
    description=(
        "Up to 10,000 documents in one request (up to 100 MB), as `application/x-ndjson` (one "
        "JSON document per line) or `application/json` (an array). Each document is `text` or a "
        "file's bytes in `contentBase64`, with optional `externalId` (importing one the "
        "collection holds updates that document, or leaves it alone when nothing changed), "
        "`title`, `source`, `metadata`, `filename` and `contentType`. The whole request is "
        "checked first: a bad document is a 422 naming its position (`/3/text`) and nothing is "
        "stored. Then the documents are stored and the job is returned (`Location`): each is "
        "ingested in the background on its own, and one that fails does not stop the others. "
        "Poll the job for progress; its `items` say what became of each document. Text passes "
        "your tenant's DLP policy."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                NDJSON: {
                    "schema": {"type": "string"},
                    "example": '{"externalId": "kb/1", "text": "Returns are free for 30 days."}\n'
                    '{"externalId": "kb/2", "text": "Warranty lasts two years."}\n',
                },
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/ImportDocument"},
                        "maxItems": DOCUMENTS_MAX,
                    }
                },
            },
        }
    },
    responses={
        202: {"headers": _JOB_LOCATION},
        **_ERRORS,
        **problem_responses(404, 413, 415),
    },
)
async def import_documents(
    collection: CollectionRef,
    request: Request,
    response: Response,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_knowledge)],
) -> ImportJobOut:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (NDJSON, "application/json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the documents as {NDJSON} or application/json, not {media or 'no type'}",
        )
    raw = _raw_documents(await request.body(), media)
    if media == NDJSON:
        raw = await _guard_ndjson(request, caller, raw)
    documents = _parse_documents(raw)
    # A file's bytes (contentBase64) are not text the gateway can scan: the knowledge service
    # applies the tenant's DLP policy to the text it reads from them.
    guard: DlpGuard = request.app.state.dlp
    policy = DLP_POLICIES[await guard.policy(caller)]
    job = await knowledge_stub(ctx).ImportDocuments(
        _messages(collection, documents, policy), timeout=ctx.settings.knowledge_timeout_seconds
    )
    response.headers["Location"] = f"/api/v1/knowledge/imports/{job.id}"
    return ImportJobOut.of(job)


class ImportJobPage(PageOf):
    jobs: list[ImportJobOut]


@router.get(
    "/imports",
    response_model=ImportJobPage,
    summary="List import jobs",
    description="Newest first; of one collection with `collection`.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def list_imports(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_knowledge)],
    collection: Annotated[
        str, Query(max_length=100, pattern=SINGLE_LINE, description="Id or name")
    ] = "",
) -> ImportJobPage:
    request = knowledge_pb2.ListImportJobsRequest(collection=collection)
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListImportJobs(request)
    return ImportJobPage(
        jobs=[ImportJobOut.of(j) for j in reply.jobs], next_page_token=reply.page.next_page_token
    )


@router.get(
    "/imports/{jobId}",
    response_model=ImportJobOut,
    summary="Follow an import job",
    description="Its progress: documents pending, indexed, unchanged and failed; `done` once "
    "every document has reached its end.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_import(
    job_id: JobId,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(read_knowledge)],
) -> ImportJobOut:
    job = await knowledge_stub(ctx).GetImportJob(knowledge_pb2.GetImportJobRequest(id=str(job_id)))
    return ImportJobOut.of(job)


class ImportItemOut(ApiModel):
    position: int = Field(description="0-based position in the import request")
    document_id: str
    external_id: str | None
    title: str
    outcome: Outcome
    state: State = Field(description="Of the version this job wrote (the current when unchanged)")
    failure: FailureOut | None
    version: int

    @classmethod
    def of(cls, i: knowledge_pb2.ImportJobItem) -> ImportItemOut:
        return cls(
            position=i.position,
            document_id=i.document_id,
            external_id=i.external_id or None,
            title=i.title,
            outcome=OUTCOMES.get(i.outcome, "created"),
            state=STATES.get(i.state, "queued"),
            failure=failure_of(i.state, i.failure),
            version=i.version,
        )


class ImportItemPage(PageOf):
    items: list[ImportItemOut]


@router.get(
    "/imports/{jobId}/items",
    response_model=ImportItemPage,
    summary="What became of each imported document",
    description="In the order they were sent, each with its outcome, state and, when it "
    "failed, why; only the failed ones with `failedOnly=true`.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def list_import_items(
    job_id: JobId,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_knowledge)],
    failed_only: Annotated[bool, Query(alias="failedOnly")] = False,
) -> ImportItemPage:
    request = knowledge_pb2.ListImportJobItemsRequest(job_id=str(job_id), failed_only=failed_only)
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await knowledge_stub(ctx).ListImportJobItems(request)
    return ImportItemPage(
        items=[ImportItemOut.of(i) for i in reply.items],
        next_page_token=reply.page.next_page_token,
    )
