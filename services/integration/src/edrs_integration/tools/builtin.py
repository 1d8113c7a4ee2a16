"""The built-in tools: knowledge search, create task, and an HTTP request through a connector.

Each calls the service that owns the work through `rt.peers` (the caller's identity, hence its
tenant, travels with the call). A built-in whose service lacks the RPC, or whose peer has no
address, is listed as unavailable with the reason instead of failing when called."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf.descriptor import FileDescriptor

from edrs_integration.tools.mcp import ToolAnswer
from edrs_integration.tools.schemas import ToolSpec

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CONNECTOR_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "method": {"type": "string", "enum": list(HTTP_METHODS)},
        "path": {
            "type": "string",
            "description": "Path under the connector's URL, starting with /",
            "pattern": "^/",
            "maxLength": 2000,
        },
        "query": {"type": "object", "additionalProperties": {"type": "string"}},
        "body": {"description": "JSON body (POST, PUT, PATCH)"},
    },
    "required": ["method", "path"],
    "additionalProperties": False,
}
NO_CONNECTOR_REQUESTS = (
    "requests through a connector are not available yet: the integration service has no "
    "connector request implementation wired (issue 12, connectors)"
)


class ConnectorRequests(Protocol):
    """Sends a request through one of the tenant's connectors (its URL, its credentials), through
    the outbound policy. The connectors' owner implements it; the tools only use it."""

    async def request(
        self,
        client_id: str,
        connector_id: UUID,
        *,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: Any,
        timeout_seconds: float,
    ) -> tuple[int, str]:
        """The response's status code and body text."""
        ...


def _has_rpc(file: FileDescriptor, service: str, method: str) -> bool:
    found = file.services_by_name.get(service)
    return found is not None and method in found.methods_by_name


@dataclass(frozen=True)
class _Builtin:
    spec: ToolSpec
    peer: str  # "" when the tool runs here
    rpc_present: bool
    rpc_label: str


class BuiltinTools:
    def __init__(
        self,
        knowledge: knowledge_pb2_grpc.KnowledgeServiceAsyncStub,
        tasks: task_pb2_grpc.TaskServiceAsyncStub,
        configured_peers: set[str],
        connector_requests: ConnectorRequests | None,
    ) -> None:
        self.knowledge = knowledge
        self.tasks = tasks
        self.configured_peers = configured_peers
        self.connector_requests = connector_requests
        self._tools = [
            _Builtin(
                ToolSpec(
                    name="knowledge_search",
                    description="Search the organisation's knowledge base (every collection); "
                    "returns the best matching passages with their document ids and pages.",
                    input_schema={
                        "type": "object",
                        "properties": {
                            "query": {"type": "string", "minLength": 1, "maxLength": 1000},
                            "limit": {"type": "integer", "minimum": 1, "maximum": 10},
                        },
                        "required": ["query"],
                        "additionalProperties": False,
                    },
                    impact="read",
                    source="builtin",
                ),
                "knowledge",
                _has_rpc(knowledge_pb2.DESCRIPTOR, "KnowledgeService", "Search"),
                "KnowledgeService.Search",
            ),
            _Builtin(
                ToolSpec(
                    name="create_task",
                    description="Create a task (a unit of work) with a title, a description "
                    "and a priority from 1 (highest) to 5.",
                    input_schema={
                        "type": "object",
                        "properties": {
                            "title": {"type": "string", "minLength": 1, "maxLength": 200},
                            "description": {"type": "string", "maxLength": 5000},
                            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                        },
                        "required": ["title"],
                        "additionalProperties": False,
                    },
                    impact="write",
                    source="builtin",
                ),
                "task",
                _has_rpc(task_pb2.DESCRIPTOR, "TaskService", "CreateTask"),
                "TaskService.CreateTask",
            ),
            _Builtin(
                ToolSpec(
                    name="http_request",
                    description="Send an HTTP request through one of the tenant's connectors, "
                    "named by `connector`; the connector supplies the base URL and credentials.",
                    input_schema={
                        **CONNECTOR_REQUEST_SCHEMA,
                        "properties": {
                            "connector": {"type": "string", "minLength": 1, "maxLength": 200},
                            **CONNECTOR_REQUEST_SCHEMA["properties"],
                        },
                        "required": ["connector", "method", "path"],
                    },
                    impact="write",
                    source="builtin",
                ),
                "",
                True,
                "",
            ),
        ]

    def _reason(self, tool: _Builtin) -> str:
        if not tool.rpc_present:
            return f"the {tool.peer} service does not offer {tool.rpc_label} yet"
        if tool.peer and tool.peer not in self.configured_peers:
            return (
                f"the {tool.peer} service is not configured here (EDRS_INTEGRATION_PEERS has no "
                f"address for {tool.peer})"
            )
        if tool.spec.name == "http_request" and self.connector_requests is None:
            return NO_CONNECTOR_REQUESTS
        return ""

    def specs(self) -> list[ToolSpec]:
        out = []
        for tool in self._tools:
            spec = tool.spec
            reason = self._reason(tool)
            out.append(ToolSpec(**{**spec.__dict__, "unavailable_reason": reason}))
        return out

    async def call(self, name: str, arguments: dict[str, Any], seconds: float) -> ToolAnswer:
        if name == "knowledge_search":
            found = await self.knowledge.Search(
                knowledge_pb2.SearchRequest(
                    query=arguments["query"], k=int(arguments.get("limit", 5))
                ),
                timeout=seconds,
            )
            hits = [
                {
                    "document_id": p.document_id,
                    "title": p.title,
                    "passage": p.text,
                    "page": p.citation.page,
                    "score": round(p.score, 4),
                }
                for p in found.passages
            ]
            text = "\n".join(f"[{h['document_id']}] {h['title']}: {h['passage']}" for h in hits)
            return ToolAnswer(
                content=text or "no passage matched", structured={"hits": hits}, is_error=False
            )
        if name == "create_task":
            task = await self.tasks.CreateTask(
                task_pb2.CreateTaskRequest(
                    title=arguments["title"],
                    description=arguments.get("description", ""),
                    priority=int(arguments.get("priority", 0)),
                ),
                timeout=seconds,
            )
            return ToolAnswer(
                content=f"created task {task.id}: {task.title}",
                structured={"task_id": task.id, "title": task.title},
                is_error=False,
            )
        raise AssertionError(f"built-in {name} is dispatched elsewhere")


async def connector_request(
    requests: ConnectorRequests,
    client_id: str,
    connector_id: UUID,
    arguments: dict[str, Any],
    seconds: float,
) -> ToolAnswer:
    status, body = await requests.request(
        client_id,
        connector_id,
        method=arguments["method"],
        path=arguments["path"],
        query=arguments.get("query") or {},
        body=arguments.get("body"),
        timeout_seconds=seconds,
    )
    return ToolAnswer(
        content=f"HTTP {status}\n{body}",
        structured={"status": status, "body": _maybe_json(body)},
        is_error=status >= 400,
    )


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
