"""PostgreSQL adapter of the memory store."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core.ids import new_id

from edrs_memory.store import Memory, NewMemory, RecallCandidate

_COLUMNS = "id, persona_id, user_id, conversation_id, text, importance, created_at"


# ts_rank_cd weights every lexeme 1.0 (instead of the default 0.1 for unlabelled lexemes) so one
# matching word ranks 1.0 and relevance = rank/(rank+1) spreads over 0..1 rather than near 0.
def _rank(alias: str) -> str:
    return f"ts_rank_cd('{{1,1,1,1}}', {alias}.search, q.query)"


def any_word_query(query: str) -> str | None:
    """`query` as a websearch query that matches a memory holding any of its words.

    Recall queries are conversational ("what does she do on holidays"); the default AND of every
    word would match almost nothing. Word characters only, so the user cannot inject websearch
    operators. None (matches nothing) when the query has no words.
    """
    words = re.findall(r"\w+", query)
    return " or ".join(words) if words else None


def _memory(row: Any) -> Memory:
    return Memory(
        id=row["id"],
        persona_id=row["persona_id"],
        user_id=row["user_id"],
        conversation_id=row["conversation_id"],
        text=row["text"],
        importance=row["importance"],
        created_at=row["created_at"],
    )


class PostgresMemoryStore:
    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def create(self, client_id: str, memory: NewMemory) -> Memory:
        row = await self.db.fetchrow(
            f"""INSERT INTO memories
                    (id, client_id, persona_id, user_id, conversation_id, text, importance)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                RETURNING {_COLUMNS}""",
            new_id(),
            client_id,
            memory.persona_id,
            memory.user_id,
            memory.conversation_id,
            memory.text,
            memory.importance,
        )
        return _memory(row)

    async def candidates(
        self, client_id: str, persona_id: UUID, user_id: str, query: str, *, per_source: int
    ) -> list[RecallCandidate]:
        # Two fixed statements rather than `($5 = '' OR user_id = $5)`, so the user filter can
        # use the index whatever plan asyncpg's prepared statement settles on.
        scope = "client_id = $1 AND persona_id = $2"
        # A NULL tsquery matches nothing and ranks NULL, so an empty query yields recent memories
        # only, each ranked 0, without PostgreSQL's "query contains only stop words" notice.
        params: list[Any] = [client_id, persona_id, any_word_query(query), per_source]
        if user_id:
            scope += " AND user_id = $5"
            params.append(user_id)
        rows = await self.db.fetch(
            f"""WITH q AS (SELECT websearch_to_tsquery('english', $3) AS query),
                candidate_ids AS (
                    (SELECT id FROM memories WHERE {scope} ORDER BY created_at DESC LIMIT $4)
                    UNION
                    (SELECT id FROM memories, q WHERE {scope} AND memories.search @@ q.query
                     ORDER BY {_rank("memories")} DESC LIMIT $4)
                )
                SELECT {_COLUMNS}, coalesce({_rank("m")}, 0) AS text_rank
                FROM memories m CROSS JOIN q
                WHERE m.client_id = $1 AND m.id IN (SELECT id FROM candidate_ids)""",
            *params,
        )
        return [RecallCandidate(memory=_memory(r), text_rank=r["text_rank"]) for r in rows]
