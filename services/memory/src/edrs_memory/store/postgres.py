"""PostgreSQL adapter of the memory store: episodes (pgvector), facts, durable working memory.

Writes that belong together share one transaction with their events (outbox), so a committed
change always has its event and a rolled-back one never does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_events.outbox import Outbox
from edrs_events.pg import Connection

from edrs_memory import facts as fact_rules
from edrs_memory.embeddings import Vector, vector_literal
from edrs_memory.store import (
    Episode,
    Fact,
    FactChanges,
    Forgotten,
    NewEpisode,
    RecallCandidate,
    Scope,
    WorkingItem,
)

_EPISODE = (
    "id, persona_id, user_id, conversation_id, kind, role, text, importance, trace_id, created_at"
)
_FACT = (
    "id, persona_id, user_id, attribute, value, statement, source, source_episode_id, "
    "valid_from, valid_to, superseded_by"
)
_WORKING = (
    "id, persona_id, user_id, conversation_id, text, priority, kind, role, created_at, expires_at"
)
SUPERSEDED_REASON = "contradicted by a newer statement"


def session_settings(nearest: int) -> dict[str, str]:
    """What every connection of memory's pool starts with, for `recall_candidates`: pgvector's
    iterative HNSW scan (relaxed order), its first candidate list as long as the `nearest`
    episodes a recall takes (at least pgvector's default, 40), and a plan made for each call's
    own values. Sent in the startup packet, these cost no round trip per recall (a transaction
    with three `SET LOCAL`s cost about 1.5 ms of a 6 ms store query at 100,000 episodes)."""
    return {
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.ef_search": str(max(40, nearest)),
        "plan_cache_mode": "force_custom_plan",
    }


def _episode(row: Any) -> Episode:
    return Episode(**{k: row[k] for k in _EPISODE.split(", ")})


def _fact(row: Any) -> Fact:
    return Fact(**{k: row[k] for k in _FACT.split(", ")})


def _working(row: Any) -> WorkingItem:
    return WorkingItem(**{k: row[k] for k in _WORKING.split(", ")})


def _scope_sql(scope: Scope, params: list[Any], exclude_conversation_id: str = "") -> str:
    """The WHERE clause of a scope, appending its values to `params`.

    Fixed predicates per shape rather than `($n = '' OR user_id = $n)`, so the planner can use
    the scope index whatever the values.
    """
    params += [scope.client_id, scope.persona_id]
    sql = f"client_id = ${len(params) - 1} AND persona_id = ${len(params)}"
    if scope.user_id:
        params.append(scope.user_id)
        sql += f" AND user_id = ${len(params)}"
    if exclude_conversation_id:
        params.append(exclude_conversation_id)
        sql += f" AND conversation_id <> ${len(params)}"
    return sql


class PostgresMemoryStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    async def settings_missing(self, expected: dict[str, str]) -> dict[str, str | None]:
        """Which of `expected` (name: value) a connection of the pool does not run with, and
        what it has instead (None: not set, as pgvector's own are until the extension is
        loaded): nothing, when the pool's connections carry them all."""
        async with self.db.acquire() as conn:
            shown = {
                name: await conn.fetchval("SELECT current_setting($1, true)", name)
                for name in expected
            }
        return {name: value for name, value in shown.items() if value != expected[name]}

    async def embedding_dimensions(self) -> int:
        """The dimension the episodes table stores (the `vector(n)` column's n)."""
        return int(
            await self.db.fetchval(
                """SELECT atttypmod FROM pg_attribute
                   WHERE attrelid = 'episodes'::regclass AND attname = 'embedding'"""
            )
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.db.acquire() as conn, conn.transaction():
            yield conn

    # Episodes

    async def add_episodes(
        self,
        conn: Connection,
        client_id: str,
        episodes: Sequence[tuple[NewEpisode, Vector | None]],
    ) -> list[Episode]:
        """Insert episodes in `conn`'s transaction, each with its `memory.episode_stored` event."""
        stored = []
        for episode, vector in episodes:
            row = await conn.fetchrow(
                f"""INSERT INTO episodes (id, client_id, persona_id, user_id, conversation_id,
                        kind, role, text, importance, trace_id, embedding)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::vector)
                    RETURNING {_EPISODE}""",
                new_id(),
                client_id,
                episode.persona_id,
                episode.user_id,
                episode.conversation_id,
                episode.kind,
                episode.role,
                episode.text,
                episode.importance,
                episode.trace_id,
                None if vector is None else vector_literal(vector),
            )
            new = _episode(row)
            await self.events.add(
                conn,
                "memory.episode_stored",
                {
                    "episode_id": str(new.id),
                    "persona_id": str(new.persona_id),
                    "user_id": new.user_id,
                    "importance": new.importance,
                },
                aggregate_id=str(new.id),
            )
            stored.append(new)
        return stored

    async def bulk_load_episodes(
        self, client_id: str, episodes: Iterable[tuple[NewEpisode, Vector, datetime]]
    ) -> int:
        """Load many episodes with precomputed vectors and times in one COPY (no events): for
        benchmarks and imports. CSV, because pgvector's text form needs no client codec."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        count = 0
        for episode, vector, created_at in episodes:
            writer.writerow(
                [
                    new_id(),
                    client_id,
                    episode.persona_id,
                    episode.user_id,
                    episode.conversation_id,
                    episode.kind,
                    episode.role,
                    episode.text,
                    episode.importance,
                    episode.trace_id,
                    vector_literal(vector),
                    created_at.isoformat(),
                ]
            )
            count += 1
        async with self.db.acquire() as conn:
            await conn.copy_to_table(
                "episodes",
                source=io.BytesIO(buffer.getvalue().encode()),
                columns=[
                    "id",
                    "client_id",
                    *_EPISODE.split(", ")[1:-1],
                    "embedding",
                    "created_at",
                ],
                format="csv",
                # In CSV an unquoted empty field is NULL; these are '' instead.
                force_not_null=["user_id", "conversation_id", "kind", "role", "text", "trace_id"],
            )
        return count

    async def recall_candidates(
        self,
        scope: Scope,
        query: Vector | None,
        *,
        exclude_conversation_id: str,
        nearest: int,
        recent: int,
    ) -> list[RecallCandidate]:
        """The scope's `nearest` episodes by embedding and its `recent` newest ones, deduplicated.

        Plan: the btree on (client_id, persona_id, user_id, created_at) and the HNSW index are both
        there, and the planner picks by the scope's estimated size: a small scope is read through
        the btree and its distances computed exactly (fast and exact at a few thousand rows); a
        large scope walks the HNSW graph. pgvector >= 0.8's iterative scan (relaxed order: we
        re-rank anyway) keeps walking until `nearest` rows pass the scope filter, so a filtered
        HNSW scan does not come back short; it also walks on past `hnsw.ef_search` when a call
        asks for more. Custom plans per call, because a cached generic plan would choose one path
        for every scope size. Both settings come with every pooled connection
        (`session_settings`): one statement, no transaction and `SET`s around it.
        """
        params: list[Any] = []
        where = _scope_sql(scope, params, exclude_conversation_id)
        distance = "NULL::float8"
        if query is not None:
            params.append(vector_literal(query))
            distance = f"(embedding <=> ${len(params)}::text::vector)"
        similarity = f"1 - {distance}"
        parts = []
        if recent:
            params.append(recent)
            parts.append(
                f"""(SELECT {_EPISODE}, {similarity} AS similarity FROM episodes
                     WHERE {where} ORDER BY created_at DESC LIMIT ${len(params)})"""
            )
        if query is not None and nearest:
            params.append(nearest)
            parts.append(
                f"""(SELECT {_EPISODE}, {similarity} AS similarity FROM episodes
                     WHERE {where} AND embedding IS NOT NULL
                     ORDER BY {distance} LIMIT ${len(params)})"""
            )
        if not parts:
            return []
        rows = await self.db.fetch(" UNION ALL ".join(parts), *params)
        seen: dict[UUID, RecallCandidate] = {}
        for r in rows:
            if r["id"] not in seen:
                seen[r["id"]] = RecallCandidate(episode=_episode(r), similarity=r["similarity"])
        return list(seen.values())

    # Facts

    async def state_facts(
        self,
        conn: Connection,
        scope: Scope,
        stated: Sequence[tuple[str, str, str]],
        *,
        source: str,
        source_episode_id: UUID | None = None,
    ) -> FactChanges:
        """Apply stated (attribute, value, statement) facts in order, in `conn`'s transaction:
        add what is new, supersede what it contradicts (facts.resolve), emit the events."""
        learned: list[Fact] = []
        superseded: list[Fact] = []
        if not stated:
            return FactChanges(learned=learned, superseded=superseded)
        # One writer per user at a time, so two turns cannot both make a different manager current.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"facts|{scope.client_id}|{scope.persona_id}|{scope.user_id}",
        )
        rows = await conn.fetch(
            f"""SELECT {_FACT} FROM facts
                WHERE client_id = $1 AND persona_id = $2 AND user_id = $3 AND valid_to IS NULL""",
            scope.client_id,
            scope.persona_id,
            scope.user_id,
        )
        current = {r["id"]: _fact(r) for r in rows}
        for attribute, value, statement in stated:
            decision = fact_rules.resolve(
                [
                    fact_rules.CurrentFact(id=f.id, attribute=f.attribute, value=f.value)
                    for f in current.values()
                ],
                attribute,
                value,
            )
            if not decision.add:
                continue
            row = await conn.fetchrow(
                f"""INSERT INTO facts (id, client_id, persona_id, user_id, attribute, value,
                        statement, source, source_episode_id, valid_from)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
                    RETURNING {_FACT}""",
                new_id(),
                scope.client_id,
                scope.persona_id,
                scope.user_id,
                attribute,
                value,
                statement,
                source,
                source_episode_id,
            )
            fact = _fact(row)
            current[fact.id] = fact
            learned.append(fact)
            await self.events.add(
                conn,
                "memory.fact_learned",
                {
                    "fact_id": str(fact.id),
                    "persona_id": str(fact.persona_id),
                    "user_id": fact.user_id,
                    "attribute": fact.attribute,
                    "source": fact.source,
                },
                aggregate_id=str(fact.id),
            )
            if decision.supersede:
                retired = await conn.fetch(
                    f"""UPDATE facts SET valid_to = now(), superseded_by = $2
                        WHERE id = ANY($1::uuid[]) RETURNING {_FACT}""",
                    list(decision.supersede),
                    fact.id,
                )
                for r in retired:
                    old = _fact(r)
                    current.pop(old.id, None)
                    superseded.append(old)
                    await self.events.add(
                        conn,
                        "memory.fact_superseded",
                        {
                            "fact_id": str(old.id),
                            "superseded_by": str(fact.id),
                            "reason": SUPERSEDED_REASON,
                        },
                        aggregate_id=str(old.id),
                    )
        return FactChanges(learned=learned, superseded=superseded)

    async def list_facts(
        self, scope: Scope, *, include_superseded: bool, conn: Connection | None = None
    ) -> list[Fact]:
        """Current facts by attribute and age; with history, newest first within an attribute.

        In `conn`'s transaction when given (to read what that transaction just decided)."""
        params: list[Any] = []
        where = _scope_sql(scope, params)
        if not include_superseded:
            where += " AND valid_to IS NULL"
        rows = await (conn or self.db).fetch(
            f"""SELECT {_FACT} FROM facts WHERE {where}
                ORDER BY attribute, valid_to IS NOT NULL, valid_from DESC, id DESC""",
            *params,
        )
        return [_fact(r) for r in rows]

    async def delete_fact(self, scope: Scope, fact_id: UUID) -> bool:
        params: list[Any] = []
        where = _scope_sql(scope, params)
        params.append(fact_id)
        status = await self.db.execute(
            f"DELETE FROM facts WHERE {where} AND id = ${len(params)}", *params
        )
        return bool(status == "DELETE 1")

    async def forget_user(self, scope: Scope) -> tuple[Forgotten, list[str]]:
        """Delete the user's facts, episodes and durable working memory; returns the counts and
        the conversations whose hot working memory must go too."""
        params: list[Any] = []
        where = _scope_sql(scope, params)
        async with self.transaction() as conn:
            facts = await conn.execute(f"DELETE FROM facts WHERE {where}", *params)
            episodes = await conn.execute(f"DELETE FROM episodes WHERE {where}", *params)
            rows = await conn.fetch(
                f"DELETE FROM working_items WHERE {where} RETURNING conversation_id", *params
            )
        counts = Forgotten(
            facts=int(facts.split()[-1]),
            episodes=int(episodes.split()[-1]),
            working_items=len(rows),
        )
        return counts, sorted({r["conversation_id"] for r in rows})

    async def erase_user(
        self, conn: Connection, client_id: str, user_id: str
    ) -> tuple[Forgotten, list[tuple[UUID, str]]]:
        """Delete everything held about a user of the tenant, with every persona, in `conn`'s
        transaction: facts, episodes, durable working memory, and the sent events that name
        them; then the `memory.user_erased` event. Returns the counts and the (persona,
        conversation) pairs whose hot working memory must go too."""
        facts = await conn.execute(
            "DELETE FROM facts WHERE client_id = $1 AND user_id = $2", client_id, user_id
        )
        episodes = await conn.execute(
            "DELETE FROM episodes WHERE client_id = $1 AND user_id = $2", client_id, user_id
        )
        rows = await conn.fetch(
            """DELETE FROM working_items WHERE client_id = $1 AND user_id = $2
               RETURNING persona_id, conversation_id""",
            client_id,
            user_id,
        )
        await Outbox.forget_user(conn, client_id, user_id)
        counts = Forgotten(
            facts=int(facts.split()[-1]),
            episodes=int(episodes.split()[-1]),
            working_items=len(rows),
        )
        await self.events.add(
            conn,
            "memory.user_erased",
            {
                "user_id": user_id,
                "episodes": counts.episodes,
                "facts": counts.facts,
                "working_items": counts.working_items,
            },
            aggregate_id=user_id,
            client_id=client_id,
        )
        return counts, sorted({(r["persona_id"], r["conversation_id"]) for r in rows})

    async def user_data(
        self, client_id: str, user_id: str
    ) -> tuple[list[Episode], list[Fact], list[WorkingItem]]:
        """Everything held about a user of the tenant, with every persona (a data-subject access
        request): episodes oldest first, facts with their history, live and expired working
        memory not yet swept. One snapshot (a repeatable-read transaction)."""
        async with (
            self.db.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            episodes = await conn.fetch(
                f"""SELECT {_EPISODE} FROM episodes WHERE client_id = $1 AND user_id = $2
                    ORDER BY created_at, id""",
                client_id,
                user_id,
            )
            facts = await conn.fetch(
                f"""SELECT {_FACT} FROM facts WHERE client_id = $1 AND user_id = $2
                    ORDER BY persona_id, attribute, valid_from, id""",
                client_id,
                user_id,
            )
            working = await conn.fetch(
                f"""SELECT {_WORKING} FROM working_items WHERE client_id = $1 AND user_id = $2
                    ORDER BY created_at, id""",
                client_id,
                user_id,
            )
        return (
            [_episode(r) for r in episodes],
            [_fact(r) for r in facts],
            [_working(r) for r in working],
        )

    # Working memory (durable copy)

    async def add_working_items(
        self, conn: Connection, client_id: str, items: Sequence[WorkingItem]
    ) -> None:
        await conn.executemany(
            """INSERT INTO working_items (id, client_id, persona_id, user_id, conversation_id,
                   text, priority, kind, role, created_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            [
                (
                    i.id,
                    client_id,
                    i.persona_id,
                    i.user_id,
                    i.conversation_id,
                    i.text,
                    i.priority,
                    i.kind,
                    i.role,
                    i.created_at,
                    i.expires_at,
                )
                for i in items
            ],
        )

    async def delete_working_items(self, client_id: str, ids: Sequence[UUID]) -> None:
        if ids:
            await self.db.execute(
                "DELETE FROM working_items WHERE client_id = $1 AND id = ANY($2::uuid[])",
                client_id,
                list(ids),
            )

    async def live_working_items(
        self, scope: Scope, conversation_id: str, now: datetime
    ) -> list[WorkingItem]:
        params: list[Any] = []
        where = _scope_sql(scope, params)
        params += [conversation_id, now]
        rows = await self.db.fetch(
            f"""SELECT {_WORKING} FROM working_items
                WHERE {where} AND conversation_id = ${len(params) - 1} AND expires_at > ${len(params)}
                ORDER BY created_at, id""",
            *params,
        )
        return [_working(r) for r in rows]
