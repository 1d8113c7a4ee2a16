"""Wires the gateway service: its store, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, Runtime, ServiceDefinition
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from starlette.routing import BaseRoute, Mount

from edrs_gateway.api.app import create_api
from edrs_gateway.config import GatewaySettings
from edrs_gateway.context import GatewayContext
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


def http_routes(rt: Runtime) -> list[BaseRoute]:
    """The public API, mounted beside the health endpoints on the HTTP port."""
    assert isinstance(rt.settings, GatewaySettings)
    ctx = GatewayContext(settings=rt.settings, runtime=rt, tenants=PostgresTenantStore(rt.db))
    return [Mount("", app=create_api(ctx))]


definition = ServiceDefinition(
    settings_cls=GatewaySettings,
    build=build,
    migrations=files("edrs_gateway") / "migrations",
    http_routes=http_routes,
)
