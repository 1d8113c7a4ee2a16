"""Research jobs on the web path, over a mini-web served on loopback: the research service (its
Temporal worker, fetcher and SearxNG provider pointed at the mini-web), the real knowledge service
(the research collection) and the real reasoning service (embeddings, verify)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from edrs_core import testing
from edrs_core.testing_http import SSRF_URLS
from edrs_proto.knowledge.v1 import knowledge_pb2 as kpb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.research.v1 import research_pb2 as pb
from edrs_proto.research.v1 import research_pb2_grpc
from edrs_research import urls
from edrs_research.app import definition
from edrs_research.miniweb import MiniWeb, Page, Site

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT = testing.tenant_metadata(f"web-jobs-{RUN}")
DATABASE = "test_research_web_jobs"
ENDED = {pb.JOB_STATE_COMPLETED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}

SCIENCE, NEWS, AGENCY = "science.miniweb.test", "news.miniweb.test", "agency.miniweb.test"
MIRROR, RUMOURS, FARM = "mirror.miniweb.test", "rumours.miniweb.test", "farm.miniweb.test"

QUESTION = "When did the Orion probe launch, where does it travel and what propels it?"
FACTS = {
    SCIENCE: "The Orion probe launched in March 2031 from the Kourou spaceport.",
    NEWS: "The Orion probe travels to Europa, the icy moon of Jupiter.",
    AGENCY: "The Orion probe is propelled by a xenon ion engine.",
}
# Contradicts SCIENCE's fact: on a low-tier domain, with no author and no date.
RUMOUR = "The Orion probe launched in March 2029 from the Kourou spaceport."
# The launch page (and its copy) were published long ago; the others recently.
LAUNCH_DATE = "2026-04-02"
# On a blocked-tier domain: never fetched.
FARM_CLAIM = "The Orion probe launched in 1999 from a secret base."


def article(title: str, fact: str, *, author: str = "", date: str = "", links: str = "") -> Page:
    meta = ""
    if author:
        meta += f'<meta name="author" content="{author}">\n'
    if date:
        meta += f'<meta property="article:published_time" content="{date}">\n'
    return Page(
        f"""<!doctype html>
