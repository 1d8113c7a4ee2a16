"""PostgreSQL adapter of the persona store."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import FailedPrecondition, NotFound
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import Cursor, decode_cursor, encode_cursor, keyset_page, page_size
from edrs_events.outbox import Outbox
from edrs_events.pg import Connection

from edrs_persona.store import (
    UPDATABLE_FIELDS,
    Conversation,
    ConversationKey,
    Coworker,
    HeldCall,
    Message,
    NewPersona,
    Persona,
    Relationship,
    TaskNotice,
    ToolPolicy,
    UserData,
    UserErased,
)

_COLUMNS = (
    "id, name, role, responsibilities, skills, tone, instructions, voice, voice_speed, tools, "
    "tool_policy, knowledge_collections, status, "
    "created_at, updated_at"
)
_MESSAGE_COLUMNS = "id, conversation_id, role, text, trace_id, created_at"
_CONVERSATION_COLUMNS = "id, persona_id, user_id, message_count, created_at, updated_at"


def _persona(row: Any) -> Persona:
    return Persona(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        responsibilities=list(row["responsibilities"]),
        skills=list(row["skills"]),
        tone=row["tone"],
        instructions=row["instructions"],
        voice=row["voice"],
        voice_speed=row["voice_speed"],
        tools=list(row["tools"]),
        tool_policy=ToolPolicy.of(json.loads(row["tool_policy"])),
        knowledge_collections=list(row["knowledge_collections"]),
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_HELD_COLUMNS = (
    "approval_id, persona_id, user_id, conversation_id, message_id, call_id, tool, arguments, "
    "impact, reason, status, result, decided_by, comment"
)


def _held(row: Any) -> HeldCall:
    return HeldCall(
        approval_id=row["approval_id"],
        persona_id=row["persona_id"],
        user_id=row["user_id"],
        conversation_id=row["conversation_id"],
        message_id=row["message_id"],
        call_id=row["call_id"],
        tool=row["tool"],
        arguments=json.loads(row["arguments"]),
        impact=row["impact"],
        reason=row["reason"],
        status=row["status"],
        result=row["result"],
        decided_by=row["decided_by"],
        comment=row["comment"],
    )


def _message(row: Any) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        text=row["text"],
        trace_id=row["trace_id"],
        created_at=row["created_at"],
    )


def _conversation(row: Any) -> Conversation:
    return Conversation(
        id=row["id"],
        persona_id=row["persona_id"],
        user_id=row["user_id"],
        message_count=row["message_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _relationship(persona_id: UUID, user_id: str, row: Any) -> Relationship:
    if row is None:
        return Relationship(persona_id=persona_id, user_id=user_id)
    return Relationship(
        persona_id=persona_id,
        user_id=user_id,
        notes=list(row["notes"]),
        interaction_count=row["interaction_count"],
        first_interaction_at=row["first_interaction_at"],
        last_interaction_at=row["last_interaction_at"],
    )


def _coworker(row: Any) -> Coworker:
    return Coworker(
        persona_id=row["persona_id"],
        coworker_id=row["coworker_id"],
        coworker_name=row["name"],
        coworker_role=row["role"],
        coworker_status=row["status"],
        relation=row["relation"],
        handover=row["handover"],
        created_at=row["created_at"],
    )


class PostgresPersonaStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents) -> None:
        self.db = db
        self.events = events

    # -- personas ---------------------------------------------------------------------------

    async def create(self, client_id: str, persona: NewPersona) -> Persona:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO personas
                        (id, client_id, name, role, responsibilities, skills, tone, instructions,
                         voice, voice_speed, tools, tool_policy, knowledge_collections)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)
                    RETURNING {_COLUMNS}""",
                new_id(),
                client_id,
                persona.name,
                persona.role,
                persona.responsibilities,
                persona.skills,
                persona.tone,
                persona.instructions,
                persona.voice,
                persona.voice_speed,
                persona.tools,
                json.dumps(persona.tool_policy.as_dict()),
                persona.knowledge_collections,
            )
            created = _persona(row)
            await self.events.add(
                conn,
                "persona.persona_created",
                {
                    "persona_id": str(created.id),
                    "name": created.name,
                    "role": created.role,
                    "skills": created.skills,
                },
                aggregate_id=str(created.id),
            )
        return created

    async def get(self, client_id: str, persona_id: UUID) -> Persona | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM personas WHERE client_id = $1 AND id = $2",
            client_id,
            persona_id,
        )
        return _persona(row) if row else None

    async def list_personas(
        self, client_id: str, page_token: str, page_size: int, *, include_archived: bool = False
    ) -> tuple[list[Persona], str]:
        rows, token = await keyset_page(
            self.db,
            table="personas",
            columns=_COLUMNS,
            where="client_id = $1" if include_archived else "client_id = $1 AND status = 'active'",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_persona(r) for r in rows], token

    async def _locked(self, conn: Connection, client_id: str, persona_id: UUID) -> Persona:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM personas WHERE client_id = $1 AND id = $2 FOR UPDATE",
            client_id,
            persona_id,
        )
        if row is None:
            raise NotFound(f"persona {persona_id} not found")
        return _persona(row)

    async def update(self, client_id: str, persona_id: UUID, changes: Mapping[str, Any]) -> Persona:
        # Column names come from UPDATABLE_FIELDS, never from the request.
        names = [f for f in UPDATABLE_FIELDS if f in changes]
        async with self.db.acquire() as conn, conn.transaction():
            current = await self._locked(conn, client_id, persona_id)
            if not current.active:
                raise FailedPrecondition(f"persona {persona_id} is archived and cannot be changed")
            sets = ", ".join(
                f"{name} = ${i}::jsonb" if name == "tool_policy" else f"{name} = ${i}"
                for i, name in enumerate(names, start=3)
            )
            row = await conn.fetchrow(
                f"""UPDATE personas SET {sets}, updated_at = now()
                    WHERE client_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
                client_id,
                persona_id,
                *(
                    json.dumps(changes[n].as_dict()) if n == "tool_policy" else changes[n]
                    for n in names
                ),
            )
            await self.events.add(
                conn,
                "persona.persona_updated",
                {"persona_id": str(persona_id), "fields": names},
                aggregate_id=str(persona_id),
            )
        return _persona(row)

    async def archive(self, client_id: str, persona_id: UUID) -> Persona:
        async with self.db.acquire() as conn, conn.transaction():
            current = await self._locked(conn, client_id, persona_id)
            if not current.active:
                return current
            row = await conn.fetchrow(
                f"""UPDATE personas SET status = 'archived', updated_at = now()
                    WHERE client_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
                client_id,
                persona_id,
            )
            await self.events.add(
                conn,
                "persona.persona_archived",
                {"persona_id": str(persona_id)},
                aggregate_id=str(persona_id),
            )
        return _persona(row)

    # -- conversations ----------------------------------------------------------------------

    @staticmethod
    async def _insert_message(
        conn: Connection, key: ConversationKey, role: str, text: str, trace_id: str
    ) -> Message:
        await conn.execute(
            """INSERT INTO conversations (client_id, persona_id, user_id, id, message_count)
               VALUES ($1, $2, $3, $4, 1)
               ON CONFLICT (client_id, persona_id, user_id, id) DO UPDATE
               SET message_count = conversations.message_count + 1, updated_at = now()""",
            key.client_id,
            key.persona_id,
            key.user_id,
            key.conversation_id,
        )
        row = await conn.fetchrow(
            f"""INSERT INTO messages
                    (id, client_id, persona_id, user_id, conversation_id, role, text, trace_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                RETURNING {_MESSAGE_COLUMNS}""",
            new_id(),
            key.client_id,
            key.persona_id,
            key.user_id,
            key.conversation_id,
            role,
            text,
            trace_id,
        )
        return _message(row)

    async def add_user_message(self, key: ConversationKey, text: str) -> Message:
        async with self.db.acquire() as conn, conn.transaction():
            message = await self._insert_message(conn, key, "user", text, "")
            await self.events.add(
                conn,
                "persona.message_received",
                {
                    "persona_id": str(key.persona_id),
                    "user_id": key.user_id,
                    "conversation_id": key.conversation_id,
                    "message_id": str(message.id),
                    "text": text,
                },
                aggregate_id=str(key.persona_id),
            )
        return message

    async def add_reply(
        self, key: ConversationKey, text: str, trace_id: str, latency_ms: float
    ) -> Message:
        async with self.db.acquire() as conn, conn.transaction():
            message = await self._insert_message(conn, key, "assistant", text, trace_id)
            await conn.execute(
                """INSERT INTO relationships (client_id, persona_id, user_id, interaction_count,
                                              first_interaction_at, last_interaction_at)
                   VALUES ($1, $2, $3, 1, now(), now())
                   ON CONFLICT (client_id, persona_id, user_id) DO UPDATE
                   SET interaction_count = relationships.interaction_count + 1,
                       first_interaction_at = coalesce(relationships.first_interaction_at, now()),
                       last_interaction_at = now(),
                       updated_at = now()""",
                key.client_id,
                key.persona_id,
                key.user_id,
            )
            await self.events.add(
                conn,
                "persona.response_delivered",
                {
                    "persona_id": str(key.persona_id),
                    "user_id": key.user_id,
                    "conversation_id": key.conversation_id,
                    "message_id": str(message.id),
                    "latency_ms": max(0.0, latency_ms),
                },
                aggregate_id=str(key.persona_id),
            )
        return message

    async def list_conversations(
        self, client_id: str, persona_id: UUID, user_id: str, page_token: str, page_size_: int
    ) -> tuple[list[Conversation], str]:
        # Most recent first: the cursor holds the last row's (updated_at, id).
        cursor = decode_cursor(page_token)
        size = page_size(page_size_)
        args: list[Any] = [client_id, persona_id, user_id]
        condition = "client_id = $1 AND persona_id = $2 AND user_id = $3"
        if cursor is not None:
            condition += " AND (updated_at, id) < ($4, $5)"
            args += [cursor.created_at, cursor.id]
        rows = await self.db.fetch(
            f"""SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {condition}
                ORDER BY updated_at DESC, id DESC LIMIT {size + 1}""",
            *args,
        )
        if len(rows) <= size:
            return [_conversation(r) for r in rows], ""
        last = rows[size - 1]
        token = encode_cursor(Cursor(last["updated_at"], last["id"]))
        return [_conversation(r) for r in rows[:size]], token

    async def list_messages(
        self, key: ConversationKey, page_token: str, page_size_: int
    ) -> tuple[list[Message], str]:
        rows, token = await keyset_page(
            self.db,
            table="messages",
            columns=_MESSAGE_COLUMNS,
            where="client_id = $1 AND persona_id = $2 AND user_id = $3 AND conversation_id = $4",
            args=[key.client_id, key.persona_id, key.user_id, key.conversation_id],
            page_token=page_token,
            requested_size=page_size_,
        )
        return [_message(r) for r in rows], token

    # -- relationships ----------------------------------------------------------------------

    async def get_relationship(
        self, client_id: str, persona_id: UUID, user_id: str
    ) -> Relationship:
        row = await self.db.fetchrow(
            """SELECT notes, interaction_count, first_interaction_at, last_interaction_at
               FROM relationships WHERE client_id = $1 AND persona_id = $2 AND user_id = $3""",
            client_id,
            persona_id,
            user_id,
        )
        return _relationship(persona_id, user_id, row)

    async def set_notes(
        self, client_id: str, persona_id: UUID, user_id: str, notes: list[str]
    ) -> Relationship:
        row = await self.db.fetchrow(
            """INSERT INTO relationships (client_id, persona_id, user_id, notes)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (client_id, persona_id, user_id) DO UPDATE
               SET notes = excluded.notes, updated_at = now()
               RETURNING notes, interaction_count, first_interaction_at, last_interaction_at""",
            client_id,
            persona_id,
            user_id,
            notes,
        )
        return _relationship(persona_id, user_id, row)

    async def forget(self, client_id: str, persona_id: UUID, user_id: str) -> int:
        async with self.db.acquire() as conn, conn.transaction():
            deleted = await conn.fetchval(
                """WITH gone AS (
                       DELETE FROM messages
                       WHERE client_id = $1 AND persona_id = $2 AND user_id = $3 RETURNING 1)
                   SELECT count(*) FROM gone""",
                client_id,
                persona_id,
                user_id,
            )
            for table in ("conversations", "relationships"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE client_id = $1 AND persona_id = $2 AND user_id = $3",
                    client_id,
                    persona_id,
                    user_id,
                )
            await self.events.add(
                conn,
                "persona.relationship_forgotten",
                {"persona_id": str(persona_id), "user_id": user_id},
                aggregate_id=str(persona_id),
            )
        return int(deleted)

    async def erase_user(self, conn: Connection, client_id: str, user_id: str) -> UserErased:
        """Delete a user's messages, conversations and relationships with every persona of the
        tenant, and the sent events that name them, then write `persona.user_erased`; all in
        `conn`'s transaction."""

        async def delete(table: str) -> int:
            status = await conn.execute(
                f"DELETE FROM {table} WHERE client_id = $1 AND user_id = $2", client_id, user_id
            )
            return int(status.split()[-1])

        # Messages first: the conversations' cascade would delete them uncounted.
        # Told or not, finished-task notices are about the user: they go too (not counted).
        await delete("task_notices")
        erased = UserErased(
            messages=await delete("messages"),
            conversations=await delete("conversations"),
            relationships=await delete("relationships"),
        )
        await Outbox.forget_user(conn, client_id, user_id)
        await self.events.add(
            conn,
            "persona.user_erased",
            {
                "user_id": user_id,
                "relationships": erased.relationships,
                "conversations": erased.conversations,
                "messages": erased.messages,
            },
            aggregate_id=user_id,
            client_id=client_id,
        )
        return erased

    async def add_task_notice(self, conn: Connection, client_id: str, notice: TaskNotice) -> None:
        await conn.execute(
            """INSERT INTO task_notices
                (client_id, task_id, persona_id, user_id, title, status, outcome)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (client_id, task_id) DO NOTHING""",
            client_id,
            UUID(notice.task_id),
            UUID(notice.persona_id),
            notice.user_id,
            notice.title,
            notice.status,
            notice.outcome,
        )

    async def untold_task_notices(
        self, client_id: str, persona_id: UUID, user_id: str, limit: int
    ) -> list[TaskNotice]:
        rows = await self.db.fetch(
            """SELECT task_id, persona_id, user_id, title, status, outcome FROM task_notices
            WHERE client_id = $1 AND persona_id = $2 AND user_id = $3 AND told_at IS NULL
            ORDER BY created_at, task_id LIMIT $4""",
            client_id,
            persona_id,
            user_id,
            limit,
        )
        return [
            TaskNotice(
                task_id=str(r["task_id"]),
                persona_id=str(r["persona_id"]),
                user_id=r["user_id"],
                title=r["title"],
                status=r["status"],
                outcome=r["outcome"],
            )
            for r in rows
        ]

    async def mark_task_notices_told(self, client_id: str, task_ids: Sequence[str]) -> None:
        await self.db.execute(
            """UPDATE task_notices SET told_at = now()
            WHERE client_id = $1 AND task_id = ANY($2::uuid[]) AND told_at IS NULL""",
            client_id,
            [UUID(t) for t in task_ids],
        )

    async def user_data(self, client_id: str, user_id: str) -> UserData:
        async with (
            self.db.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            relationships = await conn.fetch(
                """SELECT persona_id, notes, interaction_count, first_interaction_at,
                          last_interaction_at
                   FROM relationships WHERE client_id = $1 AND user_id = $2
                   ORDER BY first_interaction_at NULLS LAST, persona_id""",
                client_id,
                user_id,
            )
            conversations = await conn.fetch(
                f"""SELECT {_CONVERSATION_COLUMNS} FROM conversations
                    WHERE client_id = $1 AND user_id = $2 ORDER BY created_at, persona_id, id""",
                client_id,
                user_id,
            )
            messages = await conn.fetch(
                f"""SELECT persona_id, {_MESSAGE_COLUMNS} FROM messages
                    WHERE client_id = $1 AND user_id = $2 ORDER BY created_at, id""",
                client_id,
                user_id,
            )
        by_conversation: dict[tuple[UUID, str], list[Message]] = {}
        for m in messages:
            by_conversation.setdefault((m["persona_id"], m["conversation_id"]), []).append(
                _message(m)
            )
        return UserData(
            relationships=[_relationship(r["persona_id"], user_id, r) for r in relationships],
            conversations=[
                (_conversation(c), by_conversation.get((c["persona_id"], c["id"]), []))
                for c in conversations
            ],
        )

    # -- co-workers -------------------------------------------------------------------------

    # -- held tool calls ------------------------------------------------------------------------

    async def add_held_call(self, client_id: str, call: HeldCall) -> None:
        await self.db.execute(
            f"""INSERT INTO held_tool_calls ({_HELD_COLUMNS}, client_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15)
                ON CONFLICT (client_id, approval_id) DO NOTHING""",
            call.approval_id,
            call.persona_id,
            call.user_id,
            call.conversation_id,
            call.message_id,
            call.call_id,
            call.tool,
            json.dumps(call.arguments),
            call.impact,
            call.reason,
            call.status,
            call.result,
            call.decided_by,
            call.comment,
            client_id,
        )

    async def held_call(
        self, conn: Connection | None, client_id: str, approval_id: UUID
    ) -> HeldCall | None:
        row = await (conn or self.db).fetchrow(
            f"""SELECT {_HELD_COLUMNS} FROM held_tool_calls
                WHERE client_id = $1 AND approval_id = $2""",
            client_id,
            approval_id,
        )
        return _held(row) if row is not None else None

    async def mark_held_call(self, client_id: str, approval_id: UUID, status: str) -> None:
        await self.db.execute(
            """UPDATE held_tool_calls SET status = $3, updated_at = now()
               WHERE client_id = $1 AND approval_id = $2""",
            client_id,
            approval_id,
            status,
        )

    async def untold_call_outcomes(self, key: ConversationKey, limit: int) -> list[HeldCall]:
        rows = await self.db.fetch(
            f"""SELECT {_HELD_COLUMNS} FROM held_tool_calls
                WHERE client_id = $1 AND persona_id = $2 AND user_id = $3
                  AND conversation_id = $4 AND told_at IS NULL
                  AND status IN ('completed', 'failed', 'rejected', 'expired')
                ORDER BY updated_at, approval_id LIMIT $5""",
            key.client_id,
            key.persona_id,
            key.user_id,
            key.conversation_id,
            limit,
        )
        return [_held(r) for r in rows]

    async def mark_call_outcomes_told(self, client_id: str, approval_ids: Sequence[UUID]) -> None:
        await self.db.execute(
            """UPDATE held_tool_calls SET told_at = now()
               WHERE client_id = $1 AND approval_id = ANY($2::uuid[]) AND told_at IS NULL""",
            client_id,
            list(approval_ids),
        )

    async def settle_held_call(
        self,
        conn: Connection,
        client_id: str,
        call: HeldCall,
        *,
        status: str,
        result: str,
        decided_by: str,
        comment: str,
        note: str,
    ) -> Message:
        await conn.execute(
            """UPDATE held_tool_calls SET status = $3, result = $4, decided_by = $5, comment = $6,
                   updated_at = now()
               WHERE client_id = $1 AND approval_id = $2""",
            client_id,
            call.approval_id,
            status,
            result,
            decided_by,
            comment,
        )
        key = ConversationKey(
            client_id=client_id,
            persona_id=call.persona_id,
            user_id=call.user_id,
            conversation_id=call.conversation_id,
        )
        return await self._insert_message(conn, key, "tool", note, "")

    async def set_coworker(
        self,
        client_id: str,
        persona_id: UUID,
        coworker_id: UUID,
        relation: str,
        handover: str,
    ) -> Coworker:
        async with self.db.acquire() as conn, conn.transaction():
            # Both directions carry the same relation text; each side reads it as "we ...".
            await conn.execute(
                """INSERT INTO coworkers (client_id, persona_id, coworker_id, relation, handover)
                   VALUES ($1, $2, $3, $4, $5), ($1, $3, $2, $4, $5)
                   ON CONFLICT (client_id, persona_id, coworker_id) DO UPDATE
                   SET relation = excluded.relation, handover = excluded.handover""",
                client_id,
                persona_id,
                coworker_id,
                relation,
                handover,
            )
            row = await conn.fetchrow(
                _COWORKER_SELECT + " AND c.coworker_id = $3", client_id, persona_id, coworker_id
            )
        return _coworker(row)

    async def list_coworkers(self, client_id: str, persona_id: UUID) -> list[Coworker]:
        rows = await self.db.fetch(
            _COWORKER_SELECT + " ORDER BY c.created_at, c.coworker_id", client_id, persona_id
        )
        return [_coworker(r) for r in rows]

    async def remove_coworker(self, client_id: str, persona_id: UUID, coworker_id: UUID) -> bool:
        status = await self.db.execute(
            """DELETE FROM coworkers WHERE client_id = $1
               AND ((persona_id = $2 AND coworker_id = $3) OR (persona_id = $3 AND coworker_id = $2))""",
            client_id,
            persona_id,
            coworker_id,
        )
        return status != "DELETE 0"


_COWORKER_SELECT = """
    SELECT c.persona_id, c.coworker_id, c.relation, c.handover, c.created_at,
           p.name, p.role, p.status
    FROM coworkers c JOIN personas p ON p.client_id = c.client_id AND p.id = c.coworker_id
    WHERE c.client_id = $1 AND c.persona_id = $2"""
