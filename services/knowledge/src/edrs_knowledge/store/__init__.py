"""The knowledge store port: what the service needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class NewDocument:
    title: str
    text: str
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Document(NewDocument):
    id: UUID
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class SearchHit:
    document_id: UUID
    title: str
    snippet: str
    score: float


class KnowledgeStore(Protocol):
    async def create(self, client_id: str, document: NewDocument) -> Document: ...

    async def get(self, client_id: str, document_id: UUID) -> Document | None: ...

    async def search(self, client_id: str, query: str, limit: int) -> list[SearchHit]:
        """The tenant's `limit` documents that best match `query`, best first."""
        ...
