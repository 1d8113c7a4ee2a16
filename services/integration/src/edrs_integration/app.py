"""Wires the integration service: its store and secret cipher, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.integration.v1 import integration_pb2, integration_pb2_grpc

from edrs_integration.config import IntegrationSettings
from edrs_integration.credentials import SecretCipher
from edrs_integration.server import IntegrationServicer
from edrs_integration.store.postgres import PostgresConnectorStore


async def build(rt: Runtime[IntegrationSettings]) -> list[GrpcService]:
    settings = rt.settings
    store = PostgresConnectorStore(
        rt.db, SecretCipher(settings.credentials_key), await start_service_events(rt)
    )
    return [
        GrpcService(
            integration_pb2.DESCRIPTOR.services_by_name["IntegrationService"].full_name,
            IntegrationServicer(store, settings.outbound_policy()),
            integration_pb2_grpc.add_IntegrationServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=IntegrationSettings,
    build=build,
    migrations=files("edrs_integration") / "migrations",
    local_ports=LocalPorts(grpc=50058, http=8114, metrics=8115),
)
