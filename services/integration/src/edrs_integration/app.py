"""Wires the integration service: its stores and secret store, its tool registry and MCP
sessions, its gRPC servicers, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_core.secretstore import VaultSecretStore
from edrs_proto.integration.v1 import (
    integration_pb2,
    integration_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
)
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.task.v1 import task_pb2_grpc

from edrs_integration.config import IntegrationSettings
from edrs_integration.credentials import SecretCipher
from edrs_integration.server import IntegrationServicer
from edrs_integration.store.postgres import PostgresConnectorStore
from edrs_integration.store.postgres_tools import PostgresToolStore
from edrs_integration.tools.builtin import BuiltinTools
from edrs_integration.tools.mcp import McpConnections
from edrs_integration.tools.registry import ToolLimits, ToolRegistry
from edrs_integration.tools_server import ToolServicer


async def build(rt: Runtime[IntegrationSettings]) -> list[GrpcService]:
    settings = rt.settings
    outbound = settings.outbound_policy()
    secrets = VaultSecretStore(settings.vault_config())
    store = PostgresConnectorStore(rt.db, secrets, await start_service_events(rt))
    legacy_key = settings.credentials_key
    await store.move_sealed_secrets(
        None if legacy_key is None else SecretCipher(legacy_key),
        settings.env_name("credentials_key"),
    )
    connections = McpConnections(
        outbound,
        connect_timeout=settings.mcp_connect_timeout_seconds,
        health_interval=settings.mcp_health_interval_seconds,
    )
    # Stdio servers' processes stop with the service.
    rt.on_close(connections.close)
    registry = ToolRegistry(
        PostgresToolStore(rt.db),
        store,
        connections,
        BuiltinTools(
            rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub),
            rt.peers.stub(task_pb2_grpc.TaskServiceStub),
            configured_peers=set(rt.peers.peers),
            connector_requests=None,
        ),
        outbound,
        ToolLimits(
            stdio_commands=settings.mcp_stdio_commands,
            call_timeout=settings.tool_call_timeout_seconds,
            result_max_chars=settings.tool_result_max_chars,
        ),
    )
    return [
        GrpcService(
            integration_pb2.DESCRIPTOR.services_by_name["IntegrationService"].full_name,
            IntegrationServicer(store, outbound),
            integration_pb2_grpc.add_IntegrationServiceServicer_to_server,
        ),
        GrpcService(
            tools_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name,
            ToolServicer(registry),
            tools_pb2_grpc.add_ToolServiceServicer_to_server,
        ),
    ]


definition = ServiceDefinition(
    settings_cls=IntegrationSettings,
    build=build,
    migrations=files("edrs_integration") / "migrations",
    local_ports=LocalPorts(grpc=50058, http=8114, metrics=8115),
)
