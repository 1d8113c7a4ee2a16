"""A research job survives its worker being killed (SIGKILL, no shutdown of any kind) in the middle
of a page fetch: a new research process takes the job over from Temporal and completes it, and no
page the first process had fetched is fetched again. Only the page whose fetch the kill cut off is
asked for a second time: its answer never arrived, so it was never recorded.

The research service runs here as its own process (`python -m edrs_research`), as in production;
the knowledge and reasoning services, the engines and the mini-web are those of test_job_web."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
import pytest
from edrs_core import testing
from edrs_core._test_identity import test_issuer
from edrs_core.engines.ports import free_port
from edrs_proto.research.v1 import research_pb2 as pb
from edrs_proto.research.v1 import research_pb2_grpc
from edrs_research.miniweb import MiniWeb, Page, Site, SlowPage

from .test_job_web import article, miniweb  # noqa: F401 (the mini-web fixture)

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT = testing.tenant_metadata(f"kill-jobs-{RUN}")
DATABASE = "test_research_kill_jobs"
ENDED = {pb.JOB_STATE_COMPLETED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}

FIRST, SECOND, HELD = "first.miniweb.test", "second.miniweb.test", "held.miniweb.test"
QUESTION = "Where was the Zephyr rover built, what powers it and who drives it?"
FACTS = {
    FIRST: "The Zephyr rover was built in Toulouse by a small team.",
    SECOND: "The Zephyr rover is powered by a radioisotope generator.",
    HELD: "The Zephyr rover is driven by an operator in Pasadena.",
}
PAGES = ((FIRST, "/zephyr-factory"), (SECOND, "/zephyr-power"), (HELD, "/zephyr-driver"))


def written(path: str, fact: str) -> Page:
    """An article with an author and a date (credible enough to be stated)."""
    return article(path.strip("/"), fact, author="Lee Marsh", date="2026-11-30")


def env_of(settings: dict[str, Any]) -> dict[str, str]:
    """`EDRS_RESEARCH_*` variables for `settings` (complex values as JSON, as the settings read them)."""
    env = {**os.environ, "EDRS_ENVIRONMENT": "test"}
    for key, value in settings.items():
        text = value if isinstance(value, str) else json.dumps(value)
        env[f"EDRS_RESEARCH_{key.upper()}"] = text
    return env


@asynccontextmanager
async def research_process(
    settings: dict[str, Any], port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The research service as a process, once its gRPC `port` listens; killed if still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edrs_research", env=env_of(settings)
    )
    try:

        async def listening() -> bool:
            assert process.returncode is None, f"the research service exited ({process.returncode})"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await testing.wait_until(listening, 180, "the research service to listen")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 30)


async def test_a_job_whose_worker_is_killed_mid_fetch_resumes_without_fetching_a_page_twice(
    postgres_engine,
    redis_engine,
    nats_engine,
    temporal_engine,
    knowledge,
    reasoning,
    miniweb: MiniWeb,  # noqa: F811
) -> None:
    held_pages: dict[str, Any] = {
        # Answered only long after the kill: the first process dies while it waits for it.
        "/zephyr-driver": SlowPage(3600.0, written("/zephyr-driver", FACTS[HELD]))
    }
    for host, path in ((FIRST, "/zephyr-factory"), (SECOND, "/zephyr-power")):
        miniweb.add(Site(host, pages={path: written(path, FACTS[host])}))
    miniweb.add(Site(HELD, pages=held_pages))
    # The search answers in this order, and the job fetches in order, one page at a time.
    for host, path in PAGES:
        miniweb.plant(miniweb.url(host, path), "Zephyr rover", FACTS[host], when="zephyr")

    grpc_port = free_port()
    settings: dict[str, Any] = {
        **test_issuer().settings("research"),
        **testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=DATABASE, redis_db=11
        ),
        "grpc_port": grpc_port,
        "http_port": free_port(),
        "metrics_port": free_port(),
        "temporal_address": temporal_engine.url(),
        "temporal_task_queue": f"test-research-kill-{RUN}",
        # A dead worker's activity is retried once this much time passes without a heartbeat.
        "job_heartbeat_seconds": 5.0,
        "rpc_timeout_seconds": 300.0,
        "planner": "fallback",
        "peers": {"knowledge": knowledge.grpc_address, "reasoning": reasoning.grpc_address},
        "search_provider": "searxng",
        "search_url": miniweb.search_url,
        "outbound_allow": ["*.miniweb.test"],
        "outbound_resolve": list(miniweb.resolve_entries()),
        "fetch_host_interval_seconds": 0.0,
        # The held page must still be awaited when the kill comes, not given up on.
        "fetch_timeout_seconds": 3600.0,
        "outbound_timeout_seconds": 3600.0,
    }

    async with research_process(settings, grpc_port) as first:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = research_pb2_grpc.ResearchServiceStub(channel)
            job = await stub.StartJob(
                pb.StartJobRequest(
                    question=QUESTION, scope=pb.ResearchScope(web=True, depth=1, max_sources=5)
                ),
                metadata=TENANT,
            )

            async def held_page_asked() -> bool:
                return bool(miniweb.requests_to(HELD, "/zephyr-driver"))

            await testing.wait_until(held_page_asked, 600, "the job to ask for the held page")
        first.send_signal(signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 30)
    assert first.returncode == -signal.SIGKILL
    # The two pages before it were fetched once each, and recorded.
    assert len(miniweb.requests_to(FIRST, "/zephyr-factory")) == 1
    assert len(miniweb.requests_to(SECOND, "/zephyr-power")) == 1

    # From now on the held page answers at once.
    held_pages["/zephyr-driver"] = written("/zephyr-driver", FACTS[HELD])
    async with (
        research_process(settings, grpc_port),
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
    ):
        stub = research_pb2_grpc.ResearchServiceStub(channel)
        latest: pb.Job | None = None

        async def ended() -> bool:
            nonlocal latest
            latest = await stub.GetJob(pb.GetJobRequest(id=job.id), metadata=TENANT)
            return latest.state in ENDED

        await testing.wait_until(ended, 900, f"job {job.id} to end", interval=0.5)
        assert latest is not None
        assert latest.state == pb.JOB_STATE_COMPLETED, latest.error
        report = await stub.GetReport(pb.GetReportRequest(job_id=job.id), metadata=TENANT)

    # Nothing fetched before the kill was fetched again; the cut-off page once more.
    assert len(miniweb.requests_to(FIRST, "/zephyr-factory")) == 1
    assert len(miniweb.requests_to(SECOND, "/zephyr-power")) == 1
    assert len(miniweb.requests_to(HELD, "/zephyr-driver")) == 2
    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        pages = await conn.fetch(
            "SELECT url, outcome, fetches FROM research_job_pages WHERE job_id = $1",
            uuid.UUID(job.id),
        )
    finally:
        await conn.close()
    by_url = {p["url"]: (p["outcome"], p["fetches"]) for p in pages}
    for host, path in PAGES:
        assert by_url[miniweb.url(host, path)] == ("fetched", 1), by_url
    # And the report stands on pages the job read.
    read = {miniweb.url(host, path) for host, path in PAGES}
    supported = {c.text for x in report.sections for c in x.claims if c.supported}
    assert set(FACTS.values()) <= supported, supported
    assert {c.url for c in report.citations} <= read, ({c.url for c in report.citations}, read)
