"""Wires the research service: its store, the web (outbound client, fetcher, search provider),
the knowledge sink, its gRPC servicer, its migrations, and (with Temporal) the worker of its
research jobs."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_core.notifications import Notifications
from edrs_core.temporal import check_temporal, connect_temporal
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc
from edrs_proto.task.v1 import task_pb2_grpc
from temporalio.worker import Worker

from edrs_research.config import ResearchSettings
from edrs_research.jobs.activities import JobActivities
from edrs_research.jobs.store import JobStore
from edrs_research.jobs.web import WebResearch
from edrs_research.jobs.workflow import ResearchJob
from edrs_research.jobs_server import JobRuntime
from edrs_research.knowledge_sink import KnowledgeSink
from edrs_research.server import ResearchServicer
from edrs_research.sources import Sources
from edrs_research.store.postgres import PostgresResearchStore
from edrs_research.web.kit import ResearchWeb
from edrs_research.web.search import SearchProvider


async def build(rt: Runtime[ResearchSettings]) -> list[GrpcService]:
    settings = rt.settings
    events = await start_service_events(rt)
    store = PostgresResearchStore(rt.db, events)
    web = ResearchWeb.from_settings(settings)
    rt.on_close(web.aclose)
    sink = KnowledgeSink(rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub))
    sources = Sources(store, web.fetcher, sink, web.tiers)
    jobs: JobRuntime | None = None
    if settings.temporal_address is not None:
        search = web.search if settings.search_provider != "none" else None
        jobs = await build_jobs(rt, JobStore(rt.db, events), sources, search)
    servicer = ResearchServicer(sources, settings.outbound_policy(), web, jobs)
    return [
        GrpcService(
            research_pb2.DESCRIPTOR.services_by_name["ResearchService"].full_name,
            servicer,
            research_pb2_grpc.add_ResearchServiceServicer_to_server,
        )
    ]


async def build_jobs(
    rt: Runtime[ResearchSettings],
    store: JobStore,
    sources: Sources,
    search: SearchProvider | None,
) -> JobRuntime:
    """Temporal, the worker that runs the jobs in this process, and the peers they call:
    knowledge and reasoning required, task (budgets, persona tasks) optional."""
    settings = rt.settings
    assert settings.temporal_address is not None
    temporal = await connect_temporal(
        settings, settings.temporal_address, deadline_seconds=settings.startup_timeout_seconds
    )
    rt.add_check("temporal", lambda: check_temporal(temporal))
    has_task = "task" in settings.peers
    tasks = rt.peers.stub(task_pb2_grpc.TaskServiceStub) if has_task else None
    knowledge = rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub, required=True)
    web = None
    if search is not None:
        web = WebResearch(
            store,
            sources,
            search,
            knowledge,
            settings.outbound_policy(),
            results_per_query=settings.web_results_per_query,
            passages_per_query=settings.passages_per_query,
        )
    activities = JobActivities(
        store,
        settings,
        knowledge,
        rt.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub, required=True),
        rt.peers.stub(task_pb2_grpc.BudgetServiceStub) if has_task else None,
        tasks,
        sources,
        web,
    )
    worker = Worker(
        temporal,
        task_queue=settings.temporal_task_queue,
        workflows=[ResearchJob],
        activities=activities.all(),
        max_concurrent_activities=20,
    )
    rt.spawn(worker.run(), "temporal-worker")
    notifications = Notifications(rt.db)
    rt.on_close(notifications.close)
    return JobRuntime(
        store,
        temporal,
        settings.temporal_task_queue,
        settings.job_heartbeat_seconds,
        tasks,
        notifications,
        web=web is not None,
    )


definition = ServiceDefinition(
    settings_cls=ResearchSettings,
    build=build,
    migrations=files("edrs_research") / "migrations",
    local_ports=LocalPorts(grpc=50057, http=8112, metrics=8113),
)
