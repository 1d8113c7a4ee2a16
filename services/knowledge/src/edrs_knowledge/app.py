"""Wires the knowledge service: its store, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc

from edrs_knowledge.config import KnowledgeSettings
from edrs_knowledge.server import KnowledgeServicer
from edrs_knowledge.store.postgres import PostgresKnowledgeStore


async def build(rt: Runtime[KnowledgeSettings]) -> list[GrpcService]:
    servicer = KnowledgeServicer(PostgresKnowledgeStore(rt.db, await start_service_events(rt)))
    return [
        GrpcService(
            knowledge_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name,
            servicer,
            knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=KnowledgeSettings,
    build=build,
    migrations=files("edrs_knowledge") / "migrations",
    local_ports=LocalPorts(grpc=50054, http=8106, metrics=8107),
)
