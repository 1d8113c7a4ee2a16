"""PostgreSQL adapter of the knowledge store: documents in a table, search by PostgreSQL full text."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import InvalidArgument
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id

from edrs_knowledge.store import Document, NewDocument, SearchHit

_COLUMNS = "id, title, text, source, metadata, created_at"

# Snippets are plain text (no <b> markers): clients may render them anywhere, HTML included.
_HEADLINE_OPTIONS = 'StartSel="", StopSel="", MaxFragments=2, MaxWords=35, MinWords=15'


def _document(row: Any) -> Document:
    return Document(
        id=row["id"],
        title=row["title"],
        text=row["text"],
        source=row["source"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
    )


class PostgresKnowledgeStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    async def create(self, client_id: str, document: NewDocument) -> Document:
        """Store and index the document, and its `knowledge.document_ingested` event, in one
        transaction. Ingestion does not chunk yet, so the event says 0 chunks."""
        try:
            async with self.db.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""INSERT INTO documents (id, client_id, title, text, source, metadata)
                        VALUES ($1, $2, $3, $4, $5, $6::jsonb)
                        RETURNING {_COLUMNS}""",
                    new_id(),
                    client_id,
                    document.title,
                    document.text,
                    document.source,
                    json.dumps(document.metadata),
                )
                assert row is not None  # INSERT ... RETURNING yields the row
                await self.events.add(
                    conn,
                    "knowledge.document_ingested",
                    {"document_id": str(row["id"]), "title": row["title"], "chunk_count": 0},
                    aggregate_id=str(row["id"]),
                )
        except asyncpg.ProgramLimitExceededError as exc:
            # A tsvector holds at most 1 MB; a text of that many distinct words cannot be indexed.
            raise InvalidArgument(
                f"text has too many distinct words to index: {exc}", field="text"
            ) from None
        return _document(row)

    async def get(self, client_id: str, document_id: UUID) -> Document | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM documents WHERE client_id = $1 AND id = $2",
            client_id,
            document_id,
        )
        return _document(row) if row else None

    async def search(self, client_id: str, query: str, limit: int) -> list[SearchHit]:
        # Rank first and build snippets only for the hits kept: ts_headline re-parses the whole
        # document, which is the expensive part. Normalisation 32 maps the rank to rank/(rank+1).
        rows = await self.db.fetch(
            f"""WITH q AS (SELECT websearch_to_tsquery('english', $2) AS query),
                best AS (
                    SELECT d.id, d.title, d.text, d.created_at,
                           ts_rank_cd(d.search, q.query, 32) AS score
                    FROM documents d CROSS JOIN q
                    WHERE d.client_id = $1 AND d.search @@ q.query
                    ORDER BY score DESC, d.created_at DESC, d.id
                    LIMIT $3
                )
                SELECT best.id, best.title, best.score,
                       ts_headline('english', best.text, q.query, '{_HEADLINE_OPTIONS}') AS snippet
                FROM best CROSS JOIN q
                ORDER BY best.score DESC, best.created_at DESC, best.id""",
            client_id,
            query,
            limit,
        )
        return [
            SearchHit(document_id=r["id"], title=r["title"], snippet=r["snippet"], score=r["score"])
            for r in rows
        ]
