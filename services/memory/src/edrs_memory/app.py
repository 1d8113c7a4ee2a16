"""Wires the memory service: its store, its gRPC servicer, its migrations."""

from datetime import timedelta
from importlib.resources import files

from edrs_core import GrpcService, Runtime, ServiceDefinition
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc

from edrs_memory.config import MemorySettings
from edrs_memory.recall import RecallPolicy
from edrs_memory.server import MemoryServicer
from edrs_memory.store.postgres import PostgresMemoryStore


def build(rt: Runtime) -> list[GrpcService]:
    settings = rt.settings
    assert isinstance(settings, MemorySettings)
    policy = RecallPolicy(
        half_life=timedelta(days=settings.recall_half_life_days),
        candidates=settings.recall_candidates,
    )
    servicer = MemoryServicer(PostgresMemoryStore(rt.db), policy)
    return [
        GrpcService(
            memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,
            servicer,
            memory_pb2_grpc.add_MemoryServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=MemorySettings,
    build=build,
    migrations=files("edrs_memory") / "migrations",
)
