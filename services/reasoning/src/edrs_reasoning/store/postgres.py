"""PostgreSQL adapter of the trace store."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import pagination
from edrs_core.ids import new_id

from edrs_reasoning.store import NewTrace, Trace

_COLUMNS = (
    "id, strategy, prompt, answer, confidence, prompt_tokens, completion_tokens, duration_ms, "
    "created_at"
)


def _trace(row: Any) -> Trace:
    return Trace(
        id=row["id"],
        strategy=row["strategy"],
        prompt=row["prompt"],
        answer=row["answer"],
        confidence=row["confidence"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        duration_ms=row["duration_ms"],
        created_at=row["created_at"],
    )


class PostgresTraceStore:
    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def record(self, client_id: str, trace: NewTrace) -> Trace:
        row = await self.db.fetchrow(
            f"""INSERT INTO traces
                    (id, client_id, strategy, prompt, answer, confidence, prompt_tokens,
                     completion_tokens, duration_ms)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                RETURNING {_COLUMNS}""",
            new_id(),
            client_id,
            trace.strategy,
            trace.prompt,
            trace.answer,
            trace.confidence,
            trace.prompt_tokens,
            trace.completion_tokens,
            trace.duration_ms,
        )
        return _trace(row)

    async def get(self, client_id: str, trace_id: UUID) -> Trace | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM traces WHERE client_id = $1 AND id = $2", client_id, trace_id
        )
        return _trace(row) if row else None

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Trace], str]:
        # The contract lists traces newest first, which edrs_core's keyset_page (oldest first)
        # does not do; the same cursor tokens are used, walked downwards.
        cursor = pagination.decode_cursor(page_token)
        size = pagination.page_size(page_size)
        args: list[Any] = [client_id]
        condition = "client_id = $1"
        if cursor is not None:
            condition += " AND (created_at, id) < ($2, $3::uuid)"
            args += [cursor.created_at, cursor.id]
        rows = await self.db.fetch(
            f"""SELECT {_COLUMNS} FROM traces WHERE {condition}
                ORDER BY created_at DESC, id DESC LIMIT {size + 1}""",
            *args,
        )
        if len(rows) <= size:
            return [_trace(r) for r in rows], ""
        last = rows[size - 1]
        token = pagination.encode_cursor(pagination.Cursor(last["created_at"], str(last["id"])))
        return [_trace(r) for r in rows[:size]], token
