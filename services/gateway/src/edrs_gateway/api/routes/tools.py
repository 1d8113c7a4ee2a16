"""`/api/v1/tools` and `/api/v1/mcp-servers`: the tenant's tool registry and MCP servers, served by
the integration service's ToolService (docs/integration.md, "Tools")."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc
from fastapi import APIRouter, Depends, Path, Response
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field, JsonValue, model_validator

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import ApiModel, PageOf
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(tags=["tools"])

read_tools = require(Permission.TOOLS_READ)
write_tools = require(Permission.TOOLS_WRITE)
call_tools = require(Permission.TOOLS_CALL)

Impact = Literal["read", "write", "destructive"]
_IMPACT: dict[Impact, tools_pb2.ToolImpact.ValueType] = {
    "read": tools_pb2.TOOL_IMPACT_READ,
    "write": tools_pb2.TOOL_IMPACT_WRITE,
    "destructive": tools_pb2.TOOL_IMPACT_DESTRUCTIVE,
}
_IMPACT_NAME = {number: name for name, number in _IMPACT.items()}
_SOURCE = {
    tools_pb2.TOOL_SOURCE_BUILTIN: "builtin",
    tools_pb2.TOOL_SOURCE_CONNECTOR: "connector",
    tools_pb2.TOOL_SOURCE_MCP: "mcp",
}
Transport = Literal["stdio", "http"]
_TRANSPORT: dict[Transport, tools_pb2.McpTransport.ValueType] = {
    "stdio": tools_pb2.MCP_TRANSPORT_STDIO,
    "http": tools_pb2.MCP_TRANSPORT_HTTP,
}
_TRANSPORT_NAME = {number: name for name, number in _TRANSPORT.items()}
TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


class ToolOut(ApiModel):
    name: str = Field(description="Unique in the tenant; what personas list in `tools`")
    description: str
    input_schema: dict[str, JsonValue] = Field(description="JSON Schema of the arguments")
    impact: Impact
    source: Literal["builtin", "connector", "mcp"]
    mcp_server_id: UUID | None
    remote_name: str = Field(description="MCP tools: the tool's name on its server")
    connector_id: UUID | None
    available: bool
    unavailable_reason: str

    @classmethod
    def of(cls, t: tools_pb2.Tool) -> ToolOut:
        return cls(
            name=t.name,
            description=t.description,
            input_schema=json.loads(t.input_schema or "{}"),
            impact=_IMPACT_NAME[t.impact],
            source=_SOURCE[t.source],  # type: ignore[arg-type]
            mcp_server_id=UUID(t.mcp_server_id) if t.mcp_server_id else None,
            remote_name=t.remote_name,
            connector_id=UUID(t.connector_id) if t.connector_id else None,
            available=t.available,
            unavailable_reason=t.unavailable_reason,
        )


class ToolList(ApiModel):
    tools: list[ToolOut]


class UpdateTool(ApiModel):
    impact: Impact = Field(description="The operator's judgement over the server's hints")


class CallTool(ApiModel):
    arguments: dict[str, JsonValue] = Field(
        default_factory=dict, description="Checked against the tool's schema"
    )
    timeout_seconds: float = Field(
        default=0, ge=0, le=600, description="0: the tool's own limit, which no call exceeds"
    )


class ToolCallOut(ApiModel):
    tool: str
    content: str = Field(description="The result as text")
    structured: JsonValue = Field(description="The structured result, when the tool gave one")
    is_error: bool = Field(description="The tool ran and reported a failure")
    impact: Impact
    duration_ms: float


class CreateMcpServer(ApiModel):
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
        description="Prefix of its tools' names (`<name>__<tool>`); no `__`",
    )
    transport: Transport
    command: str = Field(
        default="",
        max_length=1000,
        description="stdio: an executable the operator allows (EDRS_INTEGRATION_MCP_STDIO_COMMANDS)",
    )
    args: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=50)
    url: str = Field(default="", max_length=2000, description="http: the streamable HTTP endpoint")
    call_timeout_seconds: float = Field(
        default=0, ge=0, le=600, description="Longest call of one of its tools; 0: the default"
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        description="http: credentials sent as headers on every request (name: value, e.g. "
        '`{"Authorization": "Bearer ..."}`). Names are RFC 7230 tokens; hop-by-hop headers, '
        "`Host`, `Content-Length` and the headers MCP sets are refused. Values go to the secret "
        'store and are answered as `"********"`.',
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        max_length=50,
        description="stdio: credentials set in the process's environment (name: value). Names "
        "are `[A-Z_][A-Z0-9_]*`, never one of the minimal environment (`PATH`, `HOME`, ...) nor "
        "one that changes what a program loads (`LD_*`, ...). Values go to the secret store and "
        'are answered as `"********"`.',
    )

    @model_validator(mode="after")
    def _fits_the_transport(self) -> CreateMcpServer:
        if self.transport == "stdio" and (self.url or not self.command or self.headers):
            raise ValueError("a stdio server has a command (and args, env), not a url or headers")
        if self.transport == "http" and (self.command or self.args or not self.url or self.env):
            raise ValueError("an http server has a url (and headers), not a command or env")
        return self


class McpServerCredentials(ApiModel):
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        description="http: the complete new set of credential headers (the rules of adding); "
        '`"********"` keeps the stored value of that name; a name left out is removed',
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        max_length=50,
        description="stdio: the complete new set of credential variables (the rules of adding); "
        '`"********"` keeps the stored value of that name; a name left out is removed',
    )


class McpServerOut(ApiModel):
    id: UUID
    name: str
    transport: Transport
    command: str
    args: list[str]
    url: str
    call_timeout_seconds: float
    tools: list[ToolOut]
    created_at: datetime
    refreshed_at: datetime
    last_error: str = Field(description="The last failure to reach it; empty when it worked")
    headers: dict[str, str] = Field(
        description='http: the names of its credential headers; every value is `"********"`'
    )
    env: dict[str, str] = Field(
        description='stdio: the names of its credential variables; every value is `"********"`'
    )

    @classmethod
    def of(cls, s: tools_pb2.McpServer) -> McpServerOut:
        return cls(
            id=UUID(s.id),
            name=s.name,
            transport=_TRANSPORT_NAME[s.transport],
            command=s.command,
            args=list(s.args),
            url=s.url,
            call_timeout_seconds=s.call_timeout_seconds,
            tools=[ToolOut.of(t) for t in s.tools],
            created_at=_time(s.create_time),
            refreshed_at=_time(s.refresh_time),
            last_error=s.last_error,
            headers=dict(s.headers),
            env=dict(s.env),
        )


class McpServerPage(PageOf):
    mcp_servers: list[McpServerOut]


def tool_stub(ctx: GatewayContext) -> tools_pb2_grpc.ToolServiceAsyncStub:
    return ctx.runtime.peers.stub(tools_pb2_grpc.ToolServiceStub)


ToolNameParam = Annotated[str, Path(alias="toolName", pattern=TOOL_NAME)]
ServerId = Annotated[UUID, Path(alias="serverId")]
_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}


@router.get(
    "/tools",
    response_model=ToolList,
    summary="List tools",
    description="Every tool of the tenant (built-in, connector and MCP tools) with its argument "
    "schema, impact and availability.",
    responses=_ERRORS,
)
async def list_tools(ctx: Ctx, caller: Annotated[Principal, Depends(read_tools)]) -> ToolList:
    reply = await tool_stub(ctx).ListTools(tools_pb2.ListToolsRequest())
    return ToolList(tools=[ToolOut.of(t) for t in reply.tools])


@router.get(
    "/tools/{toolName}",
    response_model=ToolOut,
    summary="Get a tool",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_tool(
    tool_name: ToolNameParam, ctx: Ctx, caller: Annotated[Principal, Depends(read_tools)]
) -> ToolOut:
    return ToolOut.of(await tool_stub(ctx).GetTool(tools_pb2.GetToolRequest(id=tool_name)))


@router.patch(
    "/tools/{toolName}",
    response_model=ToolOut,
    summary="Change a tool's impact",
    description="MCP tools only: built-in and connector tools have a fixed impact (409).",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def update_tool(
    tool_name: ToolNameParam,
    body: UpdateTool,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_tools)],
) -> ToolOut:
    updated = await tool_stub(ctx).UpdateTool(
        tools_pb2.UpdateToolRequest(name=tool_name, impact=_IMPACT[body.impact])
    )
    return ToolOut.of(updated)


@router.post(
    "/tools/{toolName}/calls",
    response_model=ToolCallOut,
    summary="Call a tool",
    description="Runs the tool now, as the caller, outside any persona's policy (so only "
    "administrators may). 422 when the arguments do not match its schema; 409 when it is "
    "unavailable; 504 when it does not answer within its timeout.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def call_tool(
    tool_name: ToolNameParam,
    body: CallTool,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(call_tools)],
) -> ToolCallOut:
    answer = await tool_stub(ctx).CallTool(
        tools_pb2.CallToolRequest(
            name=tool_name,
            arguments=json.dumps(body.arguments),
            timeout_seconds=body.timeout_seconds,
        ),
        timeout=(body.timeout_seconds or 600) + 5,
    )
    return ToolCallOut(
        tool=answer.name,
        content=answer.content,
        structured=json.loads(answer.structured) if answer.structured else None,
        is_error=answer.is_error,
        impact=_IMPACT_NAME[answer.impact],
        duration_ms=answer.duration_ms,
    )


@router.get(
    "/mcp-servers",
    response_model=McpServerPage,
    summary="List MCP servers",
    responses=_ERRORS,
)
async def list_mcp_servers(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_tools)],
) -> McpServerPage:
    request = tools_pb2.ListMcpServersRequest()
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await tool_stub(ctx).ListMcpServers(request)
    return McpServerPage(
        mcp_servers=[McpServerOut.of(s) for s in reply.mcp_servers],
        next_page_token=reply.page.next_page_token,
    )


@router.post(
    "/mcp-servers",
    status_code=201,
    response_model=McpServerOut,
    summary="Add an MCP server",
    description="Connects to it, lists its tools and stores them. 422 for a URL the outbound "
    "policy refuses or a command the operator does not allow; 409 when a server of that name "
    "exists, or when it cannot be reached (nothing is stored then).",
    responses={**_ERRORS, **problem_responses(409)},
)
async def create_mcp_server(
    body: CreateMcpServer, ctx: Ctx, caller: Annotated[Principal, Depends(write_tools)]
) -> McpServerOut:
    created = await tool_stub(ctx).CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name=body.name,
            transport=_TRANSPORT[body.transport],
            command=body.command,
            args=body.args,
            url=body.url,
            call_timeout_seconds=body.call_timeout_seconds,
            headers=body.headers,
            env=body.env,
        ),
        timeout=60,
    )
    return McpServerOut.of(created)


@router.get(
    "/mcp-servers/{serverId}",
    response_model=McpServerOut,
    summary="Get an MCP server",
    responses={**_ERRORS, **problem_responses(404)},
)
async def get_mcp_server(
    server_id: ServerId, ctx: Ctx, caller: Annotated[Principal, Depends(read_tools)]
) -> McpServerOut:
    found = await tool_stub(ctx).GetMcpServer(tools_pb2.GetMcpServerRequest(id=str(server_id)))
    return McpServerOut.of(found)


@router.post(
    "/mcp-servers/{serverId}/refresh",
    response_model=McpServerOut,
    summary="Refresh an MCP server's tools",
    description="Lists its tools again; impacts set by an operator are kept. 409 when it cannot "
    "be reached (its stored tools stay).",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def refresh_mcp_server(
    server_id: ServerId, ctx: Ctx, caller: Annotated[Principal, Depends(write_tools)]
) -> McpServerOut:
    refreshed = await tool_stub(ctx).RefreshMcpServer(
        tools_pb2.RefreshMcpServerRequest(id=str(server_id)), timeout=60
    )
    return McpServerOut.of(refreshed)


@router.put(
    "/mcp-servers/{serverId}/credentials",
    response_model=McpServerOut,
    summary="Replace an MCP server's credentials",
    description="Rotation: the body is the complete new set (`headers` for an http server, "
    '`env` for a stdio one; `"********"` keeps a stored value). Connects with it and lists the '
    "tools first: 409 when that fails, and nothing changes then; on success its tools are "
    "refreshed and its session uses the new set. The values go to the secret store; the answer "
    "shows names only.",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def replace_mcp_server_credentials(
    server_id: ServerId,
    body: McpServerCredentials,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_tools)],
) -> McpServerOut:
    updated = await tool_stub(ctx).UpdateMcpServerCredentials(
        tools_pb2.UpdateMcpServerCredentialsRequest(
            id=str(server_id), headers=body.headers, env=body.env
        ),
        timeout=60,
    )
    return McpServerOut.of(updated)


@router.delete(
    "/mcp-servers/{serverId}",
    status_code=204,
    response_class=Response,
    summary="Remove an MCP server",
    description="Its tools go with it, and its session (and process) ends.",
    responses={**_ERRORS, **problem_responses(404)},
)
async def delete_mcp_server(
    server_id: ServerId, ctx: Ctx, caller: Annotated[Principal, Depends(write_tools)]
) -> Response:
    await tool_stub(ctx).DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(id=str(server_id)))
    return Response(status_code=204)
