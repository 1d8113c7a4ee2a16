"""The integration gRPC servicer: validates connectors, scopes them to the caller's tenant, and never
sends a stored secret back."""

from __future__ import annotations

from edrs_core import InvalidArgument, NotFound, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.outbound import OutboundPolicy
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.integration.v1 import integration_pb2, integration_pb2_grpc

from edrs_integration.connector_calls import ConnectorCalls
from edrs_integration.connectors import connector_config, is_secret_key, kind_settings
from edrs_integration.store import Connector, ConnectorStore, ConnectorUpdate, NewConnector

REDACTED = "********"
# Where the gateway serves a connector's inbound webhook URL.
INBOUND_PATH = "/api/v1/hooks/{client_id}/{connector_id}"

_KIND_TO_PROTO = {
    "webhook": integration_pb2.CONNECTOR_KIND_WEBHOOK,
    "http": integration_pb2.CONNECTOR_KIND_HTTP,
    "mcp": integration_pb2.CONNECTOR_KIND_MCP,
    "smtp": integration_pb2.CONNECTOR_KIND_SMTP,
}
_KIND_FROM_PROTO = {number: kind for kind, number in _KIND_TO_PROTO.items()}
_UPDATABLE = {"name", "config", "enabled"}


def to_proto(c: Connector) -> integration_pb2.Connector:
    return integration_pb2.Connector(
        id=str(c.id),
        name=c.name,
        kind=_KIND_TO_PROTO[c.kind],
        config={**c.config, **dict.fromkeys(c.secret_keys, REDACTED)},
        enabled=c.enabled,
        create_time=timestamp(c.created_at),
        update_time=timestamp(c.updated_at),
        inbound_path=INBOUND_PATH.format(client_id=c.client_id, connector_id=c.id),
    )


class IntegrationServicer(integration_pb2_grpc.IntegrationServiceServicer):
    def __init__(
        self, store: ConnectorStore, outbound: OutboundPolicy, calls: ConnectorCalls
    ) -> None:
        self.store = store
        self.outbound = outbound
        self.calls = calls

    async def CreateConnector(  # noqa: N802 (gRPC method name)
        self, request: integration_pb2.CreateConnectorRequest, context: ServicerContext
    ) -> integration_pb2.Connector:
        client_id = require_client_id()
        name = validation.text(request.name, "name", max_length=200)
        kind = validation.enum_value(
            request.kind, "kind", _KIND_FROM_PROTO, integration_pb2.ConnectorKind
        )
        config = connector_config(kind, request.config, self.outbound)
        plain = {k: v for k, v in config.items() if not is_secret_key(k)}
        secrets = {k: v for k, v in config.items() if is_secret_key(k)}
        kind_settings(kind, plain, set(secrets), self.outbound)
        new = NewConnector(
            name=name, kind=kind, config=plain, secrets=secrets, enabled=request.enabled
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

    async def UpdateConnector(  # noqa: N802
        self, request: integration_pb2.UpdateConnectorRequest, context: ServicerContext
    ) -> integration_pb2.Connector:
        client_id = require_client_id()
        mask = set(request.update_mask)
        if not mask or mask - _UPDATABLE:
            raise InvalidArgument(
                f"update_mask must name some of {', '.join(sorted(_UPDATABLE))}",
                field="update_mask",
            )
        current = await self.store.get(client_id, parse_id(request.id))
        if current is None:
            raise NotFound(f"connector {request.id} not found")
        name = validation.text(request.name, "name", max_length=200) if "name" in mask else None
        config: dict[str, str] | None = None
        secrets: dict[str, str] = {}
        removed = frozenset(request.remove_keys)
        if "config" in mask:
            given = {k: v for k, v in request.config.items()}
            # A redacted value sent back unchanged keeps the stored secret.
            given = {k: v for k, v in given.items() if not (is_secret_key(k) and v == REDACTED)}
            secrets = {k: v for k, v in given.items() if is_secret_key(k)}
            plain = {
                **{k: v for k, v in current.config.items() if k not in removed},
                **{k: v for k, v in given.items() if not is_secret_key(k)},
            }
            merged_keys = (current.secret_keys | set(secrets)) - removed
            connector_config(
                current.kind, {**plain, **dict.fromkeys(merged_keys, "x")}, self.outbound
            )
            kind_settings(current.kind, plain, merged_keys, self.outbound)
            config = plain
        updated = await self.store.update(
            client_id,
            current.id,
            ConnectorUpdate(
                name=name,
                config=config,
                secrets=secrets,
                remove_secrets=removed & current.secret_keys if "config" in mask else frozenset(),
                enabled=request.enabled if "enabled" in mask else None,
            ),
        )
        if updated is None:
            raise NotFound(f"connector {request.id} not found")
        return to_proto(updated)

    async def DeleteConnector(  # noqa: N802
        self, request: integration_pb2.DeleteConnectorRequest, context: ServicerContext
    ) -> integration_pb2.DeleteConnectorResponse:
        if not await self.store.delete(require_client_id(), parse_id(request.id)):
            raise NotFound(f"connector {request.id} not found")
        return integration_pb2.DeleteConnectorResponse()

    async def TestConnector(  # noqa: N802
        self, request: integration_pb2.TestConnectorRequest, context: ServicerContext
    ) -> integration_pb2.TestConnectorResponse:
        result = await self.calls.test(require_client_id(), parse_id(request.id))
        return integration_pb2.TestConnectorResponse(
            ok=result.ok,
            detail=result.detail,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
        )
