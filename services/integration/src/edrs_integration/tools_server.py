"""The ToolService gRPC servicer (protos/edrs/integration/v1/tools.proto): the caller's tenant's
MCP servers and tools, and tool calls."""

from __future__ import annotations

import json

from edrs_core import InvalidArgument, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc

from edrs_integration.store.tools import McpServerRecord
from edrs_integration.tools.registry import REDACTED, ToolRegistry
from edrs_integration.tools.schemas import TOOL_NAME, ToolSpec

IMPACT_TO_PROTO = {
    "read": tools_pb2.TOOL_IMPACT_READ,
    "write": tools_pb2.TOOL_IMPACT_WRITE,
    "destructive": tools_pb2.TOOL_IMPACT_DESTRUCTIVE,
}
IMPACT_FROM_PROTO = {number: name for name, number in IMPACT_TO_PROTO.items()}
_SOURCE_TO_PROTO = {
    "builtin": tools_pb2.TOOL_SOURCE_BUILTIN,
    "connector": tools_pb2.TOOL_SOURCE_CONNECTOR,
    "mcp": tools_pb2.TOOL_SOURCE_MCP,
}
_TRANSPORT_TO_PROTO = {
    "stdio": tools_pb2.MCP_TRANSPORT_STDIO,
    "http": tools_pb2.MCP_TRANSPORT_HTTP,
}
_TRANSPORT_FROM_PROTO = {number: name for name, number in _TRANSPORT_TO_PROTO.items()}
MAX_NAMES = 100


def tool_to_proto(spec: ToolSpec) -> tools_pb2.Tool:
    return tools_pb2.Tool(
        name=spec.name,
        description=spec.description,
        input_schema=json.dumps(spec.input_schema, sort_keys=True),
        impact=IMPACT_TO_PROTO[spec.impact],
        source=_SOURCE_TO_PROTO[spec.source],
        mcp_server_id=spec.mcp_server_id,
        remote_name=spec.remote_name,
        connector_id=spec.connector_id,
        available=spec.available,
        unavailable_reason=spec.unavailable_reason,
    )


def server_to_proto(s: McpServerRecord) -> tools_pb2.McpServer:
    return tools_pb2.McpServer(
        id=str(s.id),
        name=s.name,
        transport=_TRANSPORT_TO_PROTO[s.transport],
        command=s.command,
        args=list(s.args),
        url=s.url,
        call_timeout_seconds=s.call_timeout_seconds,
        tools=[
            tool_to_proto(
                ToolSpec(
                    name=t.name,
                    description=t.description,
                    input_schema=t.input_schema,
                    impact=t.impact,
                    source="mcp",
                    mcp_server_id=str(s.id),
                    remote_name=t.remote_name,
                )
            )
            for t in s.tools
        ],
        create_time=timestamp(s.created_at),
        refresh_time=timestamp(s.refreshed_at),
        last_error=s.last_error,
        # Names only: the values stay in the secret store.
        headers=dict.fromkeys(s.header_names, REDACTED),
        env=dict.fromkeys(s.env_names, REDACTED),
    )


def _tool_name(value: str, field: str = "name") -> str:
    if not TOOL_NAME.match(value):
        raise InvalidArgument(
            f"{field} must be 1..64 characters of A-Z, a-z, 0-9, '_' and '-', got {value[:80]!r}",
            field=field,
        )
    return value


