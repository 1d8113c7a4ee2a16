"""EDRS as an MCP server: `/api/v1/mcp`, streamable HTTP (the official `mcp` SDK, stateless, JSON
answers), for other agents and desktop assistants (docs/integration.md, "EDRS as an MCP server").

Authentication is an EDRS API key as the bearer token (`Authorization: Bearer edrs_...`), checked
on every request by the authentication middleware as `POST /api/v1/auth/token` checks it (so rate
limits and DLP apply per tenant as for any route); each tool then runs as that key — its
tenant, its role and scopes, its fleet identity on every call to a service — exactly as the REST
route doing the same thing would."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from edrs_core import ServiceError
from edrs_core.context import acting_as, client_id_var
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from edrs_gateway.api.turns import user_id_of
from edrs_gateway.auth.dependencies import may
from edrs_gateway.auth.middleware import AUTH_ERROR, PRINCIPAL
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import GatewayContext

log = logging.getLogger("edrs.gateway.mcp")

PRINCIPAL_KEY = "mcp_principal"
MAX_MESSAGE = 20_000
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


def _principal(ctx: Context[Any, Any]) -> Principal:
    request = ctx.request_context.request
    principal = getattr(request, "scope", {}).get(PRINCIPAL_KEY) if request is not None else None
    if not isinstance(principal, Principal):
        raise ToolError("not authenticated")  # the endpoint refuses such requests first
    return principal


def _allowed(principal: Principal, permission: Permission, what: str) -> None:
    if not may(principal, permission):
        raise ToolError(
            f"this API key may not {what}: its role {principal.role!r} (or its scopes) lacks "
            f"{permission.value}"
        )


def _unavailable(service: str, exc: ServiceError) -> ToolError:
    return ToolError(f"the {service} service could not do it: {exc.details}")


class EdrsMcp:
    """The MCP server and its HTTP endpoint; `close()` stops its session manager."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.server = MCPServer(
            "edrs",
            instructions="EDRS: ask the tenant's AI personas, search its knowledge, create tasks.",
        )
        self._register()
        self.manager = StreamableHTTPSessionManager(
            app=self.server._lowlevel_server,
            stateless=True,
            json_response=True,
            # The gateway sits behind its own host checks; clients name it by any host.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self._running: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    def _peers(self) -> set[str]:
        return set(self.ctx.runtime.peers.peers)

    def _register(self) -> None:
        server = self.server

        @server.tool(
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False),
            description="Send a message to one of the tenant's personas (by id or name) and get "
            "its reply. Give the same conversation_id to continue a conversation.",
        )
        async def ask_persona(
            persona: str,
            message: str,
            conversation_id: str = "",
            ctx: Context[Any, Any] = None,  # type: ignore[assignment]
        ) -> dict[str, Any]:
            principal = _principal(ctx)
            _allowed(principal, Permission.CONVERSE, "talk to personas")
            if not message.strip() or len(message) > MAX_MESSAGE:
                raise ToolError(f"message must be 1..{MAX_MESSAGE} characters")
            conversation = conversation_id or f"mcp-{uuid.uuid4().hex[:16]}"
            async with self._as(principal):
                stub = self.ctx.runtime.peers.stub(persona_pb2_grpc.PersonaServiceStub)
                try:
                    persona_id = await self._persona_id(stub, persona)
                    request = persona_pb2.ConverseRequest(
                        persona_id=persona_id,
                        conversation_id=conversation,
                        user_id=user_id_of(principal),
                        text=message,
                    )
                    completed = None
                    async for event in stub.Converse(
                        request, timeout=self.ctx.settings.turn_timeout_seconds
                    ):
                        if event.HasField("completed"):
                            completed = event.completed
                except ServiceError as exc:
                    raise _unavailable("persona", exc) from None
            if completed is None:
                raise ToolError("the persona service ended the turn without a reply")
            return {
                "reply": completed.reply,
                "conversation_id": conversation,
                "persona_id": persona_id,
                "trace_id": completed.trace_id,
            }

        @server.tool(
            annotations=ToolAnnotations(read_only_hint=True),
            description="Search the tenant's knowledge base; returns the best passages with "
            "their documents and citations.",
        )
        async def search_knowledge(
            query: str,
            limit: int = 5,
            ctx: Context[Any, Any] = None,  # type: ignore[assignment]
        ) -> dict[str, Any]:
            principal = _principal(ctx)
            _allowed(principal, Permission.PERSONAS_READ, "read the tenant's knowledge")
            if "knowledge" not in self._peers():
                raise ToolError("knowledge search is not available: this gateway has no address "
                                "for the knowledge service")  # fmt: skip
            if not query.strip() or not 1 <= limit <= 50:
                raise ToolError("query is required and limit must be 1..50")
            async with self._as(principal):
                stub = self.ctx.runtime.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub)
                try:
                    found = await stub.Search(knowledge_pb2.SearchRequest(query=query, k=limit))
                except ServiceError as exc:
                    raise _unavailable("knowledge", exc) from None
            return {
                "passages": [
                    {
                        "document_id": p.document_id,
                        "title": p.title,
                        "source": p.source,
                        "text": p.text,
                        "score": p.score,
                    }
                    for p in found.passages
                ]
            }

        @server.tool(
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False),
            description="Create a task for the tenant's personas: a title, an optional "
            "description, a priority from 1 (highest) to 5.",
        )
        async def create_task(
            title: str,
            description: str = "",
            priority: int = 3,
            ctx: Context[Any, Any] = None,  # type: ignore[assignment]
        ) -> dict[str, Any]:
            principal = _principal(ctx)
            _allowed(principal, Permission.TASKS_WRITE, "create tasks")
            if "task" not in self._peers():
                raise ToolError("creating tasks is not available: this gateway has no address for "
                                "the task service")  # fmt: skip
            async with self._as(principal):
                stub = self.ctx.runtime.peers.stub(task_pb2_grpc.TaskServiceStub)
                try:
                    task = await stub.CreateTask(
                        task_pb2.CreateTaskRequest(
                            title=title, description=description, priority=priority
                        )
                    )
                except ServiceError as exc:
                    raise _unavailable("task", exc) from None
            return {"task_id": task.id, "title": task.title}

    async def _persona_id(self, stub: persona_pb2_grpc.PersonaServiceAsyncStub, name: str) -> str:
        if _UUID.match(name):
            return name
        token = ""
        while True:
            page = await stub.ListPersonas(
                persona_pb2.ListPersonasRequest(
                    page={"page_size": 100, "page_token": token}  # type: ignore[arg-type]
                )
            )
            for p in page.personas:
                if p.name.lower() == name.strip().lower():
                    return p.id
            token = page.page.next_page_token
            if not token:
                raise ToolError(f"no persona named {name[:100]!r} in this tenant")

    @contextlib.asynccontextmanager
    async def _as(self, principal: Principal) -> AsyncIterator[None]:
        """Calls made inside carry the key's tenant and fleet identity."""
        identity = await self.ctx.fleet_tokens.for_principal(principal)
        token = client_id_var.set(principal.tenant_id)
        try:
            with acting_as(identity):
                yield
        finally:
            client_id_var.reset(token)

    async def _run(self) -> None:
        async with self.manager.run():
            self._ready.set()
            await self._stop.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # The authentication middleware took the API key (api_key_paths) and bound its identity.
        principal = scope.get("state", {}).get(PRINCIPAL)
        if not isinstance(principal, Principal):
            response = JSONResponse(
                {
                    "type": "about:blank",
                    "title": "Unauthorized",
                    "status": 401,
                    "code": "unauthenticated",
                    "detail": scope.get("state", {}).get(AUTH_ERROR)
                    or "this endpoint needs an EDRS API key: Authorization: Bearer <key>",
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
                media_type="application/problem+json",
            )
            await response(scope, receive, send)
            return
        if self._running is None:
            self._running = asyncio.create_task(self._run(), name="edrs-mcp-sessions")
        await self._ready.wait()
        scope[PRINCIPAL_KEY] = principal
        await self.manager.handle_request(scope, receive, send)

    async def close(self) -> None:
        self._stop.set()
        if self._running is not None:
            await asyncio.wait_for(self._running, 10)
