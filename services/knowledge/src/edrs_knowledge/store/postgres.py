"""PostgreSQL adapter of the knowledge store: collections, documents and their versions, passages
with provenance, import jobs and the graph's tables. Every query names the tenant."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page, page_size

from edrs_knowledge.graph import FUNCTIONAL, ExtractedEntity, ExtractedRelation, Extraction
from edrs_knowledge.store import (
    PENDING_STATES,
    Collection,
    Deleted,
    Document,
    DocumentInput,
    Entity,
    ImportItem,
    ImportJob,
    Outcome,
    PassageRow,
    Relation,
    State,
    StoredChunk,
    Version,
    Work,
)

_DOCUMENT = """d.id, d.collection_id, d.external_id, d.title, d.source, d.metadata,
    d.created_at, d.updated_at, v.version, v.state, v.failure_code, v.failure_message, v.format,
    v.size_bytes, v.page_count, v.chunk_count, v.text_length, v.content_hash, v.redactions"""
_DOCUMENT_FROM = """documents d JOIN document_versions v
    ON v.document_id = d.id AND v.version = d.current_version"""
_VERSION = """document_id, version, title, metadata, state, failure_code, failure_message, format,
    size_bytes, page_count, chunk_count, text_length, content_hash, chunks_embedded,
    chunks_reused, created_at, redactions"""
_CHUNK = """c.id, c.document_id, c.collection_id, c.version, c.chunk_index, c.text, c.start_offset,
    c.end_offset, c.token_count, c.heading_path, c.page, c.content_hash"""
_PASSAGE = f"{_CHUNK}, d.external_id, d.title, d.source, d.metadata"


def _document(row: Any) -> Document:
    return Document(
        id=row["id"],
        collection_id=row["collection_id"],
        external_id=row["external_id"],
        title=row["title"],
        source=row["source"],
        metadata=json.loads(row["metadata"]),
        state=State(row["state"]),
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
        version=row["version"],
        format=row["format"],
        size_bytes=row["size_bytes"],
        page_count=row["page_count"],
        chunk_count=row["chunk_count"],
        text_length=row["text_length"],
        content_hash=row["content_hash"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        redactions=json.loads(row["redactions"]),
    )


def _version(row: Any) -> Version:
    return Version(
        document_id=row["document_id"],
        version=row["version"],
        title=row["title"],
        metadata=json.loads(row["metadata"]),
        state=State(row["state"]),
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
        format=row["format"],
        size_bytes=row["size_bytes"],
        page_count=row["page_count"],
        chunk_count=row["chunk_count"],
        text_length=row["text_length"],
        content_hash=row["content_hash"],
        chunks_embedded=row["chunks_embedded"],
        chunks_reused=row["chunks_reused"],
        created_at=row["created_at"],
        redactions=json.loads(row["redactions"]),
    )


def _chunk(row: Any) -> StoredChunk:
    return StoredChunk(
        id=row["id"],
        document_id=row["document_id"],
        collection_id=row["collection_id"],
        version=row["version"],
        index=row["chunk_index"],
        text=row["text"],
        start=row["start_offset"],
        end=row["end_offset"],
        token_count=row["token_count"],
        heading_path=tuple(row["heading_path"]),
        page=row["page"],
        content_hash=row["content_hash"],
    )


def _passage(row: Any) -> PassageRow:
    return PassageRow(
        chunk=_chunk(row),
        external_id=row["external_id"],
        title=row["title"],
        source=row["source"],
        metadata=json.loads(row["metadata"]),
    )


MAX_ENTITY_ALIASES = 50
# The relations of one query entity that graph expansion follows at most (the most recent).
GRAPH_EDGES = 200


def _aliases(name: str, forms: Iterable[str]) -> list[str]:
    """An entity's aliases: one per spelling that differs from its name by more than case (the
    first seen), sorted, at most MAX_ENTITY_ALIASES."""
    by_case: dict[str, str] = {}
    for form in forms:
        if form.casefold() != name.casefold():
            by_case.setdefault(form.casefold(), form)
    return sorted(by_case.values(), key=lambda f: (f.casefold(), f))[:MAX_ENTITY_ALIASES]


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def _number_token(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def _number_from_token(token: str) -> int | None:
    """The number a page token of ours carries; None for the first page."""
    if not token:
        return None
    try:
        return int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument(
            "page.page_token is not a token this service issued", field="page.page_token"
        ) from None


@dataclass(frozen=True)
class NewChunk:
    """A passage to store: a new one (embedded now) or one kept from the previous version."""

    id: UUID
    index: int
    text: str
    start: int
    end: int
    token_count: int
    heading_path: tuple[str, ...]
    page: int | None
    content_hash: str


class PostgresKnowledgeStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    # Collections

    async def create_collection(self, client_id: str, name: str, description: str) -> Collection:
        try:
            row = await self.db.fetchrow(
                """INSERT INTO collections (id, client_id, name, description)
                   VALUES ($1, $2, $3, $4) RETURNING id, name, description, created_at""",
                new_id(),
                client_id,
                name,
                description,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a collection named {name!r} already exists") from None
        assert row is not None
        return Collection(**dict(row), document_count=0, chunk_count=0)

    async def resolve_collection(self, client_id: str, ref: str, field: str) -> UUID:
        """The id of the tenant's collection named by `ref` (its id or its name)."""
        try:
            as_id: UUID | None = UUID(ref)
        except ValueError:
            as_id = None
        row = await self.db.fetchrow(
            "SELECT id FROM collections WHERE client_id = $1 AND (id = $2 OR name = $3)",
            client_id,
            as_id,
            ref,
        )
        if row is None:
            raise NotFound(f"{field}: collection {ref!r} not found")
        return UUID(str(row["id"]))

    async def collection_ids(self, client_id: str) -> list[UUID]:
        rows = await self.db.fetch("SELECT id FROM collections WHERE client_id = $1", client_id)
        return [r["id"] for r in rows]

    async def _collections(self, client_id: str, rows: Sequence[Any]) -> list[Collection]:
        ids = [r["id"] for r in rows]
        counts = await self.db.fetch(
            """SELECT c.id,
                      (SELECT count(*) FROM documents d
                       WHERE d.client_id = $1 AND d.collection_id = c.id) AS documents,
                      (SELECT count(*) FROM chunks k
                       WHERE k.client_id = $1 AND k.collection_id = c.id) AS chunks
               FROM collections c WHERE c.client_id = $1 AND c.id = ANY($2::uuid[])""",
            client_id,
            ids,
        )
        by_id = {r["id"]: r for r in counts}
        return [
            Collection(
                id=r["id"],
                name=r["name"],
                description=r["description"],
                created_at=r["created_at"],
                document_count=by_id[r["id"]]["documents"],
                chunk_count=by_id[r["id"]]["chunks"],
            )
            for r in rows
        ]

    async def get_collection(self, client_id: str, collection_id: UUID) -> Collection:
        row = await self.db.fetchrow(
            "SELECT id, name, description, created_at FROM collections "
            "WHERE client_id = $1 AND id = $2",
            client_id,
            collection_id,
        )
        if row is None:
            raise NotFound(f"collection {collection_id} not found")
        [collection] = await self._collections(client_id, [row])
        return collection

    async def list_collections(
        self, client_id: str, page_token: str, size: int
    ) -> tuple[list[Collection], str]:
        rows, token = await keyset_page(
            self.db,
            table="collections",
            columns="id, name, description, created_at",
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=size,
        )
        return await self._collections(client_id, rows), token

    async def delete_collection(
        self, client_id: str, collection_id: UUID
    ) -> tuple[Deleted, list[UUID]]:
        """Delete the collection and everything in it, with a knowledge.document_deleted event
        per document, in one transaction; returns the counts and the removed documents' ids."""
        async with self.db.acquire() as conn, conn.transaction():
            await self._lock_graph(conn, client_id)
            documents = await conn.fetch(
                "SELECT id, external_id FROM documents "
                "WHERE client_id = $1 AND collection_id = $2 FOR UPDATE",
                client_id,
                collection_id,
            )
            counted = await self._count_derived(conn, client_id, [d["id"] for d in documents])
            graph = await self._graph_of(conn, client_id, [d["id"] for d in documents])
            for d in documents:
                await self._document_deleted(
                    conn, client_id, d["id"], d["external_id"], collection_id
                )
            await self._knowledge_updated(
                conn,
                client_id,
                collection_id,
                "collection_deleted",
                [d["id"] for d in documents],
                added=0,
                removed=counted.chunks,
            )
            await conn.execute(
                "DELETE FROM collections WHERE client_id = $1 AND id = $2",
                client_id,
                collection_id,
            )
            await self._drop_orphans(conn, client_id, *graph)
        return counted, [d["id"] for d in documents]

    # Documents: ingestion requests

    async def ingest(
        self, client_id: str, collection_id: UUID, document: DocumentInput, conn: Any = None
    ) -> tuple[Document, Outcome]:
        """Store a document's input as a new QUEUED version (a new document, or a new version of
        the one with that external_id), or nothing when it is the same as the current version."""
        if conn is None:
            async with self.db.acquire() as own, own.transaction():
                return await self.ingest(client_id, collection_id, document, own)
        digest = document.digest
        existing = None
        if document.external_id is not None:
            # Two requests for one new external_id at once: the unique index lets one insert,
            # and the lock serialises the versions of one that exists.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"{client_id}\x1f{collection_id}\x1f{document.external_id}",
            )
            existing = await conn.fetchrow(
                f"""SELECT {_DOCUMENT} FROM {_DOCUMENT_FROM}
                    WHERE d.client_id = $1 AND d.collection_id = $2 AND d.external_id = $3
                    FOR UPDATE OF d""",
                client_id,
                collection_id,
                document.external_id,
            )
        if existing is not None:
            current = _document(existing)
            if (
                current.state is not State.FAILED
                and current.content_hash == digest
                and current.metadata == document.metadata
                and current.source == document.source
                and document.title in ("", current.title)
            ):
                return current, Outcome.UNCHANGED
            document_id, version, outcome = current.id, current.version + 1, Outcome.UPDATED
            await conn.execute(
                """UPDATE documents SET current_version = $2, source = $3, metadata = $4::jsonb,
                       title = CASE WHEN $5 = '' THEN title ELSE $5 END, updated_at = now()
                   WHERE id = $1""",
                document_id,
                version,
                document.source,
                json.dumps(document.metadata),
                document.title,
            )
        else:
            document_id, version, outcome = new_id(), 1, Outcome.CREATED
            await conn.execute(
                """INSERT INTO documents
                       (id, client_id, collection_id, external_id, title, source, metadata)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
                document_id,
                client_id,
                collection_id,
                document.external_id,
                document.title or document.filename or document.external_id or "Untitled",
                document.source,
                json.dumps(document.metadata),
            )
        code, message = document.failure or ("", "")
        await conn.execute(
            """INSERT INTO document_versions
                   (client_id, document_id, version, title, metadata, state, input, input_is_text,
                    filename, content_type, content_hash, size_bytes, failure_code,
                    failure_message, dlp_policy, finished_at)
               VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                       CASE WHEN $6 = 'failed' THEN now() END)""",
            client_id,
            document_id,
            version,
            document.title,
            json.dumps(document.metadata),
            State.FAILED.value if document.failure else State.QUEUED.value,
            None if document.failure else document.data,
            document.is_text,
            document.filename,
            document.content_type,
            digest,
            document.size,
            code,
            message,
            document.dlp_policy,
        )
        row = await conn.fetchrow(
            f"SELECT {_DOCUMENT} FROM {_DOCUMENT_FROM} WHERE d.id = $1", document_id
        )
        return _document(row), outcome

    async def create_import(
        self, client_id: str, collection_id: UUID, documents: Sequence[DocumentInput]
    ) -> ImportJob:
        """Store every document of a batch and the job that follows them, in one transaction."""
        job_id = new_id()
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO import_jobs (id, client_id, collection_id, total) VALUES ($1,$2,$3,$4)",
                job_id,
                client_id,
                collection_id,
                len(documents),
            )
            items = []
            for position, document in enumerate(documents):
                stored, outcome = await self.ingest(client_id, collection_id, document, conn)
                items.append((job_id, position, stored.id, stored.version, outcome.value))
            await conn.executemany(
                """INSERT INTO import_job_items (job_id, position, document_id, version, outcome)
                   VALUES ($1, $2, $3, $4, $5)""",
                items,
            )
        return await self.get_import_job(client_id, job_id)

    # Documents: reads

    async def get_document(self, client_id: str, document_id: UUID) -> Document:
        row = await self.db.fetchrow(
            f"SELECT {_DOCUMENT} FROM {_DOCUMENT_FROM} WHERE d.client_id = $1 AND d.id = $2",
            client_id,
            document_id,
        )
        if row is None:
            raise NotFound(f"document {document_id} not found")
        return _document(row)

    async def list_documents(
        self,
        client_id: str,
        collection_id: UUID | None,
        state: State | None,
        external_id: str | None,
        page_token: str,
        size: int,
    ) -> tuple[list[Document], str]:
        where: list[str] = ["d.client_id = $1"]
        args: list[Any] = [client_id]
        for column, value in (
            ("d.collection_id", collection_id),
            ("v.state", state.value if state else None),
            ("d.external_id", external_id),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        # keyset_page orders by created_at and id: the join's columns are named so.
        rows, token = await keyset_page(
            self.db,
            table=f"(SELECT {_DOCUMENT} FROM {_DOCUMENT_FROM} WHERE {' AND '.join(where)}) AS page",
            columns="*",
            where="true",
            args=args,
            page_token=page_token,
            requested_size=size,
            descending=True,
        )
        return [_document(r) for r in rows], token

    async def list_versions(
        self, client_id: str, document_id: UUID, page_token: str, size: int
    ) -> tuple[list[Version], str]:
        await self.get_document(client_id, document_id)
        before = _number_from_token(page_token)
        limit = page_size(size)
        rows = await self.db.fetch(
            f"""SELECT {_VERSION} FROM document_versions
                WHERE client_id = $1 AND document_id = $2 AND ($3::int IS NULL OR version < $3)
                ORDER BY version DESC LIMIT $4""",
            client_id,
            document_id,
            before,
            limit + 1,
        )
        token = _number_token(rows[limit - 1]["version"]) if len(rows) > limit else ""
        return [_version(r) for r in rows[:limit]], token

    async def read_text(
        self, client_id: str, document_id: UUID, version: int, start: int, end: int | None
    ) -> tuple[int, str, int]:
        """The version's text[start:end] (end None: to the end), the version and its length.
        Offsets are in characters, as PostgreSQL's substr counts them."""
        document = await self.get_document(client_id, document_id)
        number = version or document.version
        row = await self.db.fetchrow(
            """SELECT text_length, state,
                      substr(text, $4::int + 1, CASE WHEN $5::bigint IS NULL THEN NULL
                                                     ELSE greatest($5::bigint - $4, 0) END::int)
                        AS part
               FROM document_versions WHERE client_id = $1 AND document_id = $2 AND version = $3""",
            client_id,
            document_id,
            number,
            start,
            end,
        )
        if row is None:
            raise NotFound(f"document {document_id} has no version {number}")
        if row["part"] is None:
            raise FailedPrecondition(
                f"version {number} of document {document_id} has no text (it is {row['state']})"
            )
        return number, row["part"], row["text_length"]

    async def delete_document(self, client_id: str, document_id: UUID) -> tuple[Deleted, UUID]:
        """Delete the document and everything derived from it, with its knowledge.document_deleted
        event, in one transaction; returns the counts and its collection."""
        async with self.db.acquire() as conn, conn.transaction():
            await self._lock_graph(conn, client_id)
            row = await conn.fetchrow(
                "SELECT collection_id, external_id FROM documents "
                "WHERE client_id = $1 AND id = $2 FOR UPDATE",
                client_id,
                document_id,
            )
            if row is None:
                raise NotFound(f"document {document_id} not found")
            counted = await self._count_derived(conn, client_id, [document_id])
            graph = await self._graph_of(conn, client_id, [document_id])
            await self._document_deleted(
                conn, client_id, document_id, row["external_id"], row["collection_id"]
            )
            await self._knowledge_updated(
                conn,
                client_id,
                row["collection_id"],
                "document_deleted",
                [document_id],
                added=0,
                removed=counted.chunks,
            )
            await conn.execute(
                "DELETE FROM documents WHERE client_id = $1 AND id = $2", client_id, document_id
            )
            orphans = await self._drop_orphans(conn, client_id, *graph)
        return (
            Deleted(
                documents=1,
                versions=counted.versions,
                chunks=counted.chunks,
                provenance=counted.provenance,
                relations=orphans[0],
                entities=orphans[1],
                chunk_ids=counted.chunk_ids,
            ),
            row["collection_id"],
        )

    async def _count_derived(
        self, conn: Any, client_id: str, document_ids: Sequence[UUID]
    ) -> Deleted:
        row = await conn.fetchrow(
            """SELECT
                 (SELECT count(*) FROM documents WHERE client_id = $1 AND id = ANY($2::uuid[]))
                   AS documents,
                 (SELECT count(*) FROM document_versions
                  WHERE client_id = $1 AND document_id = ANY($2::uuid[])) AS versions,
                 (SELECT count(*) FROM relation_sources s JOIN chunks c ON c.id = s.chunk_id
                  WHERE c.client_id = $1 AND c.document_id = ANY($2::uuid[])) +
                 (SELECT count(*) FROM entity_mentions m JOIN chunks c ON c.id = m.chunk_id
                  WHERE c.client_id = $1 AND c.document_id = ANY($2::uuid[])) AS provenance""",
            client_id,
            list(document_ids),
        )
        chunk_ids = await conn.fetch(
            "SELECT id FROM chunks WHERE client_id = $1 AND document_id = ANY($2::uuid[])",
            client_id,
            list(document_ids),
        )
        return Deleted(
            documents=row["documents"],
            versions=row["versions"],
            chunks=len(chunk_ids),
            provenance=row["provenance"],
            chunk_ids=tuple(r["id"] for r in chunk_ids),
        )

    async def _graph_of(
        self, conn: Any, client_id: str, document_ids: Sequence[UUID]
    ) -> tuple[list[UUID], list[UUID]]:
        """The relations the documents' passages are a source of and the entities they mention
        or those relations link: what may be left without provenance when the passages go."""
        row = await conn.fetchrow(
            """WITH r AS (
                 SELECT DISTINCT s.relation_id AS id FROM relation_sources s
                 JOIN chunks c ON c.id = s.chunk_id
                 WHERE c.client_id = $1 AND c.document_id = ANY($2::uuid[]))
               SELECT
                 (SELECT coalesce(array_agg(id), '{}') FROM r) AS relations,
                 (SELECT coalesce(array_agg(DISTINCT e), '{}') FROM (
                    SELECT m.entity_id AS e FROM entity_mentions m
                    JOIN chunks c ON c.id = m.chunk_id
                    WHERE c.client_id = $1 AND c.document_id = ANY($2::uuid[])
                    UNION SELECT x.subject_id FROM relations x JOIN r ON r.id = x.id
                    UNION SELECT x.object_id FROM relations x JOIN r ON r.id = x.id) t)
                   AS entities""",
            client_id,
            list(document_ids),
        )
        return list(row["relations"]), list(row["entities"])

    async def _drop_orphans(
        self, conn: Any, client_id: str, relations: Sequence[UUID], entities: Sequence[UUID]
    ) -> tuple[int, int]:
        """Of these relations and entities (`_graph_of`, taken before passages went), those
        left without a source passage, and entities left without a mention or a relation, are
        removed: nothing in the documents supports them any more."""
        # What a relation about to go had superseded stands again: nothing contradicts it now.
        gone = await conn.fetch(
            """SELECT r.id FROM relations r
               WHERE r.client_id = $1 AND r.id = ANY($2::uuid[])
                 AND NOT EXISTS (SELECT 1 FROM relation_sources s WHERE s.relation_id = r.id)""",
            client_id,
            list(relations),
        )
        gone_ids = [r["id"] for r in gone]
        await conn.execute(
            """UPDATE relations SET superseded_by = NULL, valid_to = NULL, supersede_reason = ''
               WHERE client_id = $1 AND superseded_by = ANY($2::uuid[])""",
            client_id,
            gone_ids,
        )
        await conn.execute(
            "DELETE FROM relations WHERE client_id = $1 AND id = ANY($2::uuid[])",
            client_id,
            gone_ids,
        )
        dropped = await conn.fetch(
            """DELETE FROM entities e WHERE e.client_id = $1 AND e.id = ANY($2::uuid[])
                 AND NOT EXISTS (SELECT 1 FROM entity_mentions m WHERE m.entity_id = e.id)
                 AND NOT EXISTS (SELECT 1 FROM relations r WHERE r.client_id = $1
                                 AND (r.subject_id = e.id OR r.object_id = e.id))
               RETURNING id""",
            client_id,
            list(entities),
        )
        return len(gone_ids), len(dropped)

    async def _document_deleted(
        self,
        conn: Any,
        client_id: str,
        document_id: UUID,
        external_id: str | None,
        collection_id: UUID,
    ) -> None:
        payload: dict[str, Any] = {
            "document_id": str(document_id),
            "collection_id": str(collection_id),
        }
        if external_id is not None:
            payload["external_id"] = external_id
        await self.events.add(
            conn,
            "knowledge.document_deleted",
            payload,
            aggregate_id=str(document_id),
            client_id=client_id,
        )

    # Ingestion work

    async def requeue_interrupted(self) -> int:
        """Versions a stopped process left half done go back to the queue (every tenant)."""
        result = await self.db.execute(
            "UPDATE document_versions SET state = 'queued' WHERE state IN ('parsing', 'embedding')"
        )
        return int(result.split()[-1])

    async def claim(self) -> Work | None:
        """Take the oldest QUEUED version (of any tenant) whose document has no older version
        still pending, and mark it PARSING; None when there is none. Versions of one document are
        processed in order, one at a time."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT v.client_id, v.document_id, v.version, v.title, v.metadata, v.input,
                          v.input_is_text, v.filename, v.content_type, v.dlp_policy,
                          d.collection_id, d.source, d.external_id
                   FROM document_versions v JOIN documents d ON d.id = v.document_id
                   WHERE v.state = 'queued'
                     AND NOT EXISTS (
                        SELECT 1 FROM document_versions o
                        WHERE o.document_id = v.document_id AND o.version < v.version
                          AND o.state IN ('queued', 'parsing', 'embedding'))
                   ORDER BY v.created_at, v.version
                   LIMIT 1
                   FOR UPDATE OF v SKIP LOCKED"""
            )
            if row is None:
                return None
            await conn.execute(
                "UPDATE document_versions SET state = 'parsing' "
                "WHERE document_id = $1 AND version = $2",
                row["document_id"],
                row["version"],
            )
        return Work(
            client_id=row["client_id"],
            collection_id=row["collection_id"],
            document_id=row["document_id"],
            version=row["version"],
            external_id=row["external_id"],
            title=row["title"],
            source=row["source"],
            metadata=json.loads(row["metadata"]),
            data=bytes(row["input"] or b""),
            is_text=row["input_is_text"],
            filename=row["filename"],
            content_type=row["content_type"],
            dlp_policy=row["dlp_policy"],
        )

    async def fail(self, work: Work, code: str, message: str) -> None:
        await self.db.execute(
            """UPDATE document_versions
               SET state = 'failed', failure_code = $4, failure_message = $5, input = NULL,
                   finished_at = now()
               WHERE client_id = $1 AND document_id = $2 AND version = $3""",
            work.client_id,
            work.document_id,
            work.version,
            code,
            message,
        )

    async def parsed(
        self,
        work: Work,
        *,
        title: str,
        text: str,
        format: str,
        pages: int,
        chunk_count: int,
        redactions: dict[str, int] | None = None,
    ) -> None:
        """Keep the version's text (and what DLP redacted from it) and move it on to EMBEDDING."""
        await self.db.execute(
            """UPDATE document_versions
               SET state = 'embedding', title = $4, text = $5, text_length = $6, format = $7,
                   page_count = $8, chunk_count = $9, redactions = $10::jsonb
               WHERE client_id = $1 AND document_id = $2 AND version = $3""",
            work.client_id,
            work.document_id,
            work.version,
            title,
            text,
            len(text),
            format,
            pages,
            chunk_count,
            json.dumps(redactions or {}),
        )

    async def document_chunks(self, client_id: str, document_id: UUID) -> list[StoredChunk]:
        rows = await self.db.fetch(
            f"""SELECT {_CHUNK} FROM chunks c
                WHERE c.client_id = $1 AND c.document_id = $2 ORDER BY c.chunk_index""",
            client_id,
            document_id,
        )
        return [_chunk(r) for r in rows]

    async def indexed(
        self,
        work: Work,
        *,
        title: str,
        chunks: Sequence[NewChunk],
        stale: Sequence[UUID],
        embedded: int,
        content_type: str,
        graph: Extraction | None = None,
    ) -> bool:
        """Make `chunks` the document's passages (dropping `stale` ones), write what the graph
        extraction read from them (`graph.passages` in the order of `chunks`), mark the version
        INDEXED and announce it, in one transaction. False when the document was deleted
        meanwhile (nothing is written)."""
        async with self.db.acquire() as conn, conn.transaction():
            await self._lock_graph(conn, work.client_id)
            alive = await conn.fetchval(
                "SELECT current_version FROM documents WHERE client_id = $1 AND id = $2 FOR UPDATE",
                work.client_id,
                work.document_id,
            )
            if alive is None:
                return False
            relations, entities = await self._graph_of(conn, work.client_id, [work.document_id])
            await conn.execute(
                "DELETE FROM chunks WHERE client_id = $1 AND id = ANY($2::uuid[])",
                work.client_id,
                list(stale),
            )
            await conn.executemany(
                """INSERT INTO chunks (id, client_id, collection_id, document_id, version,
                       chunk_index, text, start_offset, end_offset, token_count, heading_path,
                       page, content_hash)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                   ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version,
                       chunk_index = EXCLUDED.chunk_index, start_offset = EXCLUDED.start_offset,
                       end_offset = EXCLUDED.end_offset""",
                [
                    (
                        c.id,
                        work.client_id,
                        work.collection_id,
                        work.document_id,
                        work.version,
                        c.index,
                        c.text,
                        c.start,
                        c.end,
                        c.token_count,
                        list(c.heading_path),
                        c.page,
                        c.content_hash,
                    )
                    for c in chunks
                ],
            )
            if graph is not None:
                await self._write_graph(conn, work, chunks, graph, title)
            await self._drop_orphans(conn, work.client_id, relations, entities)
            await conn.execute(
                """UPDATE document_versions
                   SET state = 'indexed', input = NULL, chunks_embedded = $4,
                       chunks_reused = $5, finished_at = now()
                   WHERE client_id = $1 AND document_id = $2 AND version = $3""",
                work.client_id,
                work.document_id,
                work.version,
                embedded,
                len(chunks) - embedded,
            )
            if alive == work.version:
                await conn.execute(
                    "UPDATE documents SET title = $2 WHERE id = $1", work.document_id, title
                )
            await self.events.add(
                conn,
                "knowledge.document_ingested",
                {
                    "document_id": str(work.document_id),
                    "collection_id": str(work.collection_id),
                    "version": work.version,
                    "title": title,
                    "chunk_count": len(chunks),
                    "chunks_embedded": embedded,
                    "content_type": content_type,
                    **({"external_id": work.external_id} if work.external_id else {}),
                },
                aggregate_id=str(work.document_id),
                client_id=work.client_id,
            )
            await self._knowledge_updated(
                conn,
                work.client_id,
                work.collection_id,
                "document_indexed",
                [work.document_id],
                added=embedded,
                removed=len(stale),
            )
        return True

    async def _knowledge_updated(
        self,
        conn: Any,
        client_id: str,
        collection_id: UUID,
        reason: str,
        document_ids: Sequence[UUID],
        *,
        added: int,
        removed: int,
    ) -> None:
        await self.events.add(
            conn,
            "knowledge.knowledge_updated",
            {
                "collection_id": str(collection_id),
                "reason": reason,
                "document_ids": [str(d) for d in document_ids],
                "chunks_added": added,
                "chunks_removed": removed,
            },
            aggregate_id=str(collection_id),
            client_id=client_id,
        )

    # Search support

    async def documents_matching(
        self, client_id: str, collection_ids: Sequence[UUID], filters: Mapping[str, Sequence[str]]
    ) -> list[UUID]:
        """The tenant's documents in these collections whose metadata passes every filter."""
        args: list[Any] = [client_id, list(collection_ids)]
        where = ["client_id = $1", "collection_id = ANY($2::uuid[])"]
        for key, values in filters.items():
            args.append(key)
            args.append(list(values))
            where.append(f"metadata ->> ${len(args) - 1} = ANY(${len(args)}::text[])")
        rows = await self.db.fetch(f"SELECT id FROM documents WHERE {' AND '.join(where)}", *args)
        return [r["id"] for r in rows]

    async def passages(self, client_id: str, chunk_ids: Iterable[UUID]) -> dict[UUID, PassageRow]:
        rows = await self.db.fetch(
            f"""SELECT {_PASSAGE} FROM chunks c JOIN documents d ON d.id = c.document_id
                WHERE c.client_id = $1 AND c.id = ANY($2::uuid[])""",
            client_id,
            list(chunk_ids),
        )
        return {r["id"]: _passage(r) for r in rows}

    async def keyword_rows(
        self, client_id: str | None = None, document_id: UUID | None = None
    ) -> list[Any]:
        """Passages as the keyword index holds them: of one document, or every one (a rebuild)."""
        return list(
            await self.db.fetch(
                """SELECT c.id, c.client_id, c.collection_id, c.document_id, c.text,
                          c.heading_path, d.title, d.metadata
                   FROM chunks c JOIN documents d ON d.id = c.document_id
                   WHERE ($1::text IS NULL OR c.client_id = $1)
                     AND ($2::uuid IS NULL OR c.document_id = $2)""",
                client_id,
                document_id,
            )
        )

    async def chunk_total(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM chunks"))

    # Import jobs

    async def get_import_job(self, client_id: str, job_id: UUID) -> ImportJob:
        row = await self.db.fetchrow(
            """SELECT j.id, j.collection_id, j.total, j.created_at,
                 count(*) FILTER (WHERE v.state IN ('queued', 'parsing', 'embedding')) AS pending,
                 count(*) FILTER (WHERE v.state = 'indexed' AND i.outcome <> 'unchanged')
                   AS indexed,
                 count(*) FILTER (WHERE i.outcome = 'unchanged') AS unchanged,
                 count(*) FILTER (WHERE v.state = 'failed' AND i.outcome <> 'unchanged')
                   AS failed,
                 max(v.finished_at) AS finished_at
               FROM import_jobs j
               LEFT JOIN import_job_items i ON i.job_id = j.id
               LEFT JOIN document_versions v
                 ON v.document_id = i.document_id AND v.version = i.version
               WHERE j.client_id = $1 AND j.id = $2
               GROUP BY j.id""",
            client_id,
            job_id,
        )
        if row is None:
            raise NotFound(f"import job {job_id} not found")
        return ImportJob(
            id=row["id"],
            collection_id=row["collection_id"],
            total=row["total"],
            pending=row["pending"],
            indexed=row["indexed"],
            unchanged=row["unchanged"],
            failed=row["failed"],
            created_at=row["created_at"],
            finished_at=row["finished_at"] if row["pending"] == 0 else None,
        )

    async def list_import_jobs(
        self, client_id: str, collection_id: UUID | None, page_token: str, size: int
    ) -> tuple[list[ImportJob], str]:
        args: list[Any] = [client_id]
        where = "client_id = $1"
        if collection_id is not None:
            args.append(collection_id)
            where += " AND collection_id = $2"
        rows, token = await keyset_page(
            self.db,
            table="import_jobs",
            columns="id, created_at",
            where=where,
            args=args,
            page_token=page_token,
            requested_size=size,
            descending=True,
        )
        return [await self.get_import_job(client_id, r["id"]) for r in rows], token

    async def list_import_items(
        self, client_id: str, job_id: UUID, failed_only: bool, page_token: str, size: int
    ) -> tuple[list[ImportItem], str]:
        await self.get_import_job(client_id, job_id)
        after = _number_from_token(page_token)
        limit = page_size(size)
        rows = await self.db.fetch(
            """SELECT i.position, i.document_id, i.version, i.outcome, d.external_id, v.title,
                      v.state, v.failure_code, v.failure_message
               FROM import_job_items i
               JOIN import_jobs j ON j.id = i.job_id
               JOIN documents d ON d.id = i.document_id
               JOIN document_versions v ON v.document_id = i.document_id AND v.version = i.version
               WHERE j.client_id = $1 AND i.job_id = $2
                 AND ($3::int IS NULL OR i.position > $3)
                 AND (NOT $4 OR (v.state = 'failed' AND i.outcome <> 'unchanged'))
               ORDER BY i.position LIMIT $5""",
            client_id,
            job_id,
            after,
            failed_only,
            limit + 1,
        )
        token = _number_token(rows[limit - 1]["position"]) if len(rows) > limit else ""
        return [
            ImportItem(
                position=r["position"],
                document_id=r["document_id"],
                external_id=r["external_id"],
                title=r["title"],
                outcome=Outcome(r["outcome"]),
                state=State(r["state"]),
                failure_code=r["failure_code"],
                failure_message=r["failure_message"],
                version=r["version"],
            )
            for r in rows[:limit]
        ], token

    # The graph (write side: extraction's results, docs/knowledge.md "The knowledge graph")

    @staticmethod
    async def _lock_graph(conn: Any, client_id: str) -> None:
        """One writer of a tenant's graph at a time (entity resolution reads, then writes), taken
        first in every transaction that changes it, so two never wait on each other."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"graph\x1f{client_id}"
        )

    async def _write_graph(
        self, conn: Any, work: Work, chunks: Sequence[NewChunk], graph: Extraction, title: str
    ) -> None:
        """Replace the provenance of the document's passages with what extraction read from
        them: entities found (or created, or merged) by normalised name and alias, a mention per
        passage naming one, and each relation once per tenant with every passage stating it. A
        new relation that contradicts one of a functional predicate (FUNCTIONAL) supersedes it."""
        client_id = work.client_id
        await self._lock_graph(conn, client_id)
        ids = [c.id for c in chunks]
        await conn.execute(
            "DELETE FROM entity_mentions WHERE client_id = $1 AND chunk_id = ANY($2::uuid[])",
            client_id,
            ids,
        )
        await conn.execute(
            """DELETE FROM relation_sources s USING chunks c
               WHERE c.id = s.chunk_id AND c.client_id = $1 AND s.chunk_id = ANY($2::uuid[])""",
            client_id,
            ids,
        )
        resolved = await self._resolve_entities(conn, client_id, graph)
        names = {resolved[key]: entity.name for key, entity in graph.entities.items()}
        await conn.executemany(
            """INSERT INTO entity_mentions (client_id, entity_id, chunk_id, collection_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            [
                (client_id, resolved[key], chunk.id, work.collection_id)
                for chunk, passage in zip(chunks, graph.passages, strict=True)
                for key in sorted(passage.mentions)
            ],
        )
        # Each (subject, predicate, object) once, with the earliest date read for it.
        facts: dict[tuple[UUID, str, UUID], ExtractedRelation] = {}
        sources: list[tuple[tuple[UUID, str, UUID], UUID]] = []
        for chunk, passage in zip(chunks, graph.passages, strict=True):
            for r in passage.relations:
                fact = (resolved[r.subject], r.predicate, resolved[r.object])
                if fact[0] == fact[2]:
                    continue
                known = facts.get(fact)
                if known is None or (
                    r.valid_from is not None
                    and (known.valid_from is None or r.valid_from < known.valid_from)
                ):
                    facts[fact] = r
                sources.append((fact, chunk.id))
        if not facts:
            return
        ordered = list(facts)
        rows = await conn.fetch(
            """INSERT INTO relations (id, client_id, subject_id, predicate, object_id, valid_from)
               SELECT t.id, $1, t.subject_id, t.predicate, t.object_id, t.valid_from
               FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::timestamptz[])
                 AS t(id, subject_id, predicate, object_id, valid_from)
               ON CONFLICT (client_id, subject_id, predicate, object_id) DO UPDATE
               SET valid_from = coalesce(relations.valid_from, EXCLUDED.valid_from)
               RETURNING id, subject_id, predicate, object_id, (xmax = 0) AS created""",
            client_id,
            [new_id() for _ in ordered],
            [f[0] for f in ordered],
            [f[1] for f in ordered],
            [f[2] for f in ordered],
            [_midnight(facts[f].valid_from) for f in ordered],
        )
        stored = {
            (UUID(str(r["subject_id"])), r["predicate"], UUID(str(r["object_id"]))): (
                UUID(str(r["id"])),
                bool(r["created"]),
            )
            for r in rows
        }
        await conn.executemany(
            "INSERT INTO relation_sources (relation_id, chunk_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            [(stored[fact][0], chunk_id) for fact, chunk_id in sources],
        )
        for fact in ordered:
            relation, created = stored[fact]
            if created and fact[1] in FUNCTIONAL:
                subject, predicate, obj = fact
                await self._supersede(
                    conn,
                    work,
                    title,
                    relation,
                    facts[fact],
                    subject,
                    obj,
                    f"{names.get(subject, '?')} {predicate} {names.get(obj, '?')}",
                )

    async def _resolve_entities(
        self, conn: Any, client_id: str, graph: Extraction
    ) -> dict[str, UUID]:
        """The tenant's entity of each extracted one (by its key), created or updated. Looked up
        in one query; new entities are inserted and known ones updated in batches, and only an
        extraction that names two known entities as one (a merge), or two that one known entity
        answers, is resolved on its own (`_resolve_entity`)."""
        entities = [graph.entities[key] for key in sorted(graph.entities)]
        if not entities:
            return {}
        rows = await conn.fetch(
            """SELECT id, name, normalized_name, type, aliases, normalized_aliases FROM entities
               WHERE client_id = $1
                 AND (normalized_name = ANY($2::text[]) OR normalized_aliases && $2::text[])""",
            client_id,
            sorted({k for e in entities for k in e.keys | {e.key}}),
        )
        owner: dict[str, list[Any]] = {}
        for row in rows:
            for key in (row["normalized_name"], *row["normalized_aliases"]):
                owner.setdefault(key, []).append(row)
        matches: dict[str, dict[UUID, Any]] = {}
        claims: dict[UUID, int] = {}
        for e in entities:
            found = {r["id"]: r for k in sorted(e.keys | {e.key}) for r in owner.get(k, [])}
            matches[e.key] = found
            for row_id in found:
                claims[row_id] = claims.get(row_id, 0) + 1
        resolved: dict[str, UUID] = {}
        new: list[tuple[UUID, ExtractedEntity]] = []
        updates: list[tuple[Any, ...]] = []
        one_by_one: list[ExtractedEntity] = []
        for e in entities:
            found = matches[e.key]
            if not found:
                new.append((UUID(str(new_id())), e))
            elif len(found) > 1 or any(claims[row_id] > 1 for row_id in found):
                one_by_one.append(e)
            else:
                [row] = found.values()
                resolved[e.key] = UUID(str(row["id"]))
                aliases = _aliases(row["name"], [*row["aliases"], e.name, *e.aliases])
                normalized = sorted(
                    (set(row["normalized_aliases"]) | e.keys | {e.key}) - {row["normalized_name"]}
                )
                kind = row["type"] or e.type
                if (aliases, normalized, kind) != (
                    list(row["aliases"]),
                    list(row["normalized_aliases"]),
                    row["type"],
                ):
                    updates.append((client_id, row["id"], aliases, normalized, kind))
        await conn.executemany(
            """INSERT INTO entities
                   (id, client_id, name, normalized_name, type, aliases, normalized_aliases)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [
                (
                    entity_id,
                    client_id,
                    e.name,
                    e.key,
                    e.type,
                    e.aliases,
                    sorted((e.keys | {e.key}) - {e.key}),
                )
                for entity_id, e in new
            ],
        )
        resolved.update({e.key: entity_id for entity_id, e in new})
        await conn.executemany(
            """UPDATE entities SET aliases = $3, normalized_aliases = $4, type = $5
               WHERE client_id = $1 AND id = $2""",
            updates,
        )
        for e in one_by_one:
            resolved[e.key] = await self._resolve_entity(conn, client_id, e)
        return resolved

    async def _resolve_entity(self, conn: Any, client_id: str, entity: ExtractedEntity) -> UUID:
        """The tenant's entity for these names: the one whose normalised name or alias is one of
        them (several: merged into the oldest), else a new one. Its aliases gain the new forms."""
        keys = sorted(entity.keys | {entity.key})
        rows = await conn.fetch(
            """SELECT id, name, normalized_name, type, aliases, normalized_aliases FROM entities
               WHERE client_id = $1
                 AND (normalized_name = ANY($2::text[]) OR normalized_aliases && $2::text[])
               ORDER BY created_at, id""",
            client_id,
            keys,
        )
        if not rows:
            entity_id = new_id()
            await conn.execute(
                """INSERT INTO entities
                       (id, client_id, name, normalized_name, type, aliases, normalized_aliases)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)""",
                entity_id,
                client_id,
                entity.name,
                entity.key,
                entity.type,
                entity.aliases,
                [k for k in keys if k != entity.key],
            )
            return UUID(str(entity_id))
        keep, others = rows[0], rows[1:]
        forms = [*keep["aliases"], entity.name, *entity.aliases]
        normalized = set(keep["normalized_aliases"]) | set(keys)
        kind = keep["type"] or entity.type
        for other in others:
            forms += [other["name"], *other["aliases"]]
            normalized |= {other["normalized_name"], *other["normalized_aliases"]}
            kind = kind or other["type"]
            await self._merge_entity(conn, client_id, keep["id"], other["id"])
        normalized.discard(keep["normalized_name"])
        await conn.execute(
            """UPDATE entities SET aliases = $3, normalized_aliases = $4, type = $5
               WHERE client_id = $1 AND id = $2""",
            client_id,
            keep["id"],
            _aliases(keep["name"], forms),
            sorted(normalized),
            kind,
        )
        return UUID(str(keep["id"]))

    async def _merge_entity(self, conn: Any, client_id: str, keep: UUID, other: UUID) -> None:
        """`other` turned out to be `keep` under another name (a declared alias): its mentions
        and relations move to `keep`, and it goes."""
        await conn.execute(
            """INSERT INTO entity_mentions (client_id, entity_id, chunk_id, collection_id)
               SELECT client_id, $2, chunk_id, collection_id FROM entity_mentions
               WHERE client_id = $1 AND entity_id = $3 ON CONFLICT DO NOTHING""",
            client_id,
            keep,
            other,
        )
        moving = await conn.fetch(
            """SELECT id, subject_id, predicate, object_id, valid_from, valid_to, superseded_by,
                      supersede_reason
               FROM relations WHERE client_id = $1 AND (subject_id = $2 OR object_id = $2)""",
            client_id,
            other,
        )
        for r in moving:
            subject = keep if r["subject_id"] == other else r["subject_id"]
            obj = keep if r["object_id"] == other else r["object_id"]
            if subject != obj:
                target = await conn.fetchval(
                    """INSERT INTO relations (id, client_id, subject_id, predicate, object_id,
                           valid_from, valid_to, superseded_by, supersede_reason)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                       ON CONFLICT (client_id, subject_id, predicate, object_id) DO UPDATE
                       SET valid_from = coalesce(relations.valid_from, EXCLUDED.valid_from)
                       RETURNING id""",
                    new_id(),
                    client_id,
                    subject,
                    r["predicate"],
                    obj,
                    r["valid_from"],
                    r["valid_to"],
                    r["superseded_by"],
                    r["supersede_reason"],
                )
                await conn.execute(
                    """INSERT INTO relation_sources (relation_id, chunk_id)
                       SELECT $1, chunk_id FROM relation_sources WHERE relation_id = $2
                       ON CONFLICT DO NOTHING""",
                    target,
                    r["id"],
                )
                await conn.execute(
                    "UPDATE relations SET superseded_by = $2 WHERE client_id = $1 "
                    "AND superseded_by = $3",
                    client_id,
                    target,
                    r["id"],
                )
            await conn.execute(
                "DELETE FROM relations WHERE client_id = $1 AND id = $2", client_id, r["id"]
            )
        await conn.execute(
            "DELETE FROM entities WHERE client_id = $1 AND id = $2", client_id, other
        )

    async def _supersede(
        self,
        conn: Any,
        work: Work,
        title: str,
        relation: UUID,
        r: ExtractedRelation,
        subject: UUID,
        obj: UUID,
        statement: str,
    ) -> None:
        """A new relation of a functional predicate contradicts the current ones that give its
        subject (or its object, FUNCTIONAL says which) another partner: the one that holds later
        supersedes the other — the new one, unless the other's `valid_from` is later — and the
        reason names the document that said so."""
        side = FUNCTIONAL[r.predicate]
        same, other = (
            ("subject_id", "object_id") if side == "subject" else ("object_id", "subject_id")
        )
        contradicted = await conn.fetch(
            f"""SELECT id, valid_from FROM relations
                WHERE client_id = $1 AND predicate = $2 AND {same} = $3 AND {other} <> $4
                  AND superseded_by IS NULL AND id <> $5""",
            work.client_id,
            r.predicate,
            subject if side == "subject" else obj,
            obj if side == "subject" else subject,
            relation,
        )
        since = _midnight(r.valid_from)
        reason = f"{title!r} (document {work.document_id}, version {work.version}) says {statement}"
        for old in contradicted:
            if old["valid_from"] is not None and since is not None and old["valid_from"] > since:
                # The document states an older fact: it is the one superseded.
                await conn.execute(
                    """UPDATE relations SET superseded_by = $3, valid_to = $4,
                           supersede_reason = $5
                       WHERE client_id = $1 AND id = $2""",
                    work.client_id,
                    relation,
                    old["id"],
                    old["valid_from"],
                    "a later relation holds from " + old["valid_from"].date().isoformat(),
                )
                continue
            await conn.execute(
                """UPDATE relations SET superseded_by = $3, valid_to = coalesce($4, now()),
                       supersede_reason = $5
                   WHERE client_id = $1 AND id = $2""",
                work.client_id,
                old["id"],
                relation,
                since,
                reason,
            )

    async def graph_passages(
        self,
        client_id: str,
        keys: Sequence[str],
        collection_ids: Sequence[UUID],
        document_ids: Sequence[UUID] | None,
        limit: int,
    ) -> list[tuple[UUID, float]]:
        """Graph expansion: the entities whose normalised name or alias is one of `keys` (the
        query's), and the passages of their neighbourhood in these collections, best first —
        a passage scores 1 for each current relation of those entities it states and 0.5 for
        each entity at the other end of one that it mentions; equal scores by passage id. An
        entity contributes its `GRAPH_EDGES` most recent relations at most (a hub such as the
        tenant's own company name would otherwise pull in most of the graph)."""
        if not keys:
            return []
        seeds = await self.db.fetch(
            """SELECT id FROM entities
               WHERE client_id = $1
                 AND (normalized_name = ANY($2::text[]) OR normalized_aliases && $2::text[])""",
            client_id,
            list(keys),
        )
        if not seeds:
            return []
        rows = await self.db.fetch(
            """WITH seeds AS (SELECT unnest($2::uuid[]) AS id),
               edges AS (
                 SELECT e.id, e.other FROM seeds, LATERAL (
                   SELECT r.id, r.object_id AS other, r.created_at
                   FROM relations r
                   WHERE r.client_id = $1 AND r.subject_id = seeds.id
                     AND r.superseded_by IS NULL
                   UNION ALL
                   SELECT r.id, r.subject_id, r.created_at
                   FROM relations r
                   WHERE r.client_id = $1 AND r.object_id = seeds.id
                     AND r.superseded_by IS NULL
                   ORDER BY created_at DESC, id
                   LIMIT $6) e),
               hits AS (
                 SELECT s.chunk_id, 1.0::float8 AS weight
                 FROM relation_sources s JOIN (SELECT DISTINCT id FROM edges) e
                   ON e.id = s.relation_id
                 UNION ALL
                 SELECT m.chunk_id, 0.5::float8
                 FROM (SELECT DISTINCT other FROM edges
                       WHERE other <> ALL($2::uuid[])) n
                 JOIN entity_mentions m ON m.entity_id = n.other
                 WHERE m.client_id = $1 AND m.collection_id = ANY($3::uuid[]))
               SELECT h.chunk_id, sum(h.weight) AS score
               FROM hits h JOIN chunks c ON c.id = h.chunk_id
               WHERE c.client_id = $1 AND c.collection_id = ANY($3::uuid[])
                 AND ($4::uuid[] IS NULL OR c.document_id = ANY($4::uuid[]))
               GROUP BY h.chunk_id
               ORDER BY score DESC, h.chunk_id::text
               LIMIT $5""",
            client_id,
            [r["id"] for r in seeds],
            list(collection_ids),
            None if document_ids is None else list(document_ids),
            limit,
            GRAPH_EDGES,
        )
        return [(r["chunk_id"], float(r["score"])) for r in rows]

    # The graph (read side)

    async def _entities(self, client_id: str, ids: Sequence[UUID]) -> list[Entity]:
        rows = await self.db.fetch(
            """SELECT e.id, e.name, e.type, e.aliases, e.created_at,
                      coalesce(array_agg(DISTINCT m.collection_id)
                               FILTER (WHERE m.collection_id IS NOT NULL), '{}') AS collections,
                      count(m.chunk_id) AS mentions
               FROM entities e LEFT JOIN entity_mentions m ON m.entity_id = e.id
               WHERE e.client_id = $1 AND e.id = ANY($2::uuid[])
               GROUP BY e.id""",
            client_id,
            list(ids),
        )
        by_id = {
            r["id"]: Entity(
                id=r["id"],
                name=r["name"],
                type=r["type"],
                aliases=tuple(r["aliases"]),
                collection_ids=tuple(sorted(r["collections"], key=str)),
                mention_count=r["mentions"],
                created_at=r["created_at"],
            )
            for r in rows
        }
        return [by_id[i] for i in ids if i in by_id]

    async def get_entity(self, client_id: str, entity_id: UUID) -> Entity:
        found = await self._entities(client_id, [entity_id])
        if not found:
            raise NotFound(f"entity {entity_id} not found")
        return found[0]

    async def list_entities(
        self,
        client_id: str,
        collection_ids: Sequence[UUID] | None,
        query: str,
        type_: str,
        page_token: str,
        size: int,
    ) -> tuple[list[Entity], str]:
        args: list[Any] = [client_id]
        where = ["client_id = $1"]
        if collection_ids is not None:
            args.append(list(collection_ids))
            where.append(
                f"EXISTS (SELECT 1 FROM entity_mentions m WHERE m.entity_id = entities.id "
                f"AND m.collection_id = ANY(${len(args)}::uuid[]))"
            )
        if query:
            args.append(query.lower())
            where.append(
                f"(strpos(lower(name), ${len(args)}) > 0 OR EXISTS (SELECT 1 FROM "
                f"unnest(aliases) a WHERE strpos(lower(a), ${len(args)}) > 0))"
            )
        if type_:
            args.append(type_)
            where.append(f"type = ${len(args)}")
        rows, token = await keyset_page(
            self.db,
            table="entities",
            columns="id, created_at",
            where=" AND ".join(where),
            args=args,
            page_token=page_token,
            requested_size=size,
        )
        return await self._entities(client_id, [r["id"] for r in rows]), token

    async def list_relations(
        self, client_id: str, entity_id: UUID, include_superseded: bool, page_token: str, size: int
    ) -> tuple[list[Relation], list[Entity], str]:
        rows, token = await keyset_page(
            self.db,
            table="relations",
            columns="""id, subject_id, predicate, object_id, valid_from, valid_to, superseded_by,
                       supersede_reason, created_at""",
            where="client_id = $1 AND (subject_id = $2 OR object_id = $2)"
            + ("" if include_superseded else " AND superseded_by IS NULL"),
            args=[client_id, entity_id],
            page_token=page_token,
            requested_size=size,
        )
        sources = await self.db.fetch(
            f"""SELECT s.relation_id, {_PASSAGE}
                FROM relation_sources s JOIN chunks c ON c.id = s.chunk_id
                JOIN documents d ON d.id = c.document_id
                WHERE c.client_id = $1 AND s.relation_id = ANY($2::uuid[])
                ORDER BY c.document_id, c.chunk_index""",
            client_id,
            [r["id"] for r in rows],
        )
        by_relation: dict[UUID, list[PassageRow]] = {}
        for s in sources:
            by_relation.setdefault(s["relation_id"], []).append(_passage(s))
        relations = [
            Relation(
                id=r["id"],
                subject_id=r["subject_id"],
                predicate=r["predicate"],
                object_id=r["object_id"],
                valid_from=r["valid_from"],
                valid_to=r["valid_to"],
                superseded_by=r["superseded_by"],
                supersede_reason=r["supersede_reason"],
                sources=tuple(by_relation.get(r["id"], [])),
                created_at=r["created_at"],
            )
            for r in rows
        ]
        others = list(
            dict.fromkeys(
                x for r in relations for x in (r.subject_id, r.object_id) if x != entity_id
            )
        )
        return relations, await self._entities(client_id, others), token


__all__ = ["PENDING_STATES", "NewChunk", "PostgresKnowledgeStore"]
