"""The integration gRPC servicer: validates connectors, scopes them to the caller's tenant, and never
sends a stored secret back."""

from __future__ import annotations

from edrs_core import NotFound, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.outbound import OutboundPolicy
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.integration.v1 import integration_pb2, integration_pb2_grpc

from edrs_integration.connectors import connector_config, is_secret_key
from edrs_integration.store import Connector, ConnectorStore, NewConnector

REDACTED = "********"

_KIND_TO_PROTO = {
    "webhook": integration_pb2.CONNECTOR_KIND_WEBHOOK,
    "http": integration_pb2.CONNECTOR_KIND_HTTP,
    "mcp": integration_pb2.CONNECTOR_KIND_MCP,
}
_KIND_FROM_PROTO = {number: kind for kind, number in _KIND_TO_PROTO.items()}


def to_proto(c: Connector) -> integration_pb2.Connector:
    return integration_pb2.Connector(
        id=str(c.id),
        name=c.name,
        kind=_KIND_TO_PROTO[c.kind],
        config={**c.config, **dict.fromkeys(c.secret_keys, REDACTED)},
        enabled=c.enabled,
        create_time=timestamp(c.created_at),
    )


class IntegrationServicer(integration_pb2_grpc.IntegrationServiceServicer):
    def __init__(self, store: ConnectorStore, outbound: OutboundPolicy) -> None:
        self.store = store
        self.outbound = outbound

    async def CreateConnector(  # noqa: N802 (gRPC method name)
        self, request: integration_pb2.CreateConnectorRequest, context: ServicerContext
    ) -> integration_pb2.Connector:
        client_id = require_client_id()
        name = validation.text(request.name, "name", max_length=200)
        kind = validation.enum_value(
            request.kind, "kind", _KIND_FROM_PROTO, integration_pb2.ConnectorKind
        )
        config = connector_config(kind, request.config, self.outbound)
        new = NewConnector(
            name=name,
            kind=kind,
            config={k: v for k, v in config.items() if not is_secret_key(k)},
            secrets={k: v for k, v in config.items() if is_secret_key(k)},
            enabled=request.enabled,
        )
        return to_proto(await self.store.create(client_id, new))

    async def GetConnector(  # noqa: N802
        self, request: integration_pb2.GetConnectorRequest, context: ServicerContext
    ) -> integration_pb2.Connector:
        client_id = require_client_id()
        connector = await self.store.get(client_id, parse_id(request.id))
        if connector is None:
            raise NotFound(f"connector {request.id} not found")
        return to_proto(connector)

    async def ListConnectors(  # noqa: N802
        self, request: integration_pb2.ListConnectorsRequest, context: ServicerContext
    ) -> integration_pb2.ListConnectorsResponse:
        client_id = require_client_id()
        connectors, token = await self.store.list(
            client_id, request.page.page_token, request.page.page_size
        )
        return integration_pb2.ListConnectorsResponse(
            connectors=[to_proto(c) for c in connectors],
            page=common_pb2.PageInfo(next_page_token=token),
        )
