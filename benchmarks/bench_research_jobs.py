"""Research jobs benchmark: time from question to report on a fixed mini-web question with the
local model, split into stages, and the citation precision on that fixture.

Run `python benchmarks/bench_research_jobs.py [--jobs 3] [--planner model|fallback]`. It starts
its own PostgreSQL, NATS and Temporal, the reasoning service (the local models), the knowledge
service and the research service in this process, and a mini-web on loopback whose answer to
the question is spread over three pages (plus a contradicting low-credibility page and a copy of
one page). For each job it prints, from the job's own updates log (the service's clock):

- planning, searching (web search and knowledge), fetching (fetch, extract, ingest, index),
  scoring and drafting (synthesis and verification) times, and the total;
- citation precision: the share of (claim, citation) pairs stated as fact whose cited passage
  reasoning's verify strategy finds supporting the claim (the goal is >= 95%), and the share of
  cited passages that contain the claim's text.

It prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from edrs_core import testing
from edrs_core.engines import EmbeddedNats, EmbeddedPostgres, EmbeddedTemporal
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_proto.research.v1 import research_pb2 as pb
from edrs_proto.research.v1 import research_pb2_grpc
from edrs_reasoning.app import definition as reasoning_definition
from edrs_research.app import definition as research_definition
from edrs_research.miniweb import MiniWeb, Page, Site

sys.path.insert(0, str(Path(__file__).parent))
from _harness import POSTGRES_SETTINGS

TENANT = testing.tenant_metadata("bench-research-jobs")
QUESTION = "When did the Orion probe launch, where does it travel and what propels it?"
PAGES = {
    "science.miniweb.test": ("Orion launch", "The Orion probe launched in March 2031 from Kourou."),
    "news.miniweb.test": ("Orion destination", "The Orion probe travels to Europa, a moon."),
    "agency.miniweb.test": ("Orion engine", "The Orion probe is propelled by a xenon ion engine."),
    "rumours.miniweb.test": (
        "Orion rumours",
        "The Orion probe launched in March 2029 from Kourou.",
    ),
    "mirror.miniweb.test": ("Orion launch", "The Orion probe launched in March 2031 from Kourou."),
}
STAGES = ("planning", "searching", "fetching", "scoring", "drafting")


def page(title: str, fact: str, dated: bool) -> Page:
    meta = (
        '<meta name="author" content="A. Writer">'
        '<meta property="article:published_time" content="2026-11-20">'
        if dated
        else ""
    )
    return Page(
        f"<!doctype html><html lang='en'><head><title>{title}</title>{meta}</head><body>"
        f"<article><h1>{title}</h1><p>Mission notes about the Orion probe, built by a team of "
        f"engineers over many years. {fact} The team published its findings in reports that "
        "students still read.</p><p>More about spacecraft in the library.</p></article>"
        "</body></html>"
    )


async def stage_times(db_url: str, job_id: str) -> dict[str, float]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT kind, detail, created_at FROM research_job_updates WHERE job_id = $1 "
            "ORDER BY seq",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    marks: list[tuple[str, Any]] = []
    for r in rows:
        if r["kind"] == "state" and r["detail"] in STAGES:
            marks.append((r["detail"], r["created_at"]))
        elif r["kind"] == "ended":
            marks.append(("ended", r["created_at"]))
    times: dict[str, float] = {}
    for (name, at), (_, after) in itertools.pairwise(marks):
        times[name] = times.get(name, 0.0) + (after - at).total_seconds()
    if marks:
        times["total"] = (marks[-1][1] - rows[0]["created_at"]).total_seconds()
    return times


async def precision(
    reasoning: reasoning_pb2_grpc.ReasoningServiceStub, report: pb.Report
) -> tuple[int, int, int]:
    """(pairs stated as fact, pairs whose passage supports the claim, pairs whose passage
    contains the claim's text)."""
    by_number = {c.number: c for c in report.citations}
    pairs = supported = contained = 0
    for section in report.sections:
        for claim in section.claims:
            if not claim.supported:
                continue
            for n in claim.citations:
                passage = by_number[n].passage
                pairs += 1
                contained += claim.text in passage
                call = reasoning.Reason(
                    reasoning_pb2.ReasonRequest(
                        messages=[reasoning_pb2.ChatMessage(role="user", content=report.question)],
                        context=[reasoning_pb2.ContextItem(id="p", text=passage)],
                        strategy=reasoning_pb2.STRATEGY_VERIFY,
                        draft=claim.text,
                    ),
                    metadata=TENANT,
                )
                async for message in call:
                    if message.HasField("result"):
                        supported += not message.result.unsupported_claims
    return pairs, supported, contained


async def main(jobs: int, planner: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-research-jobs-") as tmp:
        root = Path(tmp)
        sites = [
            Site(host, pages={"/orion": page(title, fact, host != "rumours.miniweb.test")})
            for host, (title, fact) in PAGES.items()
        ]
        with (
            EmbeddedPostgres(root / "pg", settings=POSTGRES_SETTINGS) as pg,
            EmbeddedNats(root / "nats") as nats_server,
            EmbeddedTemporal(root / "temporal") as temporal,
        ):
            common = {"bus_url": nats_server.url(), "log_level": "WARNING"}
            async with (
                MiniWeb(sites) as web,
                testing.running_service(
                    reasoning_definition,
                    start_timeout=600,
                    database_url=pg.url("bench_reasoning"),
                    **common,
                ) as reasoning,
            ):
                from edrs_knowledge.app import definition as knowledge_definition

                async with testing.running_service(
                    knowledge_definition,
                    start_timeout=300,
                    database_url=pg.url("bench_knowledge"),
                    peers={"reasoning": reasoning.grpc_address},
                    rpc_timeout_seconds=300.0,
                    vector_engine="pgvector",
                    vector_url="",
                    keyword_index_dir=str(root / "keywords"),
                    **common,
                ) as knowledge:
                    db_url = pg.url("bench_research")
                    async with testing.running_service(
                        research_definition,
                        start_timeout=300,
                        database_url=db_url,
                        temporal_address=temporal.url(),
                        peers={
                            "knowledge": knowledge.grpc_address,
                            "reasoning": reasoning.grpc_address,
                        },
                        planner=planner,
                        rpc_timeout_seconds=300.0,
                        fetch_host_interval_seconds=0.0,
                        **web.research_settings(),
                        **common,
                    ) as research:
                        stub = research_pb2_grpc.ResearchServiceStub(research.channel)
                        rstub = reasoning_pb2_grpc.ReasoningServiceStub(reasoning.channel)
                        print(f"{jobs} jobs of {QUESTION!r}, planner {planner}, mini-web")
                        totals = [0, 0, 0]
                        for i in range(jobs):
                            started = time.perf_counter()
                            job = await stub.StartJob(
                                pb.StartJobRequest(
                                    question=QUESTION,
                                    scope=pb.ResearchScope(web=True, depth=2),
                                ),
                                metadata=TENANT,
                            )
                            async for update in stub.WatchJob(
                                pb.WatchJobRequest(id=job.id), metadata=TENANT
                            ):
                                last = update
                            wall = time.perf_counter() - started
                            if last.job.state != pb.JOB_STATE_COMPLETED:
                                print(f"  job {i + 1}: ended {last.job.state}: {last.job.error}")
                                continue
                            times = await stage_times(db_url, job.id)
                            report = await stub.GetReport(
                                pb.GetReportRequest(job_id=job.id), metadata=TENANT
                            )
                            counts = await precision(rstub, report)
                            totals = [a + b for a, b in zip(totals, counts, strict=True)]
                            parts = ", ".join(
                                f"{name} {times.get(name, 0.0):.2f} s" for name in STAGES
                            )
                            print(
                                f"  job {i + 1}: {wall:.2f} s wall ({parts}); "
                                f"{len(report.citations)} citations, "
                                f"{last.job.progress.claims_supported}/{last.job.progress.claims}"
                                " claims supported"
                            )
                        pairs, supported, contained = totals
                        if pairs:
                            print(
                                f"  citation precision: {supported / pairs:.1%} of {pairs} "
                                f"(claim, citation) pairs verified as supported; "
                                f"{contained / pairs:.1%} contain the claim's text"
                            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--planner", choices=("model", "fallback"), default="model")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.planner))
