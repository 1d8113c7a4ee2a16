"""`/api/v1/export` and `/api/v1/import`: a tenant's personas, knowledge, workflow definitions and
tasks as NDJSON, read from one tenant and written into another through the services' own RPCs.

The file is one record per line, `{"kind": ..., "data": {...}}`, framed by a `header` (format and
version) and a `footer` (how many records, and what could not be exported). An import checks every
line before it changes anything (422 naming each bad line), then applies the records in dependency
order (collections, documents, personas, co-workers, workflows, tasks), remapping references to the
new tenant's ids, and answers with the outcome of every line. Natural keys make a second import of
the same file change nothing (docs/integration.md, "Import and export")."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import grpc
import orjson
from edrs_core import ServiceError
from edrs_proto.knowledge.v1 import knowledge_pb2
from edrs_proto.persona.v1 import persona_pb2
from edrs_proto.task.v1 import task_pb2, workflow_pb2
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from google.protobuf import json_format, struct_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from pydantic import ConfigDict, Field, ValidationError

from edrs_gateway.api.common import AUTHENTICATED, client_ip, problem_responses, upstream_responses
from edrs_gateway.api.knowledge import COLLECTION_NAME_PATTERN, DocumentOut
from edrs_gateway.api.knowledge import knowledge_stub as _knowledge_stub
from edrs_gateway.api.models import MULTI_LINE, SINGLE_LINE, ApiModel
from edrs_gateway.api.problems import ApiError, problem_of
from edrs_gateway.api.routes.coworkers import HANDOVER_MAX, RELATION_MAX, CoworkerOut
from edrs_gateway.api.routes.knowledge import DESCRIPTION_MAX as COLLECTION_DESCRIPTION_MAX
from edrs_gateway.api.routes.knowledge import TEXT_MAX as DOCUMENT_TEXT_MAX
from edrs_gateway.api.routes.knowledge import DocumentFields
from edrs_gateway.api.routes.personas import (
    CollectionRef,
    CreatePersona,
    PersonaOut,
    PersonaVoice,
    ToolPolicy,
    persona_stub,
)
from edrs_gateway.api.routes.tasks import CreateTask, TaskOut, task_stub
from edrs_gateway.api.routes.workflows import NAME as WORKFLOW_NAME
from edrs_gateway.api.routes.workflows import WorkflowOut, workflow_stub
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext
from edrs_gateway.edge.dlp import DlpGuard, blocked_problem, deeper_than
from edrs_gateway.identity.audit import actor_of

router = APIRouter(tags=["import and export"])
log = logging.getLogger("edrs.gateway.import_export")

export_tenant = require(Permission.TENANT_EXPORT)
import_tenant = require(Permission.TENANT_IMPORT)

NDJSON = "application/x-ndjson"
FORMAT = "edrs-export"
FORMAT_VERSION = 1
# Records per import: a tenant's worth, bounded so one request cannot hold the services for hours
# (a larger tenant is moved kind by kind: `kinds=`).
RECORDS_MAX = 20_000
# A refusal lists at most this many bad lines: enough to fix any systematic mistake.
ERRORS_MAX = 1000
# How deep a line's JSON may nest: a record is a few levels, a workflow spec some more; deeper
# would exhaust the recursion of the checks (DLP, protobuf) behind the parse, a 500 not a 422.
DEPTH_MAX = 32
# Pages read from the services while exporting.
PAGE_SIZE = 100

Kind = Literal["personas", "documents", "tasks", "workflows"]
KINDS: tuple[Kind, ...] = ("personas", "documents", "workflows", "tasks")
CSV_KINDS = ("personas", "tasks")
Outcome = Literal["created", "updated", "unchanged", "failed"]


# -- records ------------------------------------------------------------------------------------
# What each `data` holds on import. Exported records carry the public API's representation (ids,
# times, states) plus what a new tenant needs to rebuild references by name; import reads only the
# fields below and ignores the rest, so an export imports as it is.


class _Record(ApiModel):
    model_config = ConfigDict(extra="ignore")


class HeaderRecord(_Record):
    format: Literal["edrs-export"]
    version: Literal[1] = Field(description="The format's version; this gateway reads 1")


class CollectionRecord(_Record):
    name: str = Field(pattern=COLLECTION_NAME_PATTERN)
    description: str = Field(default="", max_length=COLLECTION_DESCRIPTION_MAX, pattern=MULTI_LINE)


class DocumentRecord(DocumentFields):
    model_config = ConfigDict(extra="ignore")

    collection_name: str = Field(pattern=COLLECTION_NAME_PATTERN)
    text: str = Field(min_length=1, max_length=DOCUMENT_TEXT_MAX, pattern=MULTI_LINE)
    format: str = Field(default="", max_length=20, description="`text` imports as plain text")


class CoworkerRecord(_Record):
    coworker_id: UUID | None = Field(default=None, description="The co-worker's id in the export")
    coworker_name: str = Field(min_length=1, max_length=200)
    relation: str = Field(default="", max_length=RELATION_MAX, pattern=SINGLE_LINE)
    handover: str = Field(default="", max_length=HANDOVER_MAX, pattern=MULTI_LINE)


class PersonaRecord(CreatePersona):
    model_config = ConfigDict(extra="ignore")

    id: UUID | None = Field(default=None, description="Its id in the export, for references")
    knowledge_collection_names: list[CollectionRef] = Field(default_factory=list, max_length=20)
    coworkers: list[CoworkerRecord] = Field(default_factory=list, max_length=200)
    status: Literal["active", "archived"] = "active"


class WorkflowRecord(_Record):
    name: str = Field(pattern=WORKFLOW_NAME)
    version: int = Field(default=0, ge=0)
    description: str = Field(default="", max_length=2000, pattern=MULTI_LINE)
    spec: dict[str, Any]


class TaskRecord(CreateTask):
    model_config = ConfigDict(extra="ignore")

    assignee_persona_name: str | None = Field(
        default=None, max_length=200, description="Matched by name when its id is not in the file"
    )


RECORDS: dict[str, type[ApiModel]] = {
    "header": HeaderRecord,
    "collection": CollectionRecord,
    "document": DocumentRecord,
    "persona": PersonaRecord,
    "workflow": WorkflowRecord,
    "task": TaskRecord,
}
# Framing lines an import accepts and skips (the footer), or refuses (an export that broke off).
FOOTER, BROKEN = "footer", "error"
# Problems that refuse a file even in `lenient` mode: what it is, or whether it is whole, is unknown.
FATAL_CODES = ("incomplete_export", "missing_header")


# -- export ---------------------------------------------------------------------------------------


def _line(kind: str, data: Any) -> bytes:
    return orjson.dumps({"kind": kind, "data": data}) + b"\n"


def _json(model: ApiModel) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    return dumped


def _kinds_of(raw: str) -> list[Kind]:
    wanted = [k.strip() for k in raw.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in KINDS]
    if unknown or not wanted:
        detail = f"unknown kind {unknown[0]!r}" if unknown else "names no kind"
        raise ApiError(
            422,
            "validation_failed",
            f"kinds {detail}: give some of {', '.join(KINDS)}, comma-separated",
            errors=[{"in": "query", "pointer": "/kinds", "detail": detail}],
        )
    return [k for k in KINDS if k in wanted]


async def _pages(call: Callable[[str], Any], items: Callable[[Any], Iterable[Any]]) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        reply = await call(token)
        found.extend(items(reply))
        token = reply.page.next_page_token
        if not token:
            return found


async def _collections(ctx: GatewayContext) -> list[knowledge_pb2.Collection]:
    def call(token: str) -> Any:
        request = knowledge_pb2.ListCollectionsRequest()
        request.page.page_size, request.page.page_token = PAGE_SIZE, token
        return _knowledge_stub(ctx).ListCollections(request)

    return await _pages(call, lambda r: r.collections)


async def _documents(ctx: GatewayContext, collection: str) -> list[knowledge_pb2.Document]:
    def call(token: str) -> Any:
        request = knowledge_pb2.ListDocumentsRequest(collection=collection)
        request.page.page_size, request.page.page_token = PAGE_SIZE, token
        return _knowledge_stub(ctx).ListDocuments(request)

    return await _pages(call, lambda r: r.documents)


async def _personas(ctx: GatewayContext) -> list[persona_pb2.Persona]:
    def call(token: str) -> Any:
        request = persona_pb2.ListPersonasRequest(include_archived=True)
        request.page.page_size, request.page.page_token = PAGE_SIZE, token
        return persona_stub(ctx).ListPersonas(request)

    return await _pages(call, lambda r: r.personas)


async def _tasks(ctx: GatewayContext) -> list[task_pb2.Task]:
    def call(token: str) -> Any:
        request = task_pb2.ListTasksRequest()
        request.page.page_size, request.page.page_token = PAGE_SIZE, token
        return task_stub(ctx).ListTasks(request)

    return await _pages(call, lambda r: r.tasks)


async def _workflow_versions(ctx: GatewayContext) -> list[workflow_pb2.WorkflowDefinition]:
    """Every version of every definition, each name's versions in order."""

    def call(token: str) -> Any:
        request = workflow_pb2.ListWorkflowDefinitionsRequest()
        request.page.page_size, request.page.page_token = PAGE_SIZE, token
        return workflow_stub(ctx).ListWorkflowDefinitions(request)

    latest = await _pages(call, lambda r: r.definitions)
    versions: list[workflow_pb2.WorkflowDefinition] = []
    for definition in latest:
        versions += await _versions_of(ctx, definition.name, definition.version)
    return versions


