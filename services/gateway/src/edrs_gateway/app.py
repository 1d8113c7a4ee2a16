"""Wires the gateway service: its stores, its gRPC servicer, its public API, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.clock import SystemClock
from edrs_core.events import start_service_events
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from starlette.routing import BaseRoute, Mount

from edrs_gateway.api.app import create_api
from edrs_gateway.auth.passwords import Passwords
from edrs_gateway.config import GatewaySettings
from edrs_gateway.console import CONSOLE_PATH, console_app
from edrs_gateway.context import GatewayContext
from edrs_gateway.identity.bootstrap import bootstrap
from edrs_gateway.server import TenantServicer
from edrs_gateway.store.postgres import PostgresTenantStore


async def build(rt: Runtime[GatewaySettings]) -> list[GrpcService]:
    # Before the service reports started: the first token needs a signing key, and in
    # development the first login needs a tenant and an admin.
    await bootstrap(rt.db, rt.settings, Passwords())
    # The outbox and its relay: `gateway.user_deleted` commits with the deletion it announces.
    await start_service_events(rt)
    servicer = TenantServicer(PostgresTenantStore(rt.db))
    return [
        GrpcService(
            gateway_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
            servicer,
            gateway_pb2_grpc.add_TenantServiceServicer_to_server,
        )
    ]


async def http_routes(rt: Runtime[GatewaySettings]) -> list[BaseRoute]:
    """The public API and the web console, mounted beside the health endpoints on the HTTP port.
    The console is outside the API's middleware: its files need no token, and loading them must
    not spend the anonymous rate limit."""
    ctx = GatewayContext.build(rt.settings, rt, clock=SystemClock())
    api = create_api(ctx, rt.bus)
    rt.on_close(api.state.mcp.close)
    return [
        Mount(CONSOLE_PATH, app=console_app(rt.settings.console_dir)),
        Mount("", app=api),
    ]


definition = ServiceDefinition(
    settings_cls=GatewaySettings,
    build=build,
    migrations=files("edrs_gateway") / "migrations",
    http_routes=http_routes,
    local_ports=LocalPorts(grpc=50051, http=8080, metrics=8081),
)
