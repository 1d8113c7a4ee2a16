"""A tenant's research sources: registering one fetches, reads, ingests and scores it at once.

    sources = Sources(store, fetcher, sink, tiers)
    source = await sources.register(client_id, url, title="", pinned=False, blocked=False)

The store keeps what the fetch read; the knowledge service keeps the text (the tenant's
"research" collection, `knowledge_sink`); the score is `credibility.score` over the source's
signals. A page that cannot be fetched still registers its source, FAILED with the reason.
A blocked source (or any source of a domain the tenant blocked) is never fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from edrs_core import ServiceError

from edrs_research import credibility
from edrs_research.credibility import DomainTiers, Score, Signals
from edrs_research.knowledge_sink import KnowledgeSink
from edrs_research.store import NewSource, ResearchStore, Source
from edrs_research.urls import SourceUrl
from edrs_research.web.fetch import Fetcher, FetchRefused, Page

log = logging.getLogger("edrs.research.sources")


def _now() -> datetime:
    return datetime.now(UTC)


class Sources:
    def __init__(
        self,
        store: ResearchStore,
        fetcher: Fetcher,
        sink: KnowledgeSink,
        tiers: DomainTiers,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.sink = sink
        self.tiers = tiers
        self.now = now

    def score(
        self,
        *,
        domain: str,
        https: bool,
        author: str = "",
        published: datetime | None = None,
        pinned: bool = False,
        blocked: bool = False,
        agreement: int = 0,
        disagreement: int = 0,
        cited_by: int = 0,
    ) -> Score:
        return credibility.score(
            Signals(
                domain=domain,
                https=https,
                author=author,
                published=published,
                now=self.now(),
                tier=self.tiers.tier_of(domain),
                agreement=agreement,
                disagreement=disagreement,
                cited_by=cited_by,
                pinned=pinned,
                blocked=blocked,
            )
        )

    def score_source(self, source: Source, *, pinned: bool, blocked: bool) -> Score:
        return self.score(
            domain=source.domain,
            https=source.https,
            author=source.author,
            published=source.published_at,
            pinned=pinned,
            blocked=blocked,
        )

    def score_page(self, page: Page, *, pinned: bool = False, blocked: bool = False) -> Score:
        return self.score(
            domain=page.domain,
            https=page.https,
            author=page.author,
            published=page.published,
            pinned=pinned,
            blocked=blocked,
        )

    async def register(
        self, client_id: str, url: SourceUrl, *, title: str, pinned: bool, blocked: bool
    ) -> Source | None:
        """The new source, fetched (or FAILED); None when the tenant has that URL already."""
        domain = url.host
        score = self.score(
            domain=domain, https=url.scheme == "https", pinned=pinned, blocked=blocked
        )
        created = await self.store.create(
            client_id,
            NewSource(
                url=url.url,
                domain=domain,
                given_title=title,
                pinned=pinned,
                blocked=blocked,
                credibility=score.value,
                reasons=score.reasons,
            ),
        )
        if created is None:
            return None
        return await self.fetch(client_id, created)

    async def fetch(self, client_id: str, source: Source) -> Source:
        """Fetches `source` now and records what came of it (FETCHED or FAILED)."""
        _, domain_blocked = await self.store.domain_flags(client_id, source.domain)
        if source.blocked or domain_blocked:
            why = "the source" if source.blocked else f"domain {source.domain}"
            return await self._failed(
                client_id, source, f"not fetched: {why} is blocked by the tenant"
            )
        try:
            page = await self.fetcher.fetch(source.url)
        except FetchRefused as exc:
            return await self._failed(client_id, source, f"{exc.kind}: {exc.reason}")
        try:
            document_id = await self.sink.ingest_page(page, client_id=client_id)
        except ServiceError as exc:
            log.warning("a fetched page could not be stored in knowledge: %s", exc)
            return await self._failed(
                client_id, source, f"store: the knowledge service could not store the text ({exc})"
            )
        score = self.score_page(page, pinned=source.pinned, blocked=source.blocked)
        recorded = await self.store.record_fetch(client_id, source.id, page, score, document_id)
        return recorded or source

    async def _failed(self, client_id: str, source: Source, error: str) -> Source:
        score = self.score_source(source, pinned=source.pinned, blocked=source.blocked)
        recorded = await self.store.record_failure(client_id, source.id, error, score)
        return recorded or source

    async def update(
        self,
        client_id: str,
        source_id: UUID,
        *,
        title: str | None,
        pinned: bool | None,
        blocked: bool | None,
    ) -> Source | None:
        """The source with the given fields changed and scored again; None when not found."""
        current = await self.store.get(client_id, source_id)
        if current is None:
            return None
        now_pinned = current.pinned if pinned is None else pinned
        now_blocked = current.blocked if blocked is None else blocked
        if now_pinned and now_blocked:
            raise ValueError("a source cannot be both pinned and blocked")
        score = self.score_source(current, pinned=now_pinned, blocked=now_blocked)
        return await self.store.update(
            client_id,
            source_id,
            given_title=title,
            pinned=pinned,
            blocked=blocked,
            score=score,
        )

    async def delete(self, client_id: str, source_id: UUID) -> Source | None:
        """Deletes the source and its document in the research collection."""
        deleted = await self.store.delete(client_id, source_id)
        if deleted is not None and deleted.document_id:
            await self.sink.delete_document(deleted.document_id, client_id=client_id)
        return deleted