async def _versions_of(
    ctx: GatewayContext, name: str, latest: int
) -> list[workflow_pb2.WorkflowDefinition]:
    found = []
    for version in range(1, latest + 1):
        found.append(
            await workflow_stub(ctx).GetWorkflowDefinition(
                workflow_pb2.GetWorkflowDefinitionRequest(id=f"{name}@{version}")
            )
        )
    return found


async def _document_text(ctx: GatewayContext, document_id: str) -> str | None:
    """The stored text, read in the service's pieces; None while there is none (not parsed yet,
    or failed)."""
    parts: list[str] = []
    start = 0
    while True:
        try:
            piece = await _knowledge_stub(ctx).ReadDocumentText(
                knowledge_pb2.ReadDocumentTextRequest(document_id=document_id, start=start)
            )
        except ServiceError as exc:
            if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
                return None
            raise
        parts.append(piece.text)
        if piece.end >= piece.text_length or piece.end <= start:
            return "".join(parts)
        start = piece.end


@dataclass
class _Footer:
    records: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)


async def _export_records(
    ctx: GatewayContext, kinds: list[Kind], footer: _Footer
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    collection_names: dict[str, str] = {}
    collections: list[knowledge_pb2.Collection] = []
    if "documents" in kinds or "personas" in kinds:
        collections = await _collections(ctx)
        collection_names = {c.id: c.name for c in collections}
    if "documents" in kinds:
        for collection in collections:
            yield "collection", {"name": collection.name, "description": collection.description}
            # Oldest first, so a new tenant ingests them in the order the old one did.
            for document in reversed(await _documents(ctx, collection.id)):
                text = await _document_text(ctx, document.id)
                if text is None:
                    footer.skipped.append(
                        {
                            "kind": "document",
                            "id": document.id,
                            "reason": "it has no text yet (not parsed, or its ingestion failed)",
                        }
                    )
                    continue
                record = _json(DocumentOut.of(document))
                record.update(collectionName=collection.name, text=text)
                yield "document", record
    personas: list[persona_pb2.Persona] = []
    if "personas" in kinds or "tasks" in kinds:
        personas = await _personas(ctx)
    if "personas" in kinds:
        for persona in personas:
            record = _json(PersonaOut.of(persona))
            reply = await persona_stub(ctx).ListCoworkers(
                persona_pb2.ListCoworkersRequest(persona_id=persona.id)
            )
            record["knowledgeCollectionNames"] = [
                collection_names.get(c, c) for c in persona.knowledge_collections
            ]
            record["coworkers"] = [_json(CoworkerOut.of(c)) for c in reply.coworkers]
            yield "persona", record
    if "workflows" in kinds:
        for definition in await _workflow_versions(ctx):
            yield "workflow", _json(WorkflowOut.of(definition))
    if "tasks" in kinds:
        persona_names = {p.id: p.name for p in personas}
        for task in await _tasks(ctx):
            record = _json(TaskOut.of(task))
            record["assigneePersonaName"] = persona_names.get(task.assignee_persona_id)
            yield "task", record


async def _ndjson(ctx: GatewayContext, kinds: list[Kind], tenant_id: str) -> AsyncIterator[bytes]:
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tenantId": tenant_id,
        "kinds": list(kinds),
        "exportedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    yield _line("header", header)
    footer = _Footer()
    try:
        async for kind, data in _export_records(ctx, kinds, footer):
            footer.records += 1
            yield _line(kind, data)
    except ServiceError as exc:
        # The status line is sent: the break is said in the body, and an import refuses the file.
        problem = problem_of(exc)
        yield _line(BROKEN, {"code": problem.code, "detail": problem.detail})
        return
    except Exception:
        # Not a cut connection (a file without its footer), but a line an import refuses.
        log.exception("export of tenant %s broke off", tenant_id)
        detail = "internal error while exporting; quote the request id when reporting it"
        yield _line(BROKEN, {"code": "internal_error", "detail": detail})
        return
    yield _line(FOOTER, {"records": footer.records, "skipped": footer.skipped})


_CSV_COLUMNS: dict[str, list[str]] = {
    "personas": [
        "id", "name", "role", "status", "tone", "instructions", "responsibilities", "skills",
        "tools", "knowledgeCollectionNames", "createdAt", "updatedAt",
    ],
    "tasks": [
        "id", "title", "description", "status", "priority", "assigneePersonaId",
        "assigneePersonaName", "dueAt", "outcome", "parentTaskId", "createdAt", "updatedAt",
    ],
}  # fmt: skip


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): such a
# text cell is written with a leading apostrophe, which spreadsheets show as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return str(value)


