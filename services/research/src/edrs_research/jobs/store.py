"""PostgreSQL store of research jobs, their updates log, step records, pages and reports.

Every read and write names the tenant; a job of another tenant is None (NOT_FOUND upstream)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core.events import ServiceEvents
from edrs_core.pagination import keyset_page
from edrs_events.pg import Connection

QUEUED, PLANNING, SEARCHING, FETCHING, SCORING, DRAFTING = (
    "queued",
    "planning",
    "searching",
    "fetching",
    "scoring",
    "drafting",
)
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
ENDED = (COMPLETED, FAILED, CANCELLED)

_COLUMNS = (
    "id, client_id, question, scope, state, plan, planner, progress, error, persona_id, task_id, "
    "created_at, updated_at, ended_at"
)


@dataclass(frozen=True, kw_only=True)
class JobRow:
    id: UUID
    client_id: str
    question: str
    scope: dict[str, Any]
    state: str
    plan: list[dict[str, Any]]
    planner: str
    progress: dict[str, int]
    error: str
    persona_id: str
    task_id: str
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None

    @property
    def ended(self) -> bool:
        return self.state in ENDED


@dataclass(frozen=True)
class UpdateRow:
    seq: int
    kind: str
    detail: str
    url: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class PageRecord:
    url: str
    outcome: str
    detail: str
    source_id: UUID | None
    document_id: str
    links: tuple[str, ...]
    fetches: int


@dataclass
class StepRecord:
    result: Any
    runs: int = field(default=1)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _job(row: Any) -> JobRow:
    return JobRow(
        id=row["id"],
        client_id=row["client_id"],
        question=row["question"],
        scope=_json(row["scope"]),
        state=row["state"],
        plan=_json(row["plan"]),
        planner=row["planner"],
        progress=_json(row["progress"]),
        error=row["error"],
        persona_id=row["persona_id"],
        task_id=row["task_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
    )


# WatchJob waits on this channel (edrs_core.notifications), keyed by the job id: every update row
# is announced in the transaction that writes it.
UPDATES_CHANNEL = "edrs_research_job_updates"


async def _announce(conn: Connection, job_id: UUID) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", UPDATES_CHANNEL, str(job_id))


class JobStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    async def create(
        self,
        client_id: str,
        job_id: UUID,
        question: str,
        scope: dict[str, Any],
        persona_id: str,
    ) -> JobRow:
        """The job (QUEUED), its first update and its `research.job_started` event, at once."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO research_jobs (id, client_id, question, scope, state, persona_id)
                    VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING {_COLUMNS}""",
                job_id,
                client_id,
                question,
                json.dumps(scope),
                QUEUED,
                persona_id,
            )
            await conn.execute(
                "INSERT INTO research_job_updates (job_id, kind, detail) VALUES ($1, 'state', $2)",
                job_id,
                "queued",
            )
            await _announce(conn, job_id)
            payload: dict[str, Any] = {
                "job_id": str(job_id),
                "question_length": len(question),
                "web": bool(scope.get("web", False)),
                "collections": len(scope.get("collections", [])),
            }
            if persona_id:
                payload["persona_id"] = persona_id
            await self.events.add(
                conn,
                "research.job_started",
                payload,
                aggregate_id=str(job_id),
                client_id=client_id,
            )
        return _job(row)

    async def get(self, client_id: str, job_id: UUID) -> JobRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM research_jobs WHERE client_id = $1 AND id = $2",
            client_id,
            job_id,
        )
        return None if row is None else _job(row)

    async def list_jobs(
        self, client_id: str, state: str, page_token: str, page_size: int
    ) -> tuple[list[JobRow], str]:
        where, args = "client_id = $1", [client_id]
        if state:
            where += " AND state = $2"
            args.append(state)
        rows, token = await keyset_page(
            self.db,
            table="research_jobs",
            columns=_COLUMNS,
            where=where,
            args=args,
            page_token=page_token,
            requested_size=page_size,
            descending=True,
        )
        return [_job(r) for r in rows], token

    async def update(
        self,
        client_id: str,
        job_id: UUID,
        kind: str,
        detail: str = "",
        *,
        url: str = "",
        state: str | None = None,
        plan: list[dict[str, Any]] | None = None,
        planner: str | None = None,
        progress: dict[str, int] | None = None,
    ) -> bool:
        """Record one step of a running job (and its new state, plan, progress); False, and
        nothing written, once the job has ended (a cancelled job's late steps are dropped)."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """UPDATE research_jobs SET
                       state = coalesce($3, state),
                       plan = coalesce($4::jsonb, plan),
                       planner = coalesce($5, planner),
                       progress = progress || coalesce($6::jsonb, '{}'::jsonb),
                       updated_at = now()
                   WHERE client_id = $1 AND id = $2 AND ended_at IS NULL
                   RETURNING id""",
                client_id,
                job_id,
                state,
                None if plan is None else json.dumps(plan),
                planner,
                None if progress is None else json.dumps(progress),
            )
            if row is None:
                return False
            await conn.execute(
                "INSERT INTO research_job_updates (job_id, kind, detail, url) "
                "VALUES ($1, $2, $3, $4)",
                job_id,
                kind,
                detail,
                url,
            )
            await _announce(conn, job_id)
        return True

    async def set_task(self, client_id: str, job_id: UUID, task_id: str) -> None:
        await self.db.execute(
            "UPDATE research_jobs SET task_id = $3 WHERE client_id = $1 AND id = $2",
            client_id,
            job_id,
            task_id,
        )

    async def end(
        self,
        client_id: str,
        job_id: UUID,
        state: str,
        detail: str,
        *,
        error: str = "",
        report: bytes | None = None,
        summary: str = "",
        progress: dict[str, int] | None = None,
    ) -> JobRow | None:
        """End the job once (COMPLETED with its report and `research.report_completed`, FAILED,
        CANCELLED); None when it had already ended (the first end stands)."""
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE research_jobs SET state = $3, error = $4, updated_at = now(),
                        ended_at = now(),
                        progress = progress || coalesce($5::jsonb, '{{}}'::jsonb)
                    WHERE client_id = $1 AND id = $2 AND ended_at IS NULL
                    RETURNING {_COLUMNS}""",
                client_id,
                job_id,
                state,
                error,
                None if progress is None else json.dumps(progress),
            )
            if row is None:
                return None
            await conn.execute(
                "INSERT INTO research_job_updates (job_id, kind, detail) VALUES ($1, 'ended', $2)",
                job_id,
                detail,
            )
            await _announce(conn, job_id)
            ended = _job(row)
            if report is not None:
                await conn.execute(
                    "INSERT INTO research_reports (job_id, client_id, report) VALUES ($1, $2, $3)",
                    job_id,
                    client_id,
                    report,
                )
                payload: dict[str, Any] = {
                    "job_id": str(job_id),
                    "claims": int(ended.progress.get("claims", 0)),
                    "claims_supported": int(ended.progress.get("claims_supported", 0)),
                    "sources": int(ended.progress.get("sources_scored", 0)),
                }
                if ended.persona_id:
                    payload["persona_id"] = ended.persona_id
                if ended.task_id:
                    payload["task_id"] = ended.task_id
                await self.events.add(
                    conn,
                    "research.report_completed",
                    payload,
                    aggregate_id=str(job_id),
                    client_id=client_id,
                )
        return ended

    async def updates_after(self, client_id: str, job_id: UUID, seq: int) -> list[UpdateRow]:
        rows = await self.db.fetch(
            """SELECT u.seq, u.kind, u.detail, u.url, u.created_at FROM research_job_updates u
               JOIN research_jobs j ON j.id = u.job_id AND j.client_id = $1
               WHERE u.job_id = $2 AND u.seq > $3 ORDER BY u.seq""",
            client_id,
            job_id,
            seq,
        )
        return [
            UpdateRow(r["seq"], r["kind"], r["detail"], r["url"], r["created_at"]) for r in rows
        ]

    async def report(self, client_id: str, job_id: UUID) -> bytes | None:
        row = await self.db.fetchrow(
            "SELECT report FROM research_reports WHERE client_id = $1 AND job_id = $2",
            client_id,
            job_id,
        )
        return None if row is None else bytes(row["report"])

    # Step records: what a job already did, so a retried or resumed activity does not redo it.

    async def step(self, job_id: UUID, key: str) -> StepRecord | None:
        row = await self.db.fetchrow(
            "SELECT result, runs FROM research_job_steps WHERE job_id = $1 AND step_key = $2",
            job_id,
            key,
        )
        return None if row is None else StepRecord(_json(row["result"]), row["runs"])

    async def record_step(self, job_id: UUID, key: str, result: Any) -> StepRecord:
        """Record a step's result and return the record: a second record of the same key (the
        step really ran twice, e.g. two attempts raced) keeps the first result and counts the
        run (`runs` > 1), so tests and operators can see it, and the caller uses the first."""
        row = await self.db.fetchrow(
            """INSERT INTO research_job_steps (job_id, step_key, result) VALUES ($1, $2, $3::jsonb)
               ON CONFLICT (job_id, step_key) DO UPDATE
               SET runs = research_job_steps.runs + 1
               RETURNING result, runs""",
            job_id,
            key,
            json.dumps(result),
        )
        assert row is not None  # INSERT ... ON CONFLICT DO UPDATE always returns the row
        return StepRecord(_json(row["result"]), row["runs"])

    async def steps(self, job_id: UUID, prefix: str) -> dict[str, StepRecord]:
        rows = await self.db.fetch(
            "SELECT step_key, result, runs FROM research_job_steps "
            "WHERE job_id = $1 AND starts_with(step_key, $2) ORDER BY created_at, step_key",
            job_id,
            prefix,
        )
        return {r["step_key"]: StepRecord(_json(r["result"]), r["runs"]) for r in rows}

    async def record_page(
        self,
        job_id: UUID,
        url: str,
        outcome: str,
        detail: str,
        source_id: UUID | None,
        document_id: str,
        links: tuple[str, ...] = (),
    ) -> None:
        """Record what came of a page (fetched, refused, duplicate). Recording it again (the
        page was really fetched twice) keeps the first record and counts the fetch."""
        await self.db.execute(
            """INSERT INTO research_job_pages
                   (job_id, url, outcome, detail, source_id, document_id, links)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (job_id, url) DO UPDATE SET fetches = research_job_pages.fetches + 1""",
            job_id,
            url,
            outcome,
            detail,
            source_id,
            document_id,
            list(links),
        )

    async def pages(self, job_id: UUID) -> list[PageRecord]:
        rows = await self.db.fetch(
            "SELECT url, outcome, detail, source_id, document_id, links, fetches "
            "FROM research_job_pages WHERE job_id = $1 ORDER BY created_at, url",
            job_id,
        )
        return [
            PageRecord(
                url=r["url"],
                outcome=r["outcome"],
                detail=r["detail"],
                source_id=r["source_id"],
                document_id=r["document_id"],
                links=tuple(r["links"]),
                fetches=r["fetches"],
            )
            for r in rows
        ]
