"""PostgreSQL adapter of the trace store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import pagination
from edrs_core.ids import new_id

from edrs_reasoning.store import NewTrace, OnRecorded, Trace, TraceSample

_COLUMNS = (
    "id, strategy, prompt, answer, confidence, prompt_tokens, completion_tokens, duration_ms, "
    "created_at, messages, context, samples, unsupported_claims, model, timings, labels, "
    "options, draft"
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
        messages=json.loads(row["messages"]),
        context=json.loads(row["context"]),
        samples=[TraceSample(**s) for s in json.loads(row["samples"])],
        unsupported_claims=json.loads(row["unsupported_claims"]),
        model=row["model"],
        timings=json.loads(row["timings"]),
        labels=json.loads(row["labels"]),
        options=json.loads(row["options"]),
        draft=row["draft"],
    )


class PostgresTraceStore:
    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def record(
        self, client_id: str, trace: NewTrace, on_recorded: OnRecorded | None = None
    ) -> Trace:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO traces
                        (id, client_id, strategy, prompt, answer, confidence, prompt_tokens,
                         completion_tokens, duration_ms, messages, context, samples,
                         unsupported_claims, model, timings, labels, options, draft)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb,
                            $12::jsonb, $13::jsonb, $14, $15::jsonb, $16::jsonb, $17::jsonb, $18)
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
                json.dumps(trace.messages),
                json.dumps(trace.context),
                json.dumps([asdict(s) for s in trace.samples]),
                json.dumps(trace.unsupported_claims),
                trace.model,
                json.dumps(trace.timings),
                json.dumps(trace.labels),
                json.dumps(trace.options),
                trace.draft,
            )
            recorded = _trace(row)
            if on_recorded is not None:
                await on_recorded(conn, recorded)
        return recorded

    async def get(self, client_id: str, trace_id: UUID) -> Trace | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM traces WHERE client_id = $1 AND id = $2", client_id, trace_id
        )
        return _trace(row) if row else None

    async def list(
        self,
        client_id: str,
        page_token: str,
        page_size: int,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Trace], str]:
        args: list[Any] = [client_id]
        condition = "client_id = $1"
        if labels:
            args.append(json.dumps(dict(labels)))
            condition += f" AND labels @> ${len(args)}::jsonb"
        rows, token = await pagination.keyset_page(
            self.db,
            table="traces",
            columns=_COLUMNS,
            where=condition,
            args=args,
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_trace(r) for r in rows], token