async def _csv_rows(ctx: GatewayContext, kind: Kind) -> list[dict[str, Any]]:
    """Every row, read before the status line: a CSV has no way to say that it broke off, so a
    service that fails is the problem answer (502, 503, 504), not a table cut short."""
    return [data async for _, data in _export_records(ctx, [kind], _Footer())]


async def _csv(kind: Kind, rows: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    columns = _CSV_COLUMNS[kind]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    yield buffer.getvalue().encode()
    for data in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(data.get(c)) for c in columns])
        yield buffer.getvalue().encode()


_EXPORT_DESCRIPTION = (
    "Streams the tenant's records as NDJSON (`application/x-ndjson`): a `header` line "
    '(`{"kind": "header", "data": {"format": "edrs-export", "version": 1, ...}}`), one line per '
    "record (`collection`, `document` with its text, `persona` with its co-workers and "
    "collection names, `workflow` (one line per version), `task`), and a `footer` line with the "
    "record count and what could not be exported (documents without text yet). An export is "
    "complete only when its last line is the footer: if a service fails mid-stream the last line "
    "is an `error` record, and an import refuses such a file. `format=csv` gives one kind "
    "(`personas` or `tasks`) as CSV, list cells as JSON. Admins only."
)


@router.get(
    "/export",
    summary="Export the tenant",
    description=_EXPORT_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The records, one per line (or CSV rows)",
            "content": {NDJSON: {"schema": {"type": "string"}}, "text/csv": {}},
        },
        **problem_responses(*AUTHENTICATED),
        **upstream_responses(),
    },
)
async def export(
    request: Request,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(export_tenant)],
    kinds: Annotated[
        str,
        Query(
            max_length=200,
            description="Comma-separated: personas, documents (with their collections), "
            "workflows, tasks",
        ),
    ] = ",".join(KINDS),
    output_format: Annotated[
        Literal["ndjson", "csv"],
        Query(alias="format", description="`csv`: one tabular kind (personas, tasks)"),
    ] = "ndjson",
) -> StreamingResponse:
    wanted = _kinds_of(kinds)
    if output_format == "csv" and (len(wanted) != 1 or wanted[0] not in CSV_KINDS):
        raise ApiError(
            422,
            "validation_failed",
            "CSV holds one tabular kind: kinds=personas or kinds=tasks (documents and "
            "workflows nest text and definitions: export them as NDJSON)",
            errors=[{"in": "query", "pointer": "/kinds", "detail": "one of personas, tasks"}],
        )
    rows = await _csv_rows(ctx, wanted[0]) if output_format == "csv" else []
    await ctx.audit.record(
        caller.tenant_id, "tenant.exported", "success", actor=actor_of(caller),
        details={"kinds": list(wanted), "format": output_format}, ip=client_ip(request),
    )  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if output_format == "csv":
        return StreamingResponse(
            _csv(wanted[0], rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{wanted[0]}-{stamp}.csv"'},
        )
    return StreamingResponse(
        _ndjson(ctx, wanted, caller.tenant_id),
        media_type=NDJSON,
        headers={"Content-Disposition": f'attachment; filename="edrs-export-{stamp}.ndjson"'},
    )


# -- import ---------------------------------------------------------------------------------------


@dataclass
class _Line:
    number: int
    kind: str
    record: Any


class LineResult(ApiModel):
    line: int
    kind: str
    outcome: Outcome
    id: str = Field(default="", description="The resource's id in this tenant")
    detail: str = ""


class LineFailure(ApiModel):
    line: int
    kind: str
    code: str = Field(description="The problem code the record's own route would answer")
    detail: str


class ImportOut(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "imported": 5,
                    "unchanged": 1,
                    "failed": [
                        {
                            "line": 7,
                            "kind": "task",
                            "code": "not_found",
                            "detail": "assignee persona 'Ada' is neither in the file nor here",
                        }
                    ],
                    "records": [
                        {"line": 2, "kind": "collection", "outcome": "created", "id": "0190..."}
                    ],
                }
            ]
        }
    )

    imported: int = Field(description="Records created or updated")
    unchanged: int = Field(description="Records the tenant already held (natural keys)")
    failed: list[LineFailure] = Field(description="Records that could not be applied, by line")
    records: list[LineResult] = Field(description="The outcome of every record line")


