"""PostgreSQL adapter of the research store."""

from __future__ import annotations

from typing import Any

import asyncpg
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_research.store import NewSource, Source

_COLUMNS = "id, url, title, credibility, created_at"


def _source(row: Any) -> Source:
    return Source(
        id=row["id"],
        url=row["url"],
        title=row["title"],
        credibility=row["credibility"],
        created_at=row["created_at"],
    )


class PostgresResearchStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    async def create(self, client_id: str, source: NewSource) -> Source | None:
        """Store the source and its `research.source_registered` event in one transaction;
        None (and no event) when the tenant already has this url."""
        async with self.db.acquire() as conn, conn.transaction():
            # ON CONFLICT rather than catching the unique violation: a duplicate is an expected
            # answer, and this stays correct when two registrations of one url race.
            row = await conn.fetchrow(
                f"""INSERT INTO sources (id, client_id, url, title, credibility)
                    VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT ON CONSTRAINT sources_client_url DO NOTHING
                    RETURNING {_COLUMNS}""",
                new_id(),
                client_id,
                source.url,
                source.title,
                source.credibility,
            )
            if row is None:
                return None
            created = _source(row)
            await self.events.add(
                conn,
                "research.source_registered",
                {
                    "source_id": str(created.id),
                    "url": created.url,
                    "credibility": created.credibility,
                },
                aggregate_id=str(created.id),
            )
        return created

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Source], str]:
        rows, token = await keyset_page(
            self.db,
            table="sources",
            columns=_COLUMNS,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_source(r) for r in rows], token
