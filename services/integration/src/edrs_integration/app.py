"""Wires the integration service: its stores and secret store, its tool registry and MCP
sessions, its gRPC servicers, its migrations."""

import asyncio
from importlib.resources import files

import asyncpg
from edrs_core import Consumer, GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.clock import SystemClock
from edrs_core.consumers import ConsumedEvent
from edrs_core.events import start_service_events
from edrs_core.outbound import OutboundClient, OutboundLimits, OutboundPolicy
from edrs_core.secretstore import VaultSecretStore
from edrs_events import ConsumerOptions
from edrs_proto.integration.v1 import (
    integration_pb2,
    integration_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.task.v1 import task_pb2_grpc

from edrs_integration.config import IntegrationSettings
from edrs_integration.connector_calls import ConnectorCalls
from edrs_integration.credentials import SecretCipher
from edrs_integration.server import IntegrationServicer
from edrs_integration.store.postgres import PostgresConnectorStore
from edrs_integration.store.postgres_tools import PostgresToolStore
from edrs_integration.tools.builtin import BuiltinTools
from edrs_integration.tools.mcp import McpConnections
from edrs_integration.tools.registry import ToolLimits, ToolRegistry
from edrs_integration.tools.retention import run_sweeper
from edrs_integration.tools_server import ToolServicer
from edrs_integration.webhooks.dispatcher import WebhookDispatcher
from edrs_integration.webhooks.inbound import InboundWebhooks
from edrs_integration.webhooks.store import NOTIFY_CHANNEL, WebhookStore, enqueue_deliveries
from edrs_integration.webhooks_server import WebhookServicer

# The durable consumer that turns every event of the fleet into webhook deliveries.
WEBHOOK_CONSUMER = "integration-webhooks"
# Events it queues at once. Each is its own short transaction (inbox row, deliveries, NOTIFY);
# one at a time, they capped deliveries at the rate of those round trips (benchmarks/
# bench_integration.py). Order is not kept, nor promised: Standard Webhooks receivers order by
# the payload's timestamp, and the dispatcher sends concurrently and retries anyway.
WEBHOOK_QUEUE_CONCURRENCY = 16


async def build(rt: Runtime[IntegrationSettings]) -> list[GrpcService]:
    settings = rt.settings
    outbound = settings.outbound_policy()
    secrets = VaultSecretStore(settings.vault_config())
    events = await start_service_events(rt)
    store = PostgresConnectorStore(rt.db, secrets, events)
    legacy_key = settings.credentials_key
    await store.move_sealed_secrets(
        None if legacy_key is None else SecretCipher(legacy_key),
        settings.env_name("credentials_key"),
    )
    clock = SystemClock()
    client = OutboundClient(
        outbound, settings.outbound_limits(), resolver=settings.outbound_resolver()
    )
    rt.on_close(client.aclose)
    # Connectors' calls (REST with its auth, SMTP, tests): the tools use them through this
    # one object (the tool registry's ConnectorRequests port).
    calls = ConnectorCalls(store, client, outbound, clock)
    connections = McpConnections(
        outbound,
        connect_timeout=settings.mcp_connect_timeout_seconds,
        health_interval=settings.mcp_health_interval_seconds,
    )
    # Stdio servers' processes stop with the service.
    rt.on_close(connections.close)
    tool_store = PostgresToolStore(rt.db, events, secrets)
    # Keyed tool calls expire (docs/integration.md, "Idempotency key").
    rt.spawn(
        run_sweeper(
            tool_store,
            settings.tool_call_key_retention_hours,
            settings.tool_call_key_sweep_interval_seconds,
        ),
        "integration-keyed-call-sweeper",
    )
    registry = ToolRegistry(
        tool_store,
        store,
        connections,
        BuiltinTools(
            rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub),
            rt.peers.stub(task_pb2_grpc.TaskServiceStub),
            configured_peers=set(rt.peers.peers),
            connector_requests=calls,
        ),
        outbound,
        ToolLimits(
            stdio_commands=settings.mcp_stdio_commands,
            call_timeout=settings.tool_call_timeout_seconds,
            result_max_chars=settings.tool_result_max_chars,
        ),
        connector_requests=calls,
    )
    webhooks = WebhookStore(rt.db, secrets)
    await _start_dispatcher(rt, webhooks, outbound, clock)
    return [
        GrpcService(
            webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
            WebhookServicer(
                webhooks, store, InboundWebhooks(rt.db, store, events), outbound, clock
            ),
            webhooks_pb2_grpc.add_WebhookServiceServicer_to_server,
        ),
        GrpcService(
            integration_pb2.DESCRIPTOR.services_by_name["IntegrationService"].full_name,
            IntegrationServicer(store, outbound, calls),
            integration_pb2_grpc.add_IntegrationServiceServicer_to_server,
        ),
        GrpcService(
            tools_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name,
            ToolServicer(registry),
            tools_pb2_grpc.add_ToolServiceServicer_to_server,
        ),
    ]


async def _start_dispatcher(
    rt: Runtime[IntegrationSettings],
    webhooks: WebhookStore,
    outbound: OutboundPolicy,
    clock: SystemClock,
) -> None:
    settings = rt.settings
    limits = settings.outbound_limits()
    client = OutboundClient(outbound, limits, resolver=settings.outbound_resolver())
    rt.on_close(client.aclose)
    dispatcher = WebhookDispatcher(
        webhooks,
        client,
        clock,
        concurrency=settings.webhook_concurrency,
        limits=OutboundLimits(
            max_redirects=0,
            max_response_bytes=64 * 1024,
            timeout_seconds=settings.webhook_timeout_seconds,
            connect_timeout_seconds=limits.connect_timeout_seconds,
        ),
    )
    # Deliveries are queued in consumers' transactions, on any replica: their NOTIFY, sent on
    # commit, wakes the dispatcher here.
    wake = asyncio.Event()
    listener = await asyncpg.connect(settings.database_url)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
    rt.on_close(listener.close)
    rt.spawn(dispatcher.run(wake, settings.webhook_idle_seconds), "integration-webhook-dispatcher")


async def queue_webhooks(delivery: ConsumedEvent[IntegrationSettings]) -> None:
    """Every event of a tenant becomes a delivery for each of its subscriptions to that type, in
    the inbox's transaction (once, however often the bus delivers it)."""
    await enqueue_deliveries(delivery.conn, delivery.event, SystemClock().now())


definition = ServiceDefinition(
    settings_cls=IntegrationSettings,
    build=build,
    migrations=files("edrs_integration") / "migrations",
    local_ports=LocalPorts(grpc=50058, http=8114, metrics=8115),
    consumers=[
        Consumer(
            WEBHOOK_CONSUMER,
            ["*"],
            queue_webhooks,
            ConsumerOptions(concurrency=WEBHOOK_QUEUE_CONCURRENCY),
        )
    ],
)
