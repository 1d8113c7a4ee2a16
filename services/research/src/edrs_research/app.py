"""Wires the research service: its store, the web (outbound client, fetcher, search provider),
the knowledge sink, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc

from edrs_research.config import ResearchSettings
from edrs_research.knowledge_sink import KnowledgeSink
from edrs_research.server import ResearchServicer
from edrs_research.sources import Sources
from edrs_research.store.postgres import PostgresResearchStore
from edrs_research.web.kit import ResearchWeb


async def build(rt: Runtime[ResearchSettings]) -> list[GrpcService]:
    settings = rt.settings
    store = PostgresResearchStore(rt.db, await start_service_events(rt))
    web = ResearchWeb.from_settings(settings)
    rt.on_close(web.aclose)
    sink = KnowledgeSink(rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub))
    sources = Sources(store, web.fetcher, sink, web.tiers)
    servicer = ResearchServicer(sources, settings.outbound_policy(), web)
    return [
        GrpcService(
            research_pb2.DESCRIPTOR.services_by_name["ResearchService"].full_name,
            servicer,
            research_pb2_grpc.add_ResearchServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=ResearchSettings,
    build=build,
    migrations=files("edrs_research") / "migrations",
    local_ports=LocalPorts(grpc=50057, http=8112, metrics=8113),
)
