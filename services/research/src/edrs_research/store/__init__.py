"""The research store port: what the service needs from its datastore, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol
from uuid import UUID

from edrs_research.credibility import Reason, Score
from edrs_research.web.fetch import Page

SourceState = Literal["pending", "fetched", "failed"]


@dataclass(frozen=True, kw_only=True)
class NewSource:
    url: str
    domain: str
    given_title: str = ""
    """The title the tenant gave; empty: the page's."""
    pinned: bool = False
    blocked: bool = False
    credibility: float
    reasons: list[Reason] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Source(NewSource):
    id: UUID
    state: SourceState
    fetch_error: str
    final_url: str
    page_title: str
    """The title read from the page (empty before a fetch)."""
    author: str
    published_at: datetime | None
    language: str
    fetched_at: datetime | None
    content_hash: str
    truncated: bool
    document_id: str
    created_at: datetime
    updated_at: datetime

    @property
    def title(self) -> str:
        return self.given_title or self.page_title or self.url

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")


@dataclass(frozen=True)
class SourceFilter:
    domain: str = ""
    pinned_only: bool = False
    blocked_only: bool = False


class ResearchStore(Protocol):
    async def create(self, client_id: str, source: NewSource) -> Source | None:
        """The stored source (PENDING), or None when the tenant already has that url."""
        ...

    async def get(self, client_id: str, source_id: UUID) -> Source | None: ...

    async def get_by_url(self, client_id: str, url: str) -> Source | None: ...

    async def list(
        self, client_id: str, page_token: str, page_size: int, where: SourceFilter
    ) -> tuple[list[Source], str]: ...

    async def record_fetch(
        self, client_id: str, source_id: UUID, page: Page, score: Score, document_id: str
    ) -> Source | None:
        """The source FETCHED with `page`'s metadata; None when it is gone."""
        ...

    async def record_failure(
        self, client_id: str, source_id: UUID, error: str, score: Score
    ) -> Source | None:
        """The source FAILED with `error` (what it read before is kept); None when gone."""
        ...

    async def upsert_fetched(
        self, client_id: str, page: Page, score: Score, document_id: str
    ) -> Source:
        """The source of `page.url`, created (announced) or updated with the fetched page."""
        ...

    async def update(
        self,
        client_id: str,
        source_id: UUID,
        *,
        given_title: str | None,
        pinned: bool | None,
        blocked: bool | None,
        score: Score,
    ) -> Source | None: ...

    async def rescore(self, client_id: str, source_id: UUID, score: Score) -> Source | None: ...

    async def delete(self, client_id: str, source_id: UUID) -> Source | None:
        """The deleted source, or None when there was none such."""
        ...

    async def domain_flags(self, client_id: str, domain: str) -> tuple[bool, bool]:
        """(pinned, blocked): whether the tenant pinned / blocked any source of `domain`."""
        ...
