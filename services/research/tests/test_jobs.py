"""Research jobs over real gRPC: the research service hosting its Temporal worker (embedded
Temporal), the real knowledge service (embedded PostgreSQL, tantivy) and the real reasoning service
(its embedding model, the verify strategy and the local chat model for planning).

The knowledge-only path: the scope names collections, web is off."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from edrs_core import testing
from edrs_proto.common.v1 import common_pb2
from edrs_proto.knowledge.v1 import knowledge_pb2 as kpb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.research.v1 import research_pb2 as pb
from edrs_proto.research.v1 import research_pb2_grpc
from edrs_research.app import definition
from edrs_research.jobs.store import UPDATES_CHANNEL

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT_A = testing.tenant_metadata(f"jobs-a-{RUN}")
TENANT_B = testing.tenant_metadata(f"jobs-b-{RUN}")
DATABASE = "test_research_jobs"

# The answer to QUESTION is spread over three documents; a fourth is about something else.
QUESTION = "When did the Orion probe launch, where does it travel and what propels it?"
FACTS = {
    "launch": "The Orion probe launched in March 2031 from the Kourou spaceport.",
    "destination": "The Orion probe travels to Europa, the icy moon of Jupiter.",
    "propulsion": "The Orion probe is propelled by a xenon ion engine.",
}
DOCUMENTS = {
    "orion-launch": (
        "Orion launch",
        "Mission history. " + FACTS["launch"] + " The launch window lasted eleven days.",
    ),
    "orion-destination": (
        "Orion destination",
        "Mission goals. " + FACTS["destination"] + " Scientists hope to study its ocean.",
    ),
    "orion-propulsion": (
        "Orion engineering",
        "Spacecraft design. " + FACTS["propulsion"] + " The solar panels span forty metres.",
    ),
    "bakery": (
        "Bakery opening hours",
        "The bakery on Rua Augusta opens at seven. Croissants are baked twice a day.",
    ),
}
ENDED = {pb.JOB_STATE_COMPLETED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


# -- services ---------------------------------------------------------------------------------


def research_settings(
    postgres_engine, redis_engine, nats_engine, temporal_engine, *, queue: str, **overrides: Any
) -> dict[str, Any]:
    return {
        **testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=DATABASE, redis_db=14
        ),
        "temporal_address": temporal_engine.url(),
        "temporal_task_queue": f"test-research-{queue}-{RUN}",
        "job_heartbeat_seconds": 5.0,
        "rpc_timeout_seconds": 300.0,
        **overrides,
    }


@pytest.fixture(scope="module")
async def research(
    postgres_engine, redis_engine, nats_engine, temporal_engine, knowledge, reasoning
) -> AsyncIterator[testing.RunningService]:
    settings = research_settings(
        postgres_engine,
        redis_engine,
        nats_engine,
        temporal_engine,
        queue="shared",
        peers={"knowledge": knowledge.grpc_address, "reasoning": reasoning.grpc_address},
    )
    async with testing.running_service(definition, start_timeout=120, **settings) as svc:
        yield svc


@pytest.fixture
def stub(research) -> research_pb2_grpc.ResearchServiceStub:
    return research_pb2_grpc.ResearchServiceStub(research.channel)


@pytest.fixture
def kstub(knowledge) -> knowledge_pb2_grpc.KnowledgeServiceStub:
    return knowledge_pb2_grpc.KnowledgeServiceStub(knowledge.channel)


async def make_collection(
    kstub, metadata, documents: dict[str, tuple[str, str]] = DOCUMENTS
) -> str:
    name = f"orion-{uuid.uuid4().hex[:10]}"
    await kstub.CreateCollection(kpb.CreateCollectionRequest(name=name), metadata=metadata)
    ids = []
    for external_id, (title, text) in documents.items():
        made = await kstub.IngestDocument(
            kpb.IngestDocumentRequest(
                collection=name,
                external_id=external_id,
                title=title,
                text=text,
                content_type="text/plain",
                source=f"kb://{external_id}",
            ),
            metadata=metadata,
        )
        ids.append(made.document.id)
    for document_id in ids:

        async def indexed(document_id: str = document_id) -> bool:
            doc = await kstub.GetDocument(kpb.GetDocumentRequest(id=document_id), metadata=metadata)
            assert doc.state != kpb.DOCUMENT_STATE_FAILED, doc.failure
            return bool(doc.state == kpb.DOCUMENT_STATE_INDEXED)

        await testing.wait_until(indexed, 300, f"document {document_id} to be indexed")
    return name


@pytest.fixture(scope="module")
async def collection(knowledge) -> str:
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(knowledge.channel)
    return await make_collection(stub, TENANT_A)


async def ended(stub, job_id: str, metadata=TENANT_A, within: float = 600.0) -> pb.Job:
    latest: pb.Job | None = None

    async def done() -> bool:
        nonlocal latest
        latest = await stub.GetJob(pb.GetJobRequest(id=job_id), metadata=metadata)
        return latest.state in ENDED

    await testing.wait_until(done, within, f"job {job_id} to end", interval=0.5)
    assert latest is not None
    return latest


def start(stub, collection: str, *, question: str = QUESTION, metadata=TENANT_A, **scope: Any):
    return stub.StartJob(
        pb.StartJobRequest(
            question=question,
            scope=pb.ResearchScope(collections=[collection], **scope),
        ),
        metadata=metadata,
    )


# -- the report -------------------------------------------------------------------------------


async def test_an_answer_spread_over_three_documents_is_cited_passage_by_passage(
    stub, kstub, research, collection, postgres_engine
) -> None:
    job = await start(stub, collection, depth=2)
    assert job.state == pb.JOB_STATE_QUEUED and uuid.UUID(job.id)
    assert job.scope.depth == 2 and job.scope.max_sources == 10 and job.scope.max_tokens == 4000
    done = await ended(stub, job.id)
    assert done.state == pb.JOB_STATE_COMPLETED, done.error
    assert done.planner in ("model", "fallback") and done.plan
    # The question itself is always searched, whichever planner wrote the plan.
    assert QUESTION in done.plan[0].queries
    assert done.progress.queries >= 1 and done.progress.sources_found >= 3

    # The plan's searches reach the tenant's learning gaps as research's (knowledge's search log).
    async def searched_as_research() -> bool:
        conn = await asyncpg.connect(postgres_engine.url("test_research_knowledge"))
        try:
            rows = await conn.fetch("SELECT origin FROM search_log WHERE query = $1", QUESTION)
        finally:
            await conn.close()
        return bool(rows) and {r["origin"] for r in rows} == {"research"}

    await testing.wait_until(searched_as_research, 60, "the plan's searches in the search log")

    report = await stub.GetReport(pb.GetReportRequest(job_id=job.id), metadata=TENANT_A)
    assert report.job_id == job.id and report.question == QUESTION
    claims = [c for s in report.sections for c in s.claims]
    assert claims and report.citations
    by_number = {c.number: c for c in report.citations}
    assert sorted(by_number) == list(range(1, len(by_number) + 1))
    for citation in report.citations:
        # The passage is exactly the knowledge service's stored text at those offsets.
        stored = await kstub.ReadDocumentText(
            kpb.ReadDocumentTextRequest(
                document_id=citation.document_id,
                version=citation.document_version,
                start=citation.start,
                end=citation.end,
            ),
            metadata=TENANT_A,
        )
        assert stored.text == citation.passage
        assert citation.chunk_id and citation.content_hash
    for claim in claims:
        assert claim.citations, claim
        assert all(claim.text in by_number[n].passage for n in claim.citations)
    supported = {c.text for c in claims if c.supported}
    # Each of the three facts is a supported claim, citing the document that states it.
    for fact in FACTS.values():
        assert fact in supported, (fact, [c.text for c in claims])
    assert not any("Croissants" in c.text for c in claims)
    for section in report.sections:
        for claim in section.claims:
            marker = "".join(f"[{n}]" for n in claim.citations)
            flagged = "" if claim.supported else "(unverified) "
            assert f"{flagged}{claim.text} {marker}" in section.text
    assert report.summary and "[" in report.summary
    assert done.progress.claims == len(claims)
    assert done.progress.claims_supported == len(supported)
    cited = {c.document_id for c in report.citations}
    assert len(cited) >= 3
    assert all(s.credibility > 0 and s.reasons for s in report.sources)

    [started] = await testing.published_events(research, "research.job_started", job.id)
    assert started["payload"] == {
        "job_id": job.id,
        "question_length": len(QUESTION),
        "web": False,
        "collections": 1,
    }
    [completed] = await testing.published_events(research, "research.report_completed", job.id)
    assert completed["payload"] == {
        "job_id": job.id,
        "claims": len(claims),
        "claims_supported": len(supported),
        "sources": done.progress.sources_scored,
    }


async def test_watch_streams_the_stages_then_the_ended_job(stub, collection) -> None:
    job = await start(stub, collection)
    updates = [u async for u in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=TENANT_A)]
    kinds = [u.kind for u in updates]
    assert kinds[-1] == "ended" and updates[-1].job.state == pb.JOB_STATE_COMPLETED
    states = [u.detail for u in updates if u.kind == "state"]
    for stage in ("planning", "searching", "drafting"):
        assert stage in states, kinds
    for kind in ("plan", "query", "scored", "claim"):
        assert kind in kinds, kinds
    # In the order they happened.
    assert kinds.index("plan") < kinds.index("query") < kinds.index("scored") < kinds.index("claim")
    assert all(u.event_time.seconds > 0 for u in updates)


async def test_every_update_is_announced_when_it_is_committed(
    stub, collection, postgres_engine
) -> None:
    """WatchJob is woken, not polling: each update row of a job is announced on its channel
    (keyed by the job id) by the transaction that writes it, so a watcher reads it at once."""
    heard: list[str] = []
    listener = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        await listener.add_listener(UPDATES_CHANNEL, lambda _c, _p, _ch, key: heard.append(key))
        job = await start(stub, collection)
        await ended(stub, job.id)
        rows = await listener.fetchval(
            "SELECT count(*) FROM research_job_updates WHERE job_id = $1", uuid.UUID(job.id)
        )

        async def all_heard() -> bool:
            return heard.count(job.id) == rows

        await testing.wait_until(all_heard, 60, f"the {rows} notifications of job {job.id}")
    finally:
        await listener.close()
    assert rows > 3


async def test_an_unsupported_job_report_flags_what_no_passage_supports(stub, kstub) -> None:
    """A question the collection cannot answer: nothing is stated as fact."""
    name = await make_collection(kstub, TENANT_A, {"bakery": DOCUMENTS["bakery"]})
    job = await start(stub, name, question="What is the boiling point of liquid xenon?")
    done = await ended(stub, job.id)
    assert done.state == pb.JOB_STATE_COMPLETED, done.error
    report = await stub.GetReport(pb.GetReportRequest(job_id=job.id), metadata=TENANT_A)
    assert not [c for s in report.sections for c in s.claims if c.supported]
    assert report.summary == "No source found supports an answer to this question."


# -- cancel, tenants, validation ----------------------------------------------------------------


async def test_a_cancelled_job_ends_cancelled_with_no_report(stub, collection) -> None:
    job = await start(stub, collection, depth=3)
    cancelled = await stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=TENANT_A)
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.end_time.seconds > 0
    updates = [u async for u in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=TENANT_A)]
    assert updates[-1].kind == "ended" and updates[-1].job.state == pb.JOB_STATE_CANCELLED
    await testing.expect_rpc_error(
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=TENANT_A),
        grpc.StatusCode.FAILED_PRECONDITION,
        "has already ended (cancelled)",
    )
    await testing.expect_rpc_error(
        stub.GetReport(pb.GetReportRequest(job_id=job.id), metadata=TENANT_A),
        grpc.StatusCode.FAILED_PRECONDITION,
        "it is cancelled",
    )
    listed = await stub.ListJobs(
        pb.ListJobsRequest(
            state=pb.JOB_STATE_CANCELLED, page=common_pb2.PageRequest(page_size=200)
        ),
        metadata=TENANT_A,
    )
    assert job.id in {j.id for j in listed.jobs}
    assert all(j.state == pb.JOB_STATE_CANCELLED for j in listed.jobs)


async def test_another_tenant_sees_none_of_a_tenants_jobs_or_reports(stub, collection) -> None:
    job = await start(stub, collection)
    done = await ended(stub, job.id)
    assert done.state == pb.JOB_STATE_COMPLETED, done.error
    for call in (
        stub.GetJob(pb.GetJobRequest(id=job.id), metadata=TENANT_B),
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=TENANT_B),
        stub.GetReport(pb.GetReportRequest(job_id=job.id), metadata=TENANT_B),
        stub.ExportReport(pb.ExportReportRequest(job_id=job.id), metadata=TENANT_B),
    ):
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND, job.id)
    watch = stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=TENANT_B)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in watch:
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    theirs = await stub.ListJobs(
        pb.ListJobsRequest(page=common_pb2.PageRequest(page_size=200)), metadata=TENANT_B
    )
    assert job.id not in {j.id for j in theirs.jobs}
    # Tenant B's job over tenant A's collection name finds none of A's passages.
    other = await start(stub, collection, metadata=TENANT_B)
    other_done = await ended(stub, other.id, metadata=TENANT_B)
    assert other_done.state == pb.JOB_STATE_FAILED
    assert collection in other_done.error and "knowledge search failed" in other_done.error


async def test_list_pages_through_a_tenants_jobs_newest_first(stub, collection) -> None:
    tenant = testing.tenant_metadata(f"jobs-list-{uuid.uuid4().hex[:8]}")
    made = []
    for _ in range(3):
        job = await start(stub, collection, metadata=tenant)
        made.append(job.id)
    for job_id in made:
        await ended(stub, job_id, metadata=tenant)
    jobs = await testing.collect_pages(
        stub.ListJobs, pb.ListJobsRequest, "jobs", page_size=2, metadata=tenant
    )
    assert [j.id for j in jobs] == list(reversed(made))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            pb.StartJobRequest(question="", scope=pb.ResearchScope(collections=["c"])),
            "question is required",
        ),
        (
            pb.StartJobRequest(question="ab", scope=pb.ResearchScope(collections=["c"])),
            "at least 3",
        ),
        (
            pb.StartJobRequest(question="q" * 2001, scope=pb.ResearchScope(collections=["c"])),
            "question is 2001 characters long",
        ),
        (pb.StartJobRequest(question="What is Orion?"), "scope has nothing to search"),
        (
            pb.StartJobRequest(
                question="What is Orion?", scope=pb.ResearchScope(collections=[" "])
            ),
            "scope.collections[0] is required",
        ),
        (
            pb.StartJobRequest(
                question="What is Orion?", scope=pb.ResearchScope(collections=["c"], depth=4)
            ),
            "scope.depth must be between 0 and 3, got 4",
        ),
        (
            pb.StartJobRequest(
                question="What is Orion?", scope=pb.ResearchScope(collections=["c"], max_sources=51)
            ),
            "scope.max_sources must be between 0 and 50",
        ),
        (
            pb.StartJobRequest(
                question="What is Orion?",
                scope=pb.ResearchScope(collections=["c"], max_tokens=1_000_001),
            ),
            "scope.max_tokens must be between 0 and 1000000",
        ),
        (
            pb.StartJobRequest(
                question="What is Orion?",
                scope=pb.ResearchScope(collections=["c"], recency_days=-1),
            ),
            "scope.recency_days must be between 0 and 36500",
        ),
        (
            pb.StartJobRequest(
                question="What is Orion?",
                scope=pb.ResearchScope(collections=["c"], denied_domains=["http://x.org/"]),
            ),
            "scope.denied_domains[0] must be a host name or *.suffix",
        ),
        (
            pb.StartJobRequest(
                question="What is Orion?",
                scope=pb.ResearchScope(
                    collections=["c"], allowed_domains=["a.org"], denied_domains=["A.org"]
                ),
            ),
            "both name a.org",
        ),
        (
            pb.StartJobRequest(
                question="What is Orion?", scope=pb.ResearchScope(collections=["c"]), persona_id="x"
            ),
            "persona_id",
        ),
    ],
)
async def test_invalid_start_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.StartJob(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_a_persona_job_needs_the_task_service(stub) -> None:
    await testing.expect_rpc_error(
        stub.StartJob(
            pb.StartJobRequest(
                question="What is Orion?",
                scope=pb.ResearchScope(collections=["c"]),
                persona_id=str(uuid.uuid4()),
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "needs the task service",
    )


async def test_unknown_jobs_are_not_found_and_bad_ids_invalid(stub) -> None:
    missing = str(uuid.uuid4())
    await testing.expect_rpc_error(
        stub.GetJob(pb.GetJobRequest(id=missing), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
        missing,
    )
    await testing.expect_rpc_error(
        stub.GetReport(pb.GetReportRequest(job_id="nope"), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "job_id",
    )
    await testing.expect_refused_without_tenant(
        stub.GetJob(pb.GetJobRequest(id=missing)),
        stub.ListJobs(pb.ListJobsRequest()),
    )


# -- resume after the worker is stopped mid-job -------------------------------------------------


class HeldKnowledge:
    """A gRPC front of the knowledge service that forwards every call, but holds each Search
    after the first `allow` ones (never answering them): the research worker using it is
    stopped while a search is in flight. Counts the searches it forwarded."""

    def __init__(self, target: str, allow: int) -> None:
        self.target = target
        self.allow = allow
        self.forwarded: list[bytes] = []
        self.held = 0
        self.server: grpc.aio.Server | None = None
        self.channel: grpc.aio.Channel | None = None
        self.address = ""
        self.release = asyncio.Event()

    async def __aenter__(self) -> HeldKnowledge:
        self.channel = grpc.aio.insecure_channel(self.target)
        proxy = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: Any) -> Any:
                method = details.method

                async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                    return await proxy.forward(method, request, context)

                return grpc.unary_unary_rpc_method_handler(call)

        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((Handler(),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def forward(self, method: str, request: bytes, context: Any) -> bytes:
        assert self.channel is not None
        if method.endswith("/Search"):
            if len(self.forwarded) >= self.allow:
                self.held += 1
                await self.release.wait()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "held")
            self.forwarded.append(request)
        metadata = [(k, v) for k, v in context.invocation_metadata() if not k.startswith(":")]
        call: Callable[..., Any] = self.channel.unary_unary(method)
        return bytes(await call(request, metadata=metadata, timeout=300))

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        if self.server is not None:
            await self.server.stop(0)
        if self.channel is not None:
            await self.channel.close()


async def test_a_job_resumes_on_a_new_worker_without_searching_anything_twice(
    postgres_engine, redis_engine, nats_engine, temporal_engine, knowledge, reasoning, collection
) -> None:
    peers = {"knowledge": knowledge.grpc_address, "reasoning": reasoning.grpc_address}
    base = dict(
        postgres_engine=postgres_engine,
        redis_engine=redis_engine,
        nats_engine=nats_engine,
        temporal_engine=temporal_engine,
        queue="resume",
        planner="fallback",
        job_heartbeat_seconds=2.0,
    )
    async with HeldKnowledge(knowledge.grpc_address, allow=1) as held:
        settings = research_settings(**base, peers={**peers, "knowledge": held.address})
        async with testing.running_service(definition, start_timeout=120, **settings) as first:
            stub = research_pb2_grpc.ResearchServiceStub(first.channel)
            job = await start(stub, collection, depth=3)

            async def second_search_held() -> bool:
                return held.held >= 1

            await testing.wait_until(second_search_held, 300, "the job's second search")
            midway = await stub.GetJob(pb.GetJobRequest(id=job.id), metadata=TENANT_A)
            assert midway.state == pb.JOB_STATE_SEARCHING
        # The first worker is gone with a search in flight; a new one takes the job over.
        assert len(held.forwarded) == 1
        settings = research_settings(**base, peers=peers)
        async with testing.running_service(definition, start_timeout=120, **settings) as second:
            stub = research_pb2_grpc.ResearchServiceStub(second.channel)
            done = await ended(stub, job.id)
    assert done.state == pb.JOB_STATE_COMPLETED, done.error
    queries = list(dict.fromkeys(q for step in done.plan for q in step.queries))
    assert len(queries) >= 3
    assert done.progress.queries == len(queries)
    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        rows = await conn.fetch(
            "SELECT step_key, runs FROM research_job_steps WHERE job_id = $1", uuid.UUID(job.id)
        )
    finally:
        await conn.close()
    searched = {r["step_key"]: r["runs"] for r in rows if r["step_key"].startswith("knowledge:")}
    # Every query searched and recorded once: the first worker's search was not repeated.
    assert sorted(searched) == sorted(f"knowledge:{q}" for q in queries)
    assert set(searched.values()) == {1}
    assert all(r["runs"] == 1 for r in rows)
    report_rows = [r for r in rows if r["step_key"] == "plan"]
    assert len(report_rows) == 1
