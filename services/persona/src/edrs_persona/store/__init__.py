"""The persona store port: what the service needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class NewPersona:
    name: str
    role: str
    responsibilities: list[str] = field(default_factory=list)
    skills: list[str] = field(default_factory=list)
    tone: str = ""
    instructions: str = ""


@dataclass(frozen=True, kw_only=True)
class Persona(NewPersona):
    id: UUID
    status: str
    created_at: datetime
    updated_at: datetime


class PersonaStore(Protocol):
    async def create(self, client_id: str, persona: NewPersona) -> Persona: ...

    async def get(self, client_id: str, persona_id: UUID) -> Persona | None: ...

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Persona], str]: ...
