"""Wires the reasoning service: its store, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, Runtime, ServiceDefinition
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_reasoning.config import ReasoningSettings
from edrs_reasoning.server import ReasoningServicer
from edrs_reasoning.store.postgres import PostgresTraceStore


def build(rt: Runtime) -> list[GrpcService]:
    servicer = ReasoningServicer(PostgresTraceStore(rt.db))
    return [
        GrpcService(
            reasoning_pb2.DESCRIPTOR.services_by_name["ReasoningService"].full_name,
            servicer,
            reasoning_pb2_grpc.add_ReasoningServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=ReasoningSettings,
    build=build,
    migrations=files("edrs_reasoning") / "migrations",
)