def _error(number: int, kind: str | None, code: str, pointer: str, detail: str) -> dict[str, Any]:
    return {
        "in": "body",
        "line": number,
        "kind": kind,
        "code": code,
        "pointer": pointer,
        "detail": f"line {number}: {detail}",
    }


def _loc_pointer(loc: Iterable[Any]) -> str:
    """A JSON pointer to the field pydantic names. Its locations already carry the wire (camelCase)
    names; a key of a map (metadata) is the file's own, and is escaped, not renamed."""
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in loc)
    return "/data/" + "/".join(parts)


_BOM = b"\xef\xbb\xbf"


def _read_lines(body: bytes) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """(line number, parsed JSON) of every non-blank line, and the lines that are not JSON.
    Lines end in LF or CRLF; a UTF-8 byte order mark before line 1 (as some editors save) is
    skipped. More than RECORDS_MAX lines is a refusal before any is parsed."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    raws = body.split(b"\n")
    count = sum(1 for raw in raws if raw.strip())
    if count > RECORDS_MAX:
        raise ApiError(
            422,
            "validation_failed",
            f"the file holds {count} lines; the most per import is {RECORDS_MAX}: export "
            "and import fewer kinds at a time (kinds=)",
        )
    parsed: list[tuple[int, Any]] = []
    errors: list[dict[str, Any]] = []
    for number, raw in enumerate(raws, start=1):
        if not raw.strip():
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})"
            errors.append(_error(number, None, "invalid_json", "", detail))
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            errors.append(_error(number, None, "invalid_json", "", f"is not JSON: {exc}"))
            continue
        if deeper_than(value, DEPTH_MAX):
            detail = f"nests deeper than {DEPTH_MAX} levels"
            errors.append(_error(number, None, "invalid_record", "", detail))
            continue
        parsed.append((number, value))
    return parsed, errors


_HEADER_EXAMPLE = '{"kind": "header", "data": {"format": "edrs-export", "version": 1}}'


def _validate(parsed: list[tuple[int, Any]], errors: list[dict[str, Any]]) -> list[_Line]:
    lines: list[_Line] = []
    seen: dict[tuple[str, ...], int] = {}
    records = [(n, v) for n, v in parsed]
    header_seen = False
    for index, (number, value) in enumerate(records):
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            errors.append(
                _error(number, None, "invalid_record", "/kind", 'must be {"kind": ..., "data": {}}')
            )
            continue
        kind = value["kind"]
        data = value.get("data")
        extra = sorted(set(value) - {"kind", "data"})
        if extra:
            errors.append(_error(number, kind, "invalid_record", f"/{extra[0]}", "unknown field"))
            continue
        if kind == BROKEN:
            errors.append(
                _error(number, kind, "incomplete_export", "/kind",
                       "the export broke off here (an `error` record): export again")
            )  # fmt: skip
            continue
        if kind == FOOTER:
            if index != len(records) - 1:
                errors.append(_error(number, kind, "invalid_record", "/kind", "must be last"))
            continue
        model = RECORDS.get(kind)
        if model is None:
            known = ", ".join([*RECORDS, FOOTER])
            errors.append(
                _error(number, kind, "unknown_kind", "/kind", f"unknown kind {kind!r}: {known}")
            )
            continue
        if (kind == "header") != (index == 0):
            if kind == "header":
                errors.append(_error(number, kind, "invalid_record", "/kind", "must be line 1"))
            else:
                detail = "a header must come first"
                errors.append(_error(number, kind, "missing_header", "/kind", detail))
            continue
        if not isinstance(data, dict):
            got = "missing" if data is None and "data" not in value else type(data).__name__
            detail = f"`data` must be an object, not {got}"
            errors.append(_error(number, kind, "invalid_record", "/data", detail))
            continue
        if kind == "header" and data.get("format") == FORMAT:
            version = data.get("version")
            if version != FORMAT_VERSION or isinstance(version, bool):
                detail = (
                    f"/data/version: {FORMAT} version {version!r} is not one this gateway reads "
                    f"(it reads {FORMAT_VERSION}): export again from a gateway of this version"
                )
                errors.append(_error(number, kind, "invalid_record", "/data/version", detail))
                continue
        try:
            record = model.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors():
                pointer = _loc_pointer(e["loc"])
                detail = f"{pointer}: {e['msg']}"
                errors.append(_error(number, kind, "invalid_record", pointer, detail))
            continue
        if kind == "header":
            header_seen = True
        key = _natural_key(kind, record)
        if key is not None:
            if key in seen:
                errors.append(
                    _error(number, kind, "duplicate_record", "/data",
                           f"repeats the record of line {seen[key]} ({', '.join(key[1:])})")
                )  # fmt: skip
                continue
            seen[key] = number
        lines.append(_Line(number, kind, record))
    if not header_seen and not any(
        e["code"] == "missing_header" or e["kind"] == "header" for e in errors
    ):
        # Line 1 is no header (it is some other bad line, or there is none): what the file is, or
        # where it came from, is unknown, so it is refused in both modes.
        first = [records[0][0]] if records else [e["line"] for e in errors[:1]]
        number = first[0] if first else 1
        what = "its first line is not a header" if first else "the file holds no line"
        detail = f"{what}: a file starts with {_HEADER_EXAMPLE}"
        errors.append(_error(number, None, "missing_header", "", detail))
    return lines


def _natural_key(kind: str, record: Any) -> tuple[str, ...] | None:
    if isinstance(record, CollectionRecord):
        return (kind, record.name)
    if isinstance(record, DocumentRecord) and record.external_id:
        return (kind, record.collection_name, record.external_id)
    if isinstance(record, WorkflowRecord) and record.version:
        return (kind, record.name, str(record.version))
    return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _same_spec(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # Both through a protobuf Struct, where every number is a double: 600 and 600.0 are one value.
    return _normalized(a) == _normalized(b)


def _normalized(spec: dict[str, Any]) -> dict[str, Any]:
    message = struct_pb2.Struct()
    message.update(spec)
    normalized: dict[str, Any] = json_format.MessageToDict(message)
    return normalized


_INGESTED: dict[int, Outcome] = {
    knowledge_pb2.INGEST_OUTCOME_CREATED: "created",
    knowledge_pb2.INGEST_OUTCOME_UPDATED: "updated",
    knowledge_pb2.INGEST_OUTCOME_UNCHANGED: "unchanged",
}


class _Importer:
    """Applies validated lines in dependency order; every line ends in `results` or `failures`."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.results: list[LineResult] = []
        self.failures: list[LineFailure] = []
        # The export's persona ids, mapped to this tenant's.
        self.persona_ids: dict[str, str] = {}
        # Personas here that a persona line of the file already is: two lines of one name (a
        # tenant may hold two personas of a name) are two personas, not one updated twice.
        self._claimed: set[str] = set()
        self._personas: list[persona_pb2.Persona] | None = None
        self._documents: dict[str, list[knowledge_pb2.Document]] = {}
        self._tasks: list[task_pb2.Task] | None = None

    def done(self, line: _Line, outcome: Outcome, id_: str = "", detail: str = "") -> None:
        self.results.append(LineResult(line=line.number, kind=line.kind, outcome=outcome, id=id_,
                                       detail=detail))  # fmt: skip

    def fail(self, line: _Line, code: str, detail: str) -> None:
        self.results.append(LineResult(line=line.number, kind=line.kind, outcome="failed",
                                       detail=detail))  # fmt: skip
        self.failures.append(LineFailure(line=line.number, kind=line.kind, code=code,
                                         detail=detail))  # fmt: skip

    async def apply(self, lines: list[_Line]) -> None:
        steps: list[tuple[str, Callable[[_Line], Any]]] = [
            ("collection", self.collection),
            ("document", self.document),
            ("persona", self.persona),
            ("workflow", self.workflow),
            ("task", self.task),
        ]
        for kind, step in steps:
            ordered = [line for line in lines if line.kind == kind]
            if kind == "workflow":
                ordered.sort(key=lambda line: (line.record.name, line.record.version))
            for line in ordered:
                try:
                    await step(line)
                except ServiceError as exc:
                    problem = problem_of(exc)
                    self.fail(line, problem.code, problem.detail)
            if kind == "persona":
                await self.coworkers([line for line in ordered if line.kind == "persona"])
        self.results.sort(key=lambda r: r.line)

    async def collection(self, line: _Line) -> None:
        record: CollectionRecord = line.record
        try:
            found = await _knowledge_stub(self.ctx).GetCollection(
                knowledge_pb2.GetCollectionRequest(id=record.name)
            )
            self.done(line, "unchanged", found.id)
            return
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        created = await _knowledge_stub(self.ctx).CreateCollection(
            knowledge_pb2.CreateCollectionRequest(name=record.name, description=record.description)
        )
        self.done(line, "created", created.id)

    async def document(self, line: _Line) -> None:
        record: DocumentRecord = line.record
        same = await self._same_document(record)
        if same is not None:
            self.done(line, "unchanged", same)
            return
        reply = await _knowledge_stub(self.ctx).IngestDocument(
            knowledge_pb2.IngestDocumentRequest(
                collection=record.collection_name,
                external_id=record.external_id or "",
                title=record.title,
                text=record.text,
                content_type="text/plain" if record.format == "text" else "",
                source=record.source,
                metadata=record.metadata,
            )
        )
        if reply.document.id:
            self._documents.setdefault(record.collection_name, []).append(reply.document)
        self.done(line, _INGESTED.get(reply.outcome, "created"), reply.document.id)

    async def _same_document(self, record: DocumentRecord) -> str | None:
        """The id of a document of the collection that already is this record: by externalId,
        else by title and text. Its stored text is compared, not only its input's hash, because
        an export carries the stored text: a Markdown document imported back into the tenant it
        came from would otherwise become a new version (or a copy) without its markup."""
        if record.collection_name not in self._documents:
            try:
                found = await _documents(self.ctx, record.collection_name)
            except ServiceError as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
                return None  # the ingestion says why, on this line
            self._documents[record.collection_name] = found
        digest = _sha256(record.text)
        for existing in self._documents[record.collection_name]:
            if record.external_id:
                if existing.external_id != record.external_id:
                    continue
                if (existing.title, existing.source, dict(existing.metadata)) != (
                    record.title, record.source, record.metadata,
                ):  # fmt: skip
                    return None  # changed: a new version
            elif existing.title != record.title:
                continue
            if existing.content_hash == digest:
                return existing.id
            if await _document_text(self.ctx, existing.id) == record.text:
                return existing.id
            if record.external_id:
                return None
        return None

    async def personas_here(self) -> list[persona_pb2.Persona]:
        if self._personas is None:
            self._personas = await _personas(self.ctx)
        return self._personas

    async def persona_named(
        self, name: str, skip: set[str] | frozenset[str] = frozenset()
    ) -> persona_pb2.Persona | None:
        """The oldest persona of that name here (archived ones included), but those in `skip`."""
        named = [p for p in await self.personas_here() if p.name == name and p.id not in skip]
        if not named:
            return None
        return min(named, key=lambda p: (p.create_time.seconds, p.create_time.nanos, p.id))

    async def persona(self, line: _Line) -> None:
        record: PersonaRecord = line.record
        fields = persona_pb2.Persona(
            name=record.name,
            role=record.role,
            responsibilities=record.responsibilities,
            skills=record.skills,
            tone=record.tone,
            instructions=record.instructions,
            voice=record.voice.to_proto(),
            tools=record.tools,
            tool_policy=record.tool_policy.proto(),
            # Names resolve in this tenant; ids are only meaningful in the tenant they came from.
            knowledge_collections=record.knowledge_collection_names or record.knowledge_collections,
        )
        existing = await self.persona_named(record.name, skip=self._claimed)
        if existing is None:
            persona = await persona_stub(self.ctx).CreatePersona(
                persona_pb2.CreatePersonaRequest(
                    name=fields.name, role=fields.role,
                    responsibilities=fields.responsibilities, skills=fields.skills,
                    tone=fields.tone, instructions=fields.instructions, voice=fields.voice,
                    tools=fields.tools, tool_policy=fields.tool_policy,
                    knowledge_collections=fields.knowledge_collections,
                )
            )  # fmt: skip
            (await self.personas_here()).append(persona)
            outcome: Outcome = "created"
        else:
            persona, outcome = await self._update_persona(existing, fields, record)
        if record.status == "archived" and persona.status != persona_pb2.PERSONA_STATUS_ARCHIVED:
            persona = await persona_stub(self.ctx).ArchivePersona(
                persona_pb2.ArchivePersonaRequest(id=persona.id)
            )
            outcome = "created" if outcome == "created" else "updated"
        if record.id is not None:
            self.persona_ids[str(record.id)] = persona.id
        self._claimed.add(persona.id)
        self.done(line, outcome, persona.id)

    async def _update_persona(
        self, existing: persona_pb2.Persona, fields: persona_pb2.Persona, record: PersonaRecord
    ) -> tuple[persona_pb2.Persona, Outcome]:
        """The fields that differ, compared as the API shows them (defaults filled in, collections
        by name), updated; nothing when none does."""
        names = {c.id: c.name for c in await _collections(self.ctx)}
        now = PersonaOut.of(existing)
        current = {
            "role": now.role, "responsibilities": now.responsibilities, "skills": now.skills,
            "tone": now.tone, "instructions": now.instructions, "voice": now.voice,
            "tools": now.tools, "tool_policy": now.tool_policy,
            "knowledge_collections": [names.get(str(c), str(c)) for c in now.knowledge_collections],
        }  # fmt: skip
        target = {
            "role": record.role, "responsibilities": record.responsibilities,
            "skills": record.skills, "tone": record.tone, "instructions": record.instructions,
            # Through the proto, as the stored values went: a speed of 1.2 is a float32 there.
            "voice": PersonaVoice(name=fields.voice.name, speed=fields.voice.speed or 1.0),
            "tools": record.tools, "tool_policy": ToolPolicy.of(fields.tool_policy),
            "knowledge_collections": list(fields.knowledge_collections),
        }  # fmt: skip
        changed = [path for path in current if current[path] != target[path]]
        if not changed:
            return existing, "unchanged"
        fields.id = existing.id
        updated = await persona_stub(self.ctx).UpdatePersona(
            persona_pb2.UpdatePersonaRequest(persona=fields, update_mask=FieldMask(paths=changed))
        )
        return updated, "updated"

    async def coworkers(self, lines: list[_Line]) -> None:
        """Co-workers once every persona of the file exists: ids of the export remapped, else the
        persona of that name here. A failure is reported on the persona's line."""
        imported = {
            r.line: r.id for r in self.results if r.kind == "persona" and r.outcome != "failed"
        }
        for line in lines:
            if line.number not in imported:
                continue
            record: PersonaRecord = line.record
            own: str | None = imported[line.number]
            for coworker in record.coworkers:
                other = self.persona_ids.get(str(coworker.coworker_id))
                if other is None:
                    match = await self.persona_named(coworker.coworker_name)
                    other = match.id if match else None
                if own is None or other is None:
                    self.failures.append(
                        LineFailure(
                            line=line.number, kind="persona", code="not_found",
                            detail=f"co-worker {coworker.coworker_name!r} is neither in the file "
                            "nor a persona here",
                        )
                    )  # fmt: skip
                    continue
                try:
                    await persona_stub(self.ctx).SetCoworker(
                        persona_pb2.SetCoworkerRequest(
                            persona_id=own, coworker_id=other,
                            relation=coworker.relation, handover=coworker.handover,
                        )
                    )  # fmt: skip
                except ServiceError as exc:
                    problem = problem_of(exc)
                    self.failures.append(
                        LineFailure(
                            line=line.number, kind="persona", code=problem.code,
                            detail=f"co-worker {coworker.coworker_name!r}: {problem.detail}",
                        )
                    )  # fmt: skip

    async def workflow(self, line: _Line) -> None:
        record: WorkflowRecord = line.record
        try:
            latest = await workflow_stub(self.ctx).GetWorkflowDefinition(
                workflow_pb2.GetWorkflowDefinitionRequest(id=record.name)
            )
            existing = await _versions_of(self.ctx, record.name, latest.version)
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            existing = []
        for definition in existing:
            if definition.description == record.description and _same_spec(
                json_format.MessageToDict(definition.spec), record.spec
            ):
                self.done(line, "unchanged", definition.id, f"version {definition.version}")
                return
        message = struct_pb2.Struct()
        message.update(record.spec)
        created = await workflow_stub(self.ctx).CreateWorkflowDefinition(
            workflow_pb2.CreateWorkflowDefinitionRequest(
                name=record.name, description=record.description, spec=message
            )
        )
        self.done(line, "created", created.id, f"version {created.version}")

    async def task(self, line: _Line) -> None:
        record: TaskRecord = line.record
        assignee = ""
        if record.assignee_persona_id is not None or record.assignee_persona_name:
            assignee = self.persona_ids.get(str(record.assignee_persona_id), "")
            if not assignee and record.assignee_persona_name:
                found = await self.persona_named(record.assignee_persona_name)
                assignee = found.id if found else ""
            if not assignee:
                name = record.assignee_persona_name or str(record.assignee_persona_id)
                self.fail(line, "not_found", f"assignee persona {name!r} is neither in the file "
                          "nor a persona here")  # fmt: skip
                return
        for existing in await self.tasks_here():
            if existing.title == record.title and existing.description == record.description:
                self.done(line, "unchanged", existing.id)
                return
        message = task_pb2.CreateTaskRequest(
            title=record.title,
            description=record.description,
            assignee_persona_id=assignee,
            priority=record.priority,
        )
        if record.due_at is not None:
            message.due_time.FromDatetime(record.due_at.astimezone(UTC))
        if record.budget is not None:
            message.budget.CopyFrom(
                task_pb2.TaskBudget(
                    max_tokens=record.budget.max_tokens,
                    max_tool_calls=record.budget.max_tool_calls,
                    max_cost_micros=record.budget.max_cost_micros,
                )
            )
        created = await task_stub(self.ctx).CreateTask(message)
        (await self.tasks_here()).append(created)
        self.done(line, "created", created.id)

    async def tasks_here(self) -> list[task_pb2.Task]:
        if self._tasks is None:
            self._tasks = await _tasks(self.ctx)
        return self._tasks


