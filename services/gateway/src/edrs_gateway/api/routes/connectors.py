"""`/api/v1/connectors`: the tenant's links to other systems, served by the integration service.
Credentials go in and never come back (`********`); docs/integration.md, "Connectors"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_proto.integration.v1 import integration_pb2, integration_pb2_grpc
from fastapi import APIRouter, Depends, Path, Response
from pydantic import ConfigDict, Field, StrictBool

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import REQUIRED_LINE, ApiModel, PageOf
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(prefix="/connectors", tags=["connectors"])

read_connectors = require(Permission.CONNECTORS_READ)
write_connectors = require(Permission.CONNECTORS_WRITE)

Kind = Literal["http", "smtp", "webhook", "mcp"]
_KIND: dict[Kind, integration_pb2.ConnectorKind.ValueType] = {
    "http": integration_pb2.CONNECTOR_KIND_HTTP,
    "smtp": integration_pb2.CONNECTOR_KIND_SMTP,
    "webhook": integration_pb2.CONNECTOR_KIND_WEBHOOK,
    "mcp": integration_pb2.CONNECTOR_KIND_MCP,
}
_KIND_NAME = {number: name for name, number in _KIND.items()}
ConfigKey = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
Config = dict[ConfigKey, Annotated[str, Field(max_length=4096)]]
ConnectorId = Annotated[UUID, Path(alias="connectorId")]


def connector_stub(ctx: GatewayContext) -> integration_pb2_grpc.IntegrationServiceAsyncStub:
    return ctx.runtime.peers.stub(integration_pb2_grpc.IntegrationServiceStub)


class CreateConnector(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "CRM",
                    "kind": "http",
                    "config": {
                        "url": "https://crm.example.com/api",
                        "auth": "oauth2_client_credentials",
                        "token_url": "https://crm.example.com/oauth/token",
                        "client_id": "edrs",
                        "client_secret": "…",
                    },
                    "enabled": True,
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200, pattern=REQUIRED_LINE)
    kind: Kind
    config: Config = Field(
        default_factory=dict,
        max_length=50,
        description="Settings; keys naming a secret (token, secret, password, api_key, "
        "credential) are credentials, kept in the secret store and never shown again",
    )
    enabled: StrictBool = False


class UpdateConnector(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=REQUIRED_LINE)
    config: Config | None = Field(
        default=None,
        max_length=50,
        description="Merged into the settings; a credential key given here rotates it",
    )
    remove_keys: list[ConfigKey] = Field(default_factory=list, max_length=50)
    enabled: StrictBool | None = None


class ConnectorOut(ApiModel):
    id: UUID
    name: str
    kind: Kind
    config: dict[str, str] = Field(description="Credentials appear as `********`")
    enabled: bool
    inbound_path: str = Field(description="The connector's inbound webhook URL path")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: integration_pb2.Connector) -> ConnectorOut:
        return cls(
            id=UUID(c.id),
            name=c.name,
            kind=_KIND_NAME[c.kind],
            config=dict(c.config),
            enabled=c.enabled,
            inbound_path=c.inbound_path,
            created_at=c.create_time.ToDatetime(tzinfo=UTC),
            updated_at=c.update_time.ToDatetime(tzinfo=UTC),
        )


class ConnectorList(PageOf):
    connectors: list[ConnectorOut]


class ConnectionTest(ApiModel):
    ok: bool
    detail: str
    status_code: int
    latency_ms: int


_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}
_ONE = {**_ERRORS, **problem_responses(404)}


@router.post(
    "",
    response_model=ConnectorOut,
    status_code=201,
    summary="Create a connector",
    responses={**_ERRORS, **problem_responses(409)},
)
async def create_connector(
    body: CreateConnector, ctx: Ctx, caller: Annotated[Principal, Depends(write_connectors)]
) -> ConnectorOut:
    made = await connector_stub(ctx).CreateConnector(
        integration_pb2.CreateConnectorRequest(
            name=body.name.strip(), kind=_KIND[body.kind], config=body.config, enabled=body.enabled
        )
    )
    return ConnectorOut.of(made)


@router.get("", response_model=ConnectorList, summary="List connectors", responses=_ERRORS)
async def list_connectors(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_connectors)],
) -> ConnectorList:
    request = integration_pb2.ListConnectorsRequest()
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await connector_stub(ctx).ListConnectors(request)
    return ConnectorList(
        connectors=[ConnectorOut.of(c) for c in reply.connectors],
        next_page_token=reply.page.next_page_token,
    )


@router.get(
    "/{connectorId}", response_model=ConnectorOut, summary="Get a connector", responses=_ONE
)
async def get_connector(
    connector_id: ConnectorId, ctx: Ctx, caller: Annotated[Principal, Depends(read_connectors)]
) -> ConnectorOut:
    return ConnectorOut.of(
        await connector_stub(ctx).GetConnector(
            integration_pb2.GetConnectorRequest(id=str(connector_id))
        )
    )


@router.patch(
    "/{connectorId}",
    response_model=ConnectorOut,
    summary="Update a connector or rotate its credentials",
    responses={**_ONE, **problem_responses(409)},
)
async def update_connector(
    connector_id: ConnectorId,
    body: UpdateConnector,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_connectors)],
) -> ConnectorOut:
    mask = [
        name
        for name, value in (("name", body.name), ("config", body.config), ("enabled", body.enabled))
        if value is not None
    ]
    if body.remove_keys and "config" not in mask:
        mask.append("config")
    request = integration_pb2.UpdateConnectorRequest(
        id=str(connector_id),
        update_mask=mask,
        name=(body.name or "").strip(),
        config=body.config or {},
        enabled=bool(body.enabled),
        remove_keys=body.remove_keys,
    )
    return ConnectorOut.of(await connector_stub(ctx).UpdateConnector(request))


@router.delete(
    "/{connectorId}",
    status_code=204,
    response_class=Response,
    summary="Delete a connector and destroy its credentials",
    responses=_ONE,
)
async def delete_connector(
    connector_id: ConnectorId, ctx: Ctx, caller: Annotated[Principal, Depends(write_connectors)]
) -> Response:
    await connector_stub(ctx).DeleteConnector(
        integration_pb2.DeleteConnectorRequest(id=str(connector_id))
    )
    return Response(status_code=204)


@router.post(
    "/{connectorId}/test",
    response_model=ConnectionTest,
    summary="Test a connector's connection",
    description="A REST connector sends GET to its URL (and `test_path`) with its credentials; "
    "an SMTP connector connects and logs in. A failed test is `ok: false`, not an error.",
    responses={**_ONE, **problem_responses(409)},
)
async def test_connector(
    connector_id: ConnectorId, ctx: Ctx, caller: Annotated[Principal, Depends(write_connectors)]
) -> ConnectionTest:
    result = await connector_stub(ctx).TestConnector(
        integration_pb2.TestConnectorRequest(id=str(connector_id))
    )
    return ConnectionTest(
        ok=result.ok,
        detail=result.detail,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
    )