class ToolServicer(tools_pb2_grpc.ToolServiceServicer):
    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    async def CreateMcpServer(  # noqa: N802 (gRPC method name)
        self, request: tools_pb2.CreateMcpServerRequest, context: ServicerContext
    ) -> tools_pb2.McpServer:
        client_id = require_client_id()
        transport = validation.enum_value(
            request.transport, "transport", _TRANSPORT_FROM_PROTO, tools_pb2.McpTransport
        )
        new = self.registry.check_new_server(
            name=request.name,
            transport=transport,
            command=request.command,
            args=list(request.args),
            url=request.url,
            call_timeout_seconds=request.call_timeout_seconds,
            headers=dict(request.headers),
            env=dict(request.env),
        )
        return server_to_proto(await self.registry.add_server(client_id, new))

    async def UpdateMcpServerCredentials(  # noqa: N802
        self, request: tools_pb2.UpdateMcpServerCredentialsRequest, context: ServicerContext
    ) -> tools_pb2.McpServer:
        client_id = require_client_id()
        server = await self.registry.rotate_credentials(
            client_id, parse_id(request.id), dict(request.headers), dict(request.env)
        )
        return server_to_proto(server)

    async def GetMcpServer(  # noqa: N802
        self, request: tools_pb2.GetMcpServerRequest, context: ServicerContext
    ) -> tools_pb2.McpServer:
        client_id = require_client_id()
        return server_to_proto(await self.registry.get_server(client_id, parse_id(request.id)))

    async def ListMcpServers(  # noqa: N802
        self, request: tools_pb2.ListMcpServersRequest, context: ServicerContext
    ) -> tools_pb2.ListMcpServersResponse:
        client_id = require_client_id()
        servers, token = await self.registry.store.list_servers(
            client_id, request.page.page_token, request.page.page_size
        )
        return tools_pb2.ListMcpServersResponse(
            mcp_servers=[server_to_proto(s) for s in servers],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def RefreshMcpServer(  # noqa: N802
        self, request: tools_pb2.RefreshMcpServerRequest, context: ServicerContext
    ) -> tools_pb2.McpServer:
        client_id = require_client_id()
        return server_to_proto(await self.registry.refresh_server(client_id, parse_id(request.id)))

    async def DeleteMcpServer(  # noqa: N802
        self, request: tools_pb2.DeleteMcpServerRequest, context: ServicerContext
    ) -> tools_pb2.DeleteMcpServerResponse:
        client_id = require_client_id()
        deleted = await self.registry.delete_server(client_id, parse_id(request.id))
        return tools_pb2.DeleteMcpServerResponse(tools_deleted=deleted)

    async def ListTools(  # noqa: N802
        self, request: tools_pb2.ListToolsRequest, context: ServicerContext
    ) -> tools_pb2.ListToolsResponse:
        client_id = require_client_id()
        if len(request.names) > MAX_NAMES:
            raise InvalidArgument(
                f"names has {len(request.names)} items; the limit is {MAX_NAMES}", field="names"
            )
        wanted = {_tool_name(n, f"names[{i}]") for i, n in enumerate(request.names)}
        specs = await self.registry.tools(client_id)
        return tools_pb2.ListToolsResponse(
            tools=[tool_to_proto(s) for s in specs if not wanted or s.name in wanted]
        )

    async def GetTool(  # noqa: N802
        self, request: tools_pb2.GetToolRequest, context: ServicerContext
    ) -> tools_pb2.Tool:
        client_id = require_client_id()
        return tool_to_proto(await self.registry.tool(client_id, _tool_name(request.id, "id")))

    async def UpdateTool(  # noqa: N802
        self, request: tools_pb2.UpdateToolRequest, context: ServicerContext
    ) -> tools_pb2.Tool:
        client_id = require_client_id()
        impact = validation.enum_value(
            request.impact, "impact", IMPACT_FROM_PROTO, tools_pb2.ToolImpact
        )
        spec = await self.registry.set_impact(client_id, _tool_name(request.name), impact)
        return tool_to_proto(spec)

    async def CallTool(  # noqa: N802
        self, request: tools_pb2.CallToolRequest, context: ServicerContext
    ) -> tools_pb2.CallToolResponse:
        client_id = require_client_id()
        name = _tool_name(request.name)
        timeout = validation.float_range(
            request.timeout_seconds, "timeout_seconds", low=0.0, high=600.0
        )
        key = validation.text(
            request.idempotency_key, "idempotency_key", max_length=200, required=False
        )
        result = await self.registry.call(client_id, name, request.arguments, timeout, key)
        answer = result.answer
        return tools_pb2.CallToolResponse(
            name=name,
            content=answer.content,
            structured=json.dumps(answer.structured) if answer.structured is not None else "",
            is_error=answer.is_error,
            impact=IMPACT_TO_PROTO[result.impact],
            duration_ms=result.duration_ms,
        )
