"""The web path of a research job: search the web, fetch the pages found, drop near-duplicates,
register each page as a tenant source (ingested into the research collection, scored), then
search the job's pages in the research collection for the passages the report will cite.

Idempotent across retries and resumes (docs/research.md, "Durability"):
  * each web search is recorded as step "web:<query>" (its hits) before the next one;
  * each page is recorded in `research_job_pages` keyed (job, url) once it has been fetched,
    refused or found a duplicate, before the next one: a page recorded is never fetched again by
    the job (`fetches` counts the times it was, for tests and operators);
  * the near-duplicate memory is rebuilt from the recorded pages' stored text on a resume.
Refused pages (the outbound policy's SSRF rules, robots.txt, the blocked tier, the tenant's blocks,
the job's denied domains, published before the scope's recency window, HTTP errors...) are
recorded with their reason and skipped: the job goes on without them. Undated pages are kept
(their credibility counts the missing date)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from edrs_core import ServiceError
from edrs_core.context import request_context
from edrs_core.outbound import HostRules, OutboundPolicy
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc

from edrs_research import urls
from edrs_research.jobs import planning
from edrs_research.jobs.store import JobRow, JobStore
from edrs_research.jobs.synthesis import Passage
from edrs_research.knowledge_sink import COLLECTION
from edrs_research.sources import Sources
from edrs_research.web.dedupe import Deduper
from edrs_research.web.fetch import FetchRefused
from edrs_research.web.search import SearchFailed, SearchProvider

log = logging.getLogger("edrs.research.jobs.web")

FETCHED, REFUSED, DUPLICATE = "fetched", "refused", "duplicate"
INDEX_POLL_SECONDS = 0.5
INDEX_WAIT_SECONDS = 600.0
# Knowledge's metadata filter takes a list of values: the job's pages, in slices of this many.
URLS_PER_FILTER = 100


@dataclass(frozen=True)
class Candidate:
    url: str
    title: str
    rank: int


class WebResearch:
    def __init__(
        self,
        store: JobStore,
        sources: Sources,
        search: SearchProvider,
        knowledge: knowledge_pb2_grpc.KnowledgeServiceAsyncStub,
        policy: OutboundPolicy,
        *,
        results_per_query: int,
        passages_per_query: int,
    ) -> None:
        self.store = store
        self.sources = sources
        self.search_provider = search
        self.knowledge = knowledge
        self.policy = policy
        self.results_per_query = results_per_query
        self.passages_per_query = passages_per_query

    async def run(self, job: JobRow, heartbeat: Any) -> None:
        client_id = job.client_id
        queries = planning.all_queries(job.plan)
        candidates = await self._search(job, queries)
        if not await self.store.update(client_id, job.id, "state", "fetching", state="fetching"):
            return
        fetched = await self._fetch(job, candidates, heartbeat)
        if not fetched:
            return
        await self._wait_indexed(client_id, [d for _, d in fetched.values()], heartbeat)
        await self._passages(job, queries, fetched)

    # -- search ---------------------------------------------------------------------------------

    async def _search(self, job: JobRow, queries: list[str]) -> list[Candidate]:
        done = await self.store.steps(job.id, "web:")
        for query in queries:
            key = f"web:{query}"
            if key in done:
                continue
            try:
                hits = await self.search_provider.search(query, limit=self.results_per_query)
                result = [{"url": h.url, "title": h.title, "rank": h.rank} for h in hits]
                detail = f"searched the web for {query!r}: {len(hits)} results"
            except SearchFailed as exc:
                # One failed query does not fail the job: the others may still find pages.
                result, detail = [], f"web search for {query!r} failed: {exc}"
            done[key] = await self.store.record_step(job.id, key, result)
            if not await self.store.update(job.client_id, job.id, "query", detail):
                return []
        # Best ranks first across the queries, each URL once, in query order on a tie.
        ranked: list[tuple[int, int, dict[str, Any]]] = []
        for qi, query in enumerate(queries):
            for hit in done[f"web:{query}"].result:
                ranked.append((int(hit["rank"]), qi, hit))
        seen: set[str] = set()
        out: list[Candidate] = []
        for _, _, hit in sorted(ranked, key=lambda r: (r[0], r[1])):
            if hit["url"] not in seen:
                seen.add(hit["url"])
                out.append(Candidate(hit["url"], hit["title"], int(hit["rank"])))
        return out

    # -- fetch ----------------------------------------------------------------------------------

    async def _fetch(
        self, job: JobRow, candidates: list[Candidate], heartbeat: Any
    ) -> dict[str, tuple[str, str]]:
        """{url: (source id, document id)} of the job's fetched pages (this run's and earlier
        runs')."""
        client_id = job.client_id
        scope = job.scope
        max_sources = int(scope.get("maxSources") or 10)
        rules = HostRules.parse(
            allow=scope.get("allowedDomains", []), deny=scope.get("deniedDomains", [])
        )
        records = await self.store.pages(job.id)
        recorded = {r.url: r.outcome for r in records}
        fetched = {
            r.url: (str(r.source_id), r.document_id) for r in records if r.outcome == FETCHED
        }
        deduper = Deduper()
        for r in records:
            if r.outcome == FETCHED:
                deduper.seen(await self._stored_text(client_id, r.document_id), key=r.url)
        counts = {
            "refused": sum(r.outcome == REFUSED for r in records),
            "duplicate": sum(r.outcome == DUPLICATE for r in records),
        }
        found = len(candidates)
        for candidate in candidates:
            heartbeat()
            if len(fetched) >= max_sources:
                break
            try:
                url = urls.normalise(candidate.url, self.policy).url
            except urls.UrlRefused as exc:
                url = candidate.url
                if url not in recorded:
                    await self._refused(job, url, f"policy: url {exc}", counts)
                    recorded[url] = REFUSED
                continue
            if url in recorded:
                continue
            outcome = await self._fetch_one(job, url, rules, deduper, counts)
            recorded[url] = FETCHED if outcome is not None else REFUSED
            if outcome is not None:
                fetched[url] = outcome
            await self.store.update(
                client_id,
                job.id,
                "progress",
                f"{len(fetched)} pages fetched",
                progress={
                    "sources_found": found,
                    "sources_fetched": len(fetched),
                    "sources_refused": counts["refused"],
                    "sources_duplicate": counts["duplicate"],
                },
            )
        return fetched

    async def _fetch_one(
        self,
        job: JobRow,
        url: str,
        rules: HostRules,
        deduper: Deduper,
        counts: dict[str, int],
    ) -> tuple[str, str] | None:
        client_id = job.client_id
        domain = url.split("/")[2].split(":")[0]
        pinned, blocked = await self.sources.store.domain_flags(client_id, domain)
        existing = await self.sources.store.get_by_url(client_id, url)
        if blocked or (existing is not None and existing.blocked):
            await self._refused(job, url, f"blocked: {domain} is blocked by the tenant", counts)
            return None
        try:
            page = await self.sources.fetcher.fetch(url, host_rules=rules)
        except FetchRefused as exc:
            await self._refused(job, url, f"{exc.kind}: {exc.reason}", counts)
            return None
        recency = int(job.scope.get("recencyDays") or 0)
        if recency and page.published is not None:
            oldest = datetime.now(UTC) - timedelta(days=recency)
            if page.published < oldest:
                await self._refused(
                    job,
                    url,
                    f"recency: published {page.published.date()}, over {recency} days ago",
                    counts,
                )
                return None
        duplicate_of = deduper.seen(page.text, key=url)
        if duplicate_of is not None:
            await self.store.record_page(
                job.id, url, DUPLICATE, f"repeats {duplicate_of}", None, ""
            )
            counts["duplicate"] += 1
            await self.store.update(
                client_id, job.id, "duplicate", f"{url} repeats {duplicate_of}", url=url
            )
            return None
        try:
            document_id = await self.sources.sink.ingest_page(page, client_id=client_id)
        except ServiceError as exc:
            await self._refused(job, url, f"store: knowledge could not store it ({exc})", counts)
            return None
        is_pinned = pinned or (existing is not None and existing.pinned)
        score = self.sources.score_page(page, pinned=is_pinned)
        source = await self.sources.store.upsert_fetched(client_id, page, score, document_id)
        await self.store.record_page(
            job.id, url, FETCHED, f"{len(page.text)} characters", source.id, document_id, page.links
        )
        await self.store.update(
            client_id,
            job.id,
            "fetched",
            f"fetched {url} ({len(page.text):,} characters, credibility {score.value:.2f})",
            url=url,
        )
        return str(source.id), document_id

    async def _refused(self, job: JobRow, url: str, reason: str, counts: dict[str, int]) -> None:
        await self.store.record_page(job.id, url, REFUSED, reason, None, "")
        counts["refused"] += 1
        await self.store.update(
            job.client_id, job.id, "refused", f"refused {url}: {reason}", url=url
        )

    async def _stored_text(self, client_id: str, document_id: str) -> str:
        with request_context(client_id, None):
            text = await self.knowledge.ReadDocumentText(
                knowledge_pb2.ReadDocumentTextRequest(document_id=document_id)
            )
        return text.text

    async def _wait_indexed(self, client_id: str, document_ids: list[str], heartbeat: Any) -> None:
        """Until every fetched page's document is searchable (or failed: then it is not cited)."""
        pending = set(document_ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INDEX_WAIT_SECONDS
        while pending and loop.time() < deadline:
            heartbeat()
            for document_id in list(pending):
                with request_context(client_id, None):
                    doc = await self.knowledge.GetDocument(
                        knowledge_pb2.GetDocumentRequest(id=document_id)
                    )
                if doc.state in (
                    knowledge_pb2.DOCUMENT_STATE_INDEXED,
                    knowledge_pb2.DOCUMENT_STATE_FAILED,
                ):
                    pending.discard(document_id)
            if pending:
                await asyncio.sleep(INDEX_POLL_SECONDS)

    # -- passages -------------------------------------------------------------------------------

    async def _passages(
        self, job: JobRow, queries: list[str], fetched: dict[str, tuple[str, str]]
    ) -> None:
        """The job's pages' passages for each query, from the research collection (restricted to
        the job's pages by their url metadata), recorded as step "research:<query>"."""
        done = await self.store.steps(job.id, "research:")
        sources = {
            s_id: await self.sources.store.get(job.client_id, UUID(s_id))
            for s_id, _ in fetched.values()
        }
        by_url = {url: sources[s_id] for url, (s_id, _) in fetched.items()}
        page_urls = sorted(fetched)
        for query in queries:
            key = f"research:{query}"
            if key in done:
                continue
            passages: list[Passage] = []
            for i in range(0, len(page_urls), URLS_PER_FILTER):
                with request_context(job.client_id, None):
                    response = await self.knowledge.Search(
                        knowledge_pb2.SearchRequest(
                            query=query,
                            collections=[COLLECTION],
                            k=self.passages_per_query,
                            origin=knowledge_pb2.SEARCH_ORIGIN_RESEARCH,
                            filters=[
                                knowledge_pb2.MetadataFilter(
                                    key="url", values=page_urls[i : i + URLS_PER_FILTER]
                                )
                            ],
                        )
                    )
                for p in response.passages:
                    source = by_url.get(p.metadata.get("url", ""))
                    if source is None:
                        continue
                    passages.append(
                        Passage(
                            key=p.chunk_id,
                            document_id=p.document_id,
                            version=p.citation.document_version,
                            start=p.citation.start,
                            end=p.citation.end,
                            text=p.text,
                            content_hash=p.citation.content_hash,
                            title=source.title,
                            url=source.url,
                            score=p.score,
                            source_id=str(source.id),
                            credibility=source.credibility,
                            fetch_time=(source.fetched_at.isoformat() if source.fetched_at else ""),
                        )
                    )
            passages.sort(key=lambda p: -p.score)
            await self.store.record_step(
                job.id, key, [vars(p) for p in passages[: self.passages_per_query]]
            )
