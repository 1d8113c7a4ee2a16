"""Wires the persona service: its store, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, Runtime, ServiceDefinition
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc

from edrs_persona.config import PersonaSettings
from edrs_persona.server import PersonaServicer
from edrs_persona.store.postgres import PostgresPersonaStore


def build(rt: Runtime) -> list[GrpcService]:
    servicer = PersonaServicer(PostgresPersonaStore(rt.db))
    return [
        GrpcService(
            persona_pb2.DESCRIPTOR.services_by_name["PersonaService"].full_name,
            servicer,
            persona_pb2_grpc.add_PersonaServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=PersonaSettings,
    build=build,
    migrations=files("edrs_persona") / "migrations",
)