<html lang="en"><head><title>{title}</title>
{meta}</head><body><nav><a href="/">Home</a></nav><article><h1>{title}</h1>
<p>Mission notes about the Orion probe, a spacecraft built by an international team of
engineers and scientists over many years of careful work. {fact} The mission team published
its findings in several reports that are still read by students today.</p>
<p>Further reading about spacecraft and planetary science can be found in the library.{links}</p>
</article><footer>Copyright Miniweb</footer></body></html>"""
    )


NEWS_PAGES: dict[str, Any] = {}


@pytest.fixture(scope="module")
async def miniweb() -> AsyncIterator[MiniWeb]:
    sites = [
        Site(
            SCIENCE,
            pages={
                "/orion-launch": article(
                    "Orion launch", FACTS[SCIENCE], author="Ada Lane", date=LAUNCH_DATE
                )
            },
        ),
        Site(NEWS, pages=NEWS_PAGES),
        Site(
            AGENCY,
            pages={
                "/orion-engine": article(
                    "Orion engine", FACTS[AGENCY], author="Chi Okafor", date="2026-11-25"
                )
            },
        ),
        # A copy of the science page: a near-duplicate, dropped.
        Site(
            MIRROR,
            pages={
                "/copy": article(
                    "Orion launch", FACTS[SCIENCE], author="Ada Lane", date=LAUNCH_DATE
                )
            },
        ),
        Site(RUMOURS, pages={"/orion": article("Orion rumours", RUMOUR)}),
        Site(FARM, pages={"/orion": article("Orion secrets", FARM_CLAIM)}),
    ]
    async with MiniWeb(sites) as web:
        # The news page links to the launch page (and its copy): cited_by. Links carry the port,
        # known once the server runs.
        links = "".join(
            f' <a href="{web.url(host, path)}">launch</a>'
            for host, path in ((SCIENCE, "/orion-launch"), (MIRROR, "/copy"))
        )
        NEWS_PAGES["/orion-destination"] = article(
            "Orion destination", FACTS[NEWS], author="Ben Ito", date="2026-11-20", links=links
        )
        yield web


@pytest.fixture(scope="module")
async def research(
    postgres_engine,
    redis_engine,
    nats_engine,
    temporal_engine,
    knowledge,
    reasoning,
    miniweb,
    tmp_path_factory,
) -> AsyncIterator[testing.RunningService]:
    tiers = tmp_path_factory.mktemp("tiers") / "tiers.json"
    tiers.write_text(
        json.dumps(
            {
                "reference": {"weight": 0.2, "domains": [SCIENCE, AGENCY]},
                "low": {"weight": -0.3, "domains": [RUMOURS]},
                "blocked": {"domains": [FARM]},
            }
        )
    )
    settings = {
        **testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=DATABASE, redis_db=14
        ),
        "temporal_address": temporal_engine.url(),
        "temporal_task_queue": f"test-research-web-{RUN}",
        "job_heartbeat_seconds": 10.0,
        "rpc_timeout_seconds": 300.0,
        "planner": "fallback",
        "peers": {"knowledge": knowledge.grpc_address, "reasoning": reasoning.grpc_address},
        "search_provider": "searxng",
        "search_url": miniweb.search_url,
        # The planted results (the SSRF table) come first: read past them.
        "web_results_per_query": 50,
        "outbound_allow": ("*.miniweb.test",),
        "outbound_resolve": tuple(miniweb.resolve_entries()),
        "fetch_host_interval_seconds": 0.0,
        "domain_tiers_file": str(tiers),
    }
    async with testing.running_service(definition, start_timeout=120, **settings) as svc:
        yield svc


async def ended(stub, job_id: str, within: float = 900.0) -> pb.Job:
    latest: pb.Job | None = None

    async def done() -> bool:
        nonlocal latest
        latest = await stub.GetJob(pb.GetJobRequest(id=job_id), metadata=TENANT)
        return latest.state in ENDED

    await testing.wait_until(done, within, f"job {job_id} to end", interval=0.5)
    assert latest is not None
    return latest


async def test_a_web_answer_spread_over_three_pages_is_cited_and_the_rumour_is_not_stated(
    research, knowledge, miniweb, postgres_engine, settings_for
) -> None:
    # The low-credibility pages and every SSRF table URL come first in the search results.
    miniweb.plant(miniweb.url(FARM, "/orion"), "Orion secrets", FARM_CLAIM, when="orion")
    miniweb.plant(miniweb.url(RUMOURS, "/orion"), "Orion rumours", RUMOUR, when="orion")
    for url, _ in SSRF_URLS:
        miniweb.plant(url, "Orion", "Orion probe", when="orion")
    stub = research_pb2_grpc.ResearchServiceStub(research.channel)
    job = await stub.StartJob(
        pb.StartJobRequest(
            question=QUESTION, scope=pb.ResearchScope(web=True, depth=2, max_sources=20)
        ),
        metadata=TENANT,
    )
    done = await ended(stub, job.id)
    assert done.state == pb.JOB_STATE_COMPLETED, done.error
    report = await stub.GetReport(pb.GetReportRequest(job_id=job.id), metadata=TENANT)
    claims = [c for s in report.sections for c in s.claims]
    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        await_pages = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT url, outcome, detail FROM research_job_pages WHERE job_id = $1",
                uuid.UUID(job.id),
            )
        ]
    finally:
        await conn.close()
    kstub = knowledge_pb2_grpc.KnowledgeServiceStub(knowledge.channel)
    by_number = {c.number: c for c in report.citations}

    # Every citation resolves to the knowledge service's stored passage of a fetched page.
    for citation in report.citations:
        stored = await kstub.ReadDocumentText(
            kpb.ReadDocumentTextRequest(
                document_id=citation.document_id,
                version=citation.document_version,
                start=citation.start,
                end=citation.end,
            ),
            metadata=TENANT,
        )
        assert stored.text == citation.passage
        assert citation.source_id and citation.url and citation.fetch_time.seconds > 0
    for claim in claims:
        assert all(claim.text in by_number[n].passage for n in claim.citations)
    supported = {c.text: c for c in claims if c.supported}
    for host, fact in FACTS.items():
        assert fact in supported, (fact, [(c.text, c.supported, c.note) for c in claims])
        [n] = supported[fact].citations
        assert host in by_number[n].url or MIRROR in by_number[n].url

    # The rumour is read, scored low, ranked below the three, and never stated as fact.
    ranked = [s.url for s in report.sources]

    def source_of(host: str) -> pb.ReportSource:
        found = [s for s in report.sources if host in s.url]
        assert found, (host, ranked, await_pages)
        return found[0]

    # The launch page and its copy are near-duplicates: whichever was read first is the source.
    launch = SCIENCE if any(SCIENCE in u for u in ranked) else MIRROR
    rumour = source_of(RUMOURS)
    for host in (launch, NEWS, AGENCY):
        source = source_of(host)
        assert source.credibility > rumour.credibility
        assert ranked.index(source.url) < ranked.index(rumour.url)
    assert {r.signal for r in rumour.reasons} >= {"domain_tier", "author", "date"}
    assert RUMOUR not in supported
    for claim in claims:
        if claim.text == RUMOUR:
            assert not claim.supported and claim.note
            assert f"(unverified) {RUMOUR}" in "".join(s.text for s in report.sections)
    assert RUMOUR not in report.summary
    # The blocked-tier page was refused, never fetched, never cited.
    assert not miniweb.requests_to(FARM, "/orion")
    assert all(FARM not in s.url for s in report.sources)
    assert not any(FARM_CLAIM in c.passage for c in report.citations)
    # cited_by: the news page links to the science page.
    science = source_of(launch)
    assert "cited_by" in {r.signal for r in science.reasons}

    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        pages = await conn.fetch(
            "SELECT url, outcome, detail, fetches FROM research_job_pages WHERE job_id = $1",
            uuid.UUID(job.id),
        )
    finally:
        await conn.close()
    outcomes = {p["url"]: (p["outcome"], p["detail"]) for p in pages}
    # No page fetched twice; every SSRF URL refused; the mirror dropped as a duplicate.
    assert {p["fetches"] for p in pages} == {1}
    policy = settings_for(miniweb).outbound_policy()
    ssrf_keys = set()
    for url, _ in SSRF_URLS:
        if not url.startswith(("http://", "https://")):
            assert url not in outcomes  # not a web result: the search provider drops it
            continue
        try:
            key = urls.normalise(url, policy).url
        except urls.UrlRefused:
            key = url
        ssrf_keys.add(key)
        assert outcomes[key][0] == "refused", (url, outcomes.get(key))
    assert outcomes[miniweb.url(FARM, "/orion")][0] == "refused"
    assert "blocked" in outcomes[miniweb.url(FARM, "/orion")][1]
    assert outcomes[miniweb.url(MIRROR, "/copy")][0] == "duplicate" or (
        outcomes[miniweb.url(SCIENCE, "/orion-launch")][0] == "duplicate"
    )
    for host, path in (
        (launch, "/orion-launch" if launch == SCIENCE else "/copy"),
        (NEWS, "/orion-destination"),
    ):
        assert len(miniweb.requests_to(host, path)) == 1
    assert done.progress.sources_refused == len(ssrf_keys) + 1
    assert done.progress.sources_duplicate == 1
    assert done.progress.sources_fetched >= 4


async def test_a_recency_window_refuses_older_pages_and_keeps_undated_ones(
    research, miniweb, postgres_engine
) -> None:
    stub = research_pb2_grpc.ResearchServiceStub(research.channel)
    job = await stub.StartJob(
        pb.StartJobRequest(
            question=QUESTION,
            scope=pb.ResearchScope(web=True, recency_days=60, max_sources=20),
        ),
        metadata=TENANT,
    )
    done = await ended(stub, job.id)
    assert done.state == pb.JOB_STATE_COMPLETED, done.error
    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        rows = await conn.fetch(
            "SELECT url, outcome, detail FROM research_job_pages WHERE job_id = $1",
            uuid.UUID(job.id),
        )
    finally:
        await conn.close()
    outcomes = {r["url"]: (r["outcome"], r["detail"]) for r in rows}
    launch = outcomes[miniweb.url(SCIENCE, "/orion-launch")]
    assert launch[0] == "refused" and launch[1].startswith(f"recency: published {LAUNCH_DATE}")
    assert outcomes[miniweb.url(NEWS, "/orion-destination")][0] == "fetched"
    # Undated: kept (its missing date counts against its credibility instead).
    assert outcomes[miniweb.url(RUMOURS, "/orion")][0] == "fetched"
    report = await stub.GetReport(pb.GetReportRequest(job_id=job.id), metadata=TENANT)
    assert all(SCIENCE not in s.url for s in report.sources)
