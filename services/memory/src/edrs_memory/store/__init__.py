"""The memory store port: what the service needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class NewMemory:
    persona_id: UUID
    user_id: str
    text: str
    importance: float
    conversation_id: str = ""


@dataclass(frozen=True, kw_only=True)
class Memory(NewMemory):
    id: UUID
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class RecallCandidate:
    """A memory that may answer a query, with the engine's full-text rank (0 = no match)."""

    memory: Memory
    text_rank: float


class MemoryStore(Protocol):
    async def create(self, client_id: str, memory: NewMemory) -> Memory: ...

    async def candidates(
        self, client_id: str, persona_id: UUID, user_id: str, query: str, *, per_source: int
    ) -> list[RecallCandidate]:
        """The `per_source` most recent memories of the persona (of `user_id`, or of every user
        when it is empty) together with its `per_source` best full-text matches of `query`."""
        ...
