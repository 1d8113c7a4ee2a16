"""Wires the gateway service: its store, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, Runtime, ServiceDefinition
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from edrs_gateway.config import GatewaySettings
from edrs_gateway.server import TenantServicer
from edrs_gateway.store.postgres import PostgresTenantStore


def build(rt: Runtime) -> list[GrpcService]:
    servicer = TenantServicer(PostgresTenantStore(rt.db))
    return [
        GrpcService(
            gateway_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
            servicer,
            gateway_pb2_grpc.add_TenantServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=GatewaySettings,
    build=build,
    migrations=files("edrs_gateway") / "migrations",
)
