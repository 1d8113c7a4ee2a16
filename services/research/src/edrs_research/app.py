"""Wires the research service: its store, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc

from edrs_research.config import ResearchSettings
from edrs_research.server import ResearchServicer
from edrs_research.store.postgres import PostgresResearchStore


async def build(rt: Runtime[ResearchSettings]) -> list[GrpcService]:
    settings = rt.settings
    store = PostgresResearchStore(rt.db, await start_service_events(rt))
    servicer = ResearchServicer(store, settings.outbound_policy(), settings.domain_tiers())
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
