"""The research store port: what the service needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class NewSource:
    url: str
    title: str
    credibility: float


@dataclass(frozen=True, kw_only=True)
class Source(NewSource):
    id: UUID
    created_at: datetime


class ResearchStore(Protocol):
    async def create(self, client_id: str, source: NewSource) -> Source | None:
        """The stored source, or None when the tenant already has a source with that url."""
        ...

    async def list(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[Source], str]: ...
