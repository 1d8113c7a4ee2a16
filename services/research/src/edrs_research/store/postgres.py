"""PostgreSQL adapter of the research store."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_research.credibility import Reason, Score
from edrs_research.store import NewSource, Source, SourceFilter
from edrs_research.web.fetch import Page

_COLUMNS = (
    "id, url, domain, given_title, title, credibility, reasons, state, fetch_error, final_url, "
    "author, published_at, language, fetched_at, content_hash, truncated, pinned, blocked, "
    "document_id, created_at, updated_at"
)


def _reasons_json(reasons: list[Reason]) -> str:
    return json.dumps(
        [{"signal": r.signal, "weight": r.weight, "detail": r.detail} for r in reasons]
    )


def _source(row: Any) -> Source:
    raw = row["reasons"]
    reasons = json.loads(raw) if isinstance(raw, str) else raw
    return Source(
        id=row["id"],
        url=row["url"],
        domain=row["domain"],
        given_title=row["given_title"],
        page_title=row["title"],
        credibility=row["credibility"],
        reasons=[Reason(r["signal"], float(r["weight"]), r["detail"]) for r in reasons],
        state=row["state"],
        fetch_error=row["fetch_error"],
        final_url=row["final_url"],
        author=row["author"],
        published_at=row["published_at"],
        language=row["language"],
        fetched_at=row["fetched_at"],
        content_hash=row["content_hash"],
        truncated=row["truncated"],
        pinned=row["pinned"],
        blocked=row["blocked"],
        document_id=row["document_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _announcement(source: Source) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "source_id": str(source.id),
        "url": source.url,
        "credibility": source.credibility,
        "domain": source.domain,
        "state": source.state,
    }
    if source.content_hash:
        payload["content_hash"] = source.content_hash
    if source.document_id:
        payload["document_id"] = source.document_id
    return payload


class PostgresResearchStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    async def create(self, client_id: str, source: NewSource) -> Source | None:
        """Store the source (PENDING); None when the tenant already has this url. It is
        announced (`research.source_registered`) once its first fetch is recorded."""
        # ON CONFLICT rather than catching the unique violation: a duplicate is an expected
        # answer, and this stays correct when two registrations of one url race.
        row = await self.db.fetchrow(
            f"""INSERT INTO sources (id, client_id, url, domain, given_title, title, credibility,
                                     reasons, pinned, blocked)
                VALUES ($1, $2, $3, $4, $5, '', $6, $7::jsonb, $8, $9)
                ON CONFLICT ON CONSTRAINT sources_client_url DO NOTHING
                RETURNING {_COLUMNS}""",
            new_id(),
            client_id,
            source.url,
            source.domain,
            source.given_title,
            source.credibility,
            _reasons_json(source.reasons),
            source.pinned,
            source.blocked,
        )
        return None if row is None else _source(row)

    async def get(self, client_id: str, source_id: UUID) -> Source | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM sources WHERE client_id = $1 AND id = $2",
            client_id,
            source_id,
        )
        return None if row is None else _source(row)

    async def get_by_url(self, client_id: str, url: str) -> Source | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM sources WHERE client_id = $1 AND url = $2", client_id, url
        )
        return None if row is None else _source(row)

    async def list(
        self, client_id: str, page_token: str, page_size: int, where: SourceFilter
    ) -> tuple[list[Source], str]:
        conditions = ["client_id = $1"]
        args: list[Any] = [client_id]
        if where.domain:
            args.append(where.domain)
            conditions.append(f"domain = ${len(args)}")
        if where.pinned_only:
            conditions.append("pinned")
        if where.blocked_only:
            conditions.append("blocked")
        rows, token = await keyset_page(
            self.db,
            table="sources",
            columns=_COLUMNS,
            where=" AND ".join(conditions),
            args=args,
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_source(r) for r in rows], token

    async def _fetched(
        self,
        conn: Any,
        client_id: str,
        source_id: UUID,
        page: Page,
        score: Score,
        document_id: str,
    ) -> Source | None:
        row = await conn.fetchrow(
            f"""UPDATE sources
                   SET state = 'fetched', fetch_error = '', final_url = $3, title = $4,
                       author = $5, published_at = $6, language = $7, fetched_at = $8,
                       content_hash = $9, truncated = $10, document_id = $11,
                       credibility = $12, reasons = $13::jsonb, updated_at = now()
                 WHERE client_id = $1 AND id = $2
             RETURNING {_COLUMNS}""",
            client_id,
            source_id,
            page.final_url,
            page.title,
            page.author,
            page.published,
            page.language,
            page.fetched_at,
            page.content_hash,
            page.truncated,
            document_id,
            score.value,
            _reasons_json(score.reasons),
        )
        return None if row is None else _source(row)

    async def record_fetch(
        self, client_id: str, source_id: UUID, page: Page, score: Score, document_id: str
    ) -> Source | None:
        """The source FETCHED; its first fetch announces it (`research.source_registered`),
        in the same transaction."""
        async with self.db.acquire() as conn, conn.transaction():
            before = await conn.fetchval(
                "SELECT state FROM sources WHERE client_id = $1 AND id = $2 FOR UPDATE",
                client_id,
                source_id,
            )
            if before is None:
                return None
            source = await self._fetched(conn, client_id, source_id, page, score, document_id)
            assert source is not None
            if before == "pending":
                await self._announce(conn, source)
        return source

    async def record_failure(
        self, client_id: str, source_id: UUID, error: str, score: Score
    ) -> Source | None:
        async with self.db.acquire() as conn, conn.transaction():
            before = await conn.fetchval(
                "SELECT state FROM sources WHERE client_id = $1 AND id = $2 FOR UPDATE",
                client_id,
                source_id,
            )
            if before is None:
                return None
            row = await conn.fetchrow(
                f"""UPDATE sources
                       SET state = 'failed', fetch_error = $3, credibility = $4,
                           reasons = $5::jsonb, updated_at = now()
                     WHERE client_id = $1 AND id = $2
                 RETURNING {_COLUMNS}""",
                client_id,
                source_id,
                error,
                score.value,
                _reasons_json(score.reasons),
            )
            source = _source(row)
            if before == "pending":
                await self._announce(conn, source)
        return source

    async def upsert_fetched(
        self, client_id: str, page: Page, score: Score, document_id: str
    ) -> Source:
        """The source of `page.url` with the fetched page recorded: created (and announced) when
        the tenant had none, else updated (its title, pin and block kept)."""
        async with self.db.acquire() as conn, conn.transaction():
            created = await conn.fetchval(
                """INSERT INTO sources (id, client_id, url, domain, title, credibility)
                   VALUES ($1, $2, $3, $4, '', $5)
                   ON CONFLICT ON CONSTRAINT sources_client_url DO NOTHING
                   RETURNING id""",
                new_id(),
                client_id,
                page.url,
                _domain(page.url),
                score.value,
            )
            source_id = created or await conn.fetchval(
                "SELECT id FROM sources WHERE client_id = $1 AND url = $2 FOR UPDATE",
                client_id,
                page.url,
            )
            before = await conn.fetchval(
                "SELECT state FROM sources WHERE id = $1 FOR UPDATE", source_id
            )
            source = await self._fetched(conn, client_id, source_id, page, score, document_id)
            assert source is not None
            if before == "pending":
                await self._announce(conn, source)
        return source

    async def update(
        self,
        client_id: str,
        source_id: UUID,
        *,
        given_title: str | None,
        pinned: bool | None,
        blocked: bool | None,
        score: Score,
    ) -> Source | None:
        row = await self.db.fetchrow(
            f"""UPDATE sources
                   SET given_title = COALESCE($3, given_title),
                       pinned = COALESCE($4, pinned),
                       blocked = COALESCE($5, blocked),
                       credibility = $6, reasons = $7::jsonb, updated_at = now()
                 WHERE client_id = $1 AND id = $2
             RETURNING {_COLUMNS}""",
            client_id,
            source_id,
            given_title,
            pinned,
            blocked,
            score.value,
            _reasons_json(score.reasons),
        )
        return None if row is None else _source(row)

    async def rescore(self, client_id: str, source_id: UUID, score: Score) -> Source | None:
        row = await self.db.fetchrow(
            f"""UPDATE sources SET credibility = $3, reasons = $4::jsonb, updated_at = now()
                 WHERE client_id = $1 AND id = $2
             RETURNING {_COLUMNS}""",
            client_id,
            source_id,
            score.value,
            _reasons_json(score.reasons),
        )
        return None if row is None else _source(row)

    async def delete(self, client_id: str, source_id: UUID) -> Source | None:
        row = await self.db.fetchrow(
            f"DELETE FROM sources WHERE client_id = $1 AND id = $2 RETURNING {_COLUMNS}",
            client_id,
            source_id,
        )
        return None if row is None else _source(row)

    async def domain_flags(self, client_id: str, domain: str) -> tuple[bool, bool]:
        row = await self.db.fetchrow(
            """SELECT coalesce(bool_or(pinned), false) AS pinned,
                      coalesce(bool_or(blocked), false) AS blocked
                 FROM sources WHERE client_id = $1 AND domain = $2""",
            client_id,
            domain,
        )
        assert row is not None  # an aggregate always answers one row
        return bool(row["pinned"]), bool(row["blocked"])

    async def _announce(self, conn: Any, source: Source) -> None:
        await self.events.add(
            conn,
            "research.source_registered",
            _announcement(source),
            aggregate_id=str(source.id),
        )


def _domain(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