_IMPORT_DESCRIPTION = (
    "The body is an export (`application/x-ndjson`, as `GET /export` writes it). Every line is "
    "checked first: JSON, a known `kind`, a header on line 1, each record's fields as the "
    "resource's own route checks them, no key twice. Any bad line: 422 `validation_failed` whose "
    "`errors` name each bad line (`line`, `kind`, `code`, `pointer`, `detail`), and nothing is "
    "imported (`mode=lenient`: bad lines are listed in `failed` and the good ones imported). Then the records are applied in dependency order (collections, documents, "
    "personas and their co-workers, workflows, tasks), references remapped to this tenant's "
    "ids; a record the tenant already holds (by its natural key) is `unchanged` or `updated`, "
    "never duplicated. A record that fails (a duplicate, a missing reference) fails alone and is "
    "listed in `failed` with its line: check `failed` before trusting an import. Admins only."
)


@router.post(
    "/import",
    response_model=ImportOut,
    summary="Import records into the tenant",
    description=_IMPORT_DESCRIPTION,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                NDJSON: {
                    "schema": {"type": "string"},
                    "example": '{"kind": "header", "data": {"format": "edrs-export", '
                    '"version": 1}}\n{"kind": "collection", "data": {"name": "handbook"}}\n'
                    '{"kind": "document", "data": {"collectionName": "handbook", '
                    '"externalId": "faq/vpn", "title": "VPN", "text": "Use the VPN client."}}\n',
                }
            },
        }
    },
    responses={
        **problem_responses(*AUTHENTICATED, 413, 415),
        **upstream_responses(),
    },
)
async def import_records(
    request: Request,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(import_tenant)],
    mode: Annotated[
        Literal["strict", "lenient"],
        Query(
            description="`strict`: any bad line refuses the whole file (422, nothing imported). "
            "`lenient`: bad lines are listed in `failed` with their line and the good ones are "
            "imported; a file without a valid header, or one that broke off, is still refused"
        ),
    ] = "strict",
) -> ImportOut:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != NDJSON:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the export as {NDJSON}, not {media or 'no type'}",
        )
    parsed, errors = _read_lines(await request.body())
    parsed = await _guard(request, caller, parsed)
    lines = _validate(parsed, errors)
    errors.sort(key=lambda e: e["line"])
    fatal = any(e["code"] in FATAL_CODES or e["kind"] == "header" for e in errors)
    if errors and (mode == "strict" or fatal):
        shown = errors[:ERRORS_MAX]
        more = (
            f" (the first {ERRORS_MAX} of {len(errors)} shown)" if len(errors) > ERRORS_MAX else ""
        )
        raise ApiError(
            422,
            "validation_failed",
            f"{len(errors)} problem(s) in the file{more}, nothing imported; first: "
            f"{shown[0]['detail']}",
            errors=shown,
        )
    importer = _Importer(ctx)
    for error in errors:  # lenient: each bad line is a failure of its own, the others go on
        kind, detail = error["kind"] or "", error["detail"]
        importer.results.append(
            LineResult(line=error["line"], kind=kind, outcome="failed", detail=detail)
        )
        importer.failures.append(
            LineFailure(line=error["line"], kind=kind, code=error["code"], detail=detail)
        )
    await importer.apply([line for line in lines if line.kind != "header"])
    results = importer.results
    outcome: Literal["success", "failure"] = "failure" if importer.failures else "success"
    answer = ImportOut(
        imported=sum(r.outcome in ("created", "updated") for r in results),
        unchanged=sum(r.outcome == "unchanged" for r in results),
        failed=sorted(importer.failures, key=lambda f: f.line),
        records=results,
    )
    await ctx.audit.record(
        caller.tenant_id, "tenant.imported", outcome, actor=actor_of(caller),
        details={"imported": answer.imported, "unchanged": answer.unchanged,
                 "failed": len(answer.failed)},
        ip=client_ip(request),
    )  # fmt: skip
    return answer


async def _guard(
    request: Request, caller: Principal, parsed: list[tuple[int, Any]]
) -> list[tuple[int, Any]]:
    """DLP on every record, as the middleware does on JSON bodies (NDJSON is not JSON to it):
    redacted, or 422 `sensitive_data_blocked` with pointers `/<line>/data/...`."""
    guard: DlpGuard = request.app.state.dlp
    verdict = await guard.inspect(caller, {str(n): v for n, v in parsed})
    if verdict.blocked:
        detail, errors = blocked_problem(verdict.hits)
        for error in errors:
            # As every error of this route: the line first, for people and `edrs import`.
            number = int(error["pointer"].split("/")[1])
            error["line"] = number
            error["detail"] = f"line {number}: {error['detail']} at {error['pointer']}"
        raise ApiError(422, "sensitive_data_blocked", detail, errors=errors)
    clean: dict[str, Any] = verdict.clean
    return [(n, clean[str(n)]) for n, _ in parsed]
