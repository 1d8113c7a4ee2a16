"""PostgreSQL adapter of the persona store."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page

from edrs_persona.store import NewPersona, Persona

_COLUMNS = (
    "id, name, role, responsibilities, skills, tone, instructions, status, created_at, updated_at"
)


def _persona(row: Any) -> Persona:
    return Persona(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        responsibilities=list(row["responsibilities"]),
        skills=list(row["skills"]),
        tone=row["tone"],
        instructions=row["instructions"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresPersonaStore:
    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def create(self, client_id: str, persona: NewPersona) -> Persona:
        row = await self.db.fetchrow(
            f"""INSERT INTO personas
                    (id, client_id, name, role, responsibilities, skills, tone, instructions)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                RETURNING {_COLUMNS}""",
            new_id(),
            client_id,
            persona.name,
            persona.role,
            persona.responsibilities,
            persona.skills,
            persona.tone,
            persona.instructions,
        )
        return _persona(row)

    async def get(self, client_id: str, persona_id: UUID) -> Persona | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM personas WHERE client_id = $1 AND id = $2",
            client_id,
            persona_id,
        )
        return _persona(row) if row else None

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Persona], str]:
        rows, token = await keyset_page(
            self.db,
            table="personas",
            columns=_COLUMNS,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return [_persona(r) for r in rows], token
