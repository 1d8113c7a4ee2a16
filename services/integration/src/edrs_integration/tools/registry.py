"""A tenant's tool registry: built-in tools, tools of its connectors and tools of its MCP servers,
each with an argument schema and an impact level; adding MCP servers; calling any tool."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import grpc
from edrs_core import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    validation,
)
from edrs_core.context import identity_var
from edrs_core.outbound import OutboundPolicy

from edrs_integration.connectors import http_url
from edrs_integration.store import Connector, ConnectorStore
from edrs_integration.store.tools import (
    KeyedCall,
    McpCredentials,
    McpServerRecord,
    NewMcpServer,
    StoredTool,
    ToolCalled,
    ToolStore,
)
from edrs_integration.tools.builtin import (
    CONNECTOR_REQUEST_SCHEMA,
    NO_CONNECTOR_REQUESTS,
    BuiltinTools,
    ConnectorRequests,
    connector_request,
)
from edrs_integration.tools.mcp import McpConnection, McpConnections, McpEndpoint, ToolAnswer
from edrs_integration.tools.mcp_credentials import check_env, check_headers
from edrs_integration.tools.schemas import (
    SEPARATOR,
    SERVER_NAME,
    ToolSpec,
    check_schema,
    impact_of_hints,
    parse_arguments,
    tool_name,
    validate_arguments,
)

log = logging.getLogger("edrs.integration.tools")

# How answers show a credential's value; sent back, it keeps the stored value.
REDACTED = "********"

MAX_ARGS = 50
MAX_ARG_CHARS = 1_000
MAX_TIMEOUT = 600.0
_CONNECTOR_SLUG = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True)
class ToolLimits:
    stdio_commands: tuple[str, ...]
    call_timeout: float
    result_max_chars: int


@dataclass(frozen=True)
class CallResult:
    impact: str
    answer: ToolAnswer
    duration_ms: float
    # A repeat of a keyed call: the first call's answer, the tool not run again.
    replayed: bool = False


# A keyed call still running this long after the longest time limit is taken as lost.
STALE_MARGIN_SECONDS = 60.0


class _ReplayedError(ServiceError):
    """The first keyed call's error, answered again with its status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def arguments_digest(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(call: KeyedCall, name: str, digest: str) -> CallResult:
    if call.name != name or call.arguments_sha256 != digest:
        raise FailedPrecondition(
            "idempotency_key was already used for another call "
            + ("(other arguments)" if call.name == name else f"(tool {call.name})"),
            field="idempotency_key",
        )
    if call.state == "running":
        if call.stale:
            raise FailedPrecondition(
                "the call with this idempotency_key did not finish (the service stopped during "
                "it): its outcome is unknown, and it is not run again",
                field="idempotency_key",
            )
        raise Aborted("the call with this idempotency_key is still running; retry later")
    if call.state == "failed":
        raise _ReplayedError(grpc.StatusCode[call.error_code], call.error_message)
    return CallResult(
        call.impact,
        ToolAnswer(content=call.content, structured=call.structured, is_error=call.is_error),
        call.duration_ms,
        replayed=True,
    )


def _called(
    spec: ToolSpec,
    key: str,
    duration_ms: float,
    *,
    answer: ToolAnswer | None = None,
    error: ServiceError | None = None,
) -> ToolCalled:
    """`integration.tool_called` of a call that ran: who, which tool, how it ended, how long —
    never the arguments nor the result."""
    identity = identity_var.get()
    if error is not None:
        timed_out = error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        outcome, code = ("timed_out" if timed_out else "failed"), error.code.name
    else:
        outcome, code = "completed", ""
    return ToolCalled(
        name=spec.name,
        source=spec.source,
        impact=spec.impact,
        outcome=outcome,
        duration_ms=duration_ms,
        server_id=spec.mcp_server_id,
        connector_id=spec.connector_id,
        is_error=answer.is_error if answer is not None else False,
        error_code=code,
        idempotency_key=key,
        caller=identity.subject if identity is not None else "",
    )


def endpoint_of(server: NewMcpServer) -> McpEndpoint:
    return McpEndpoint(
        transport=server.transport,
        command=server.command,
        args=server.args,
        url=server.url,
        header_names=server.header_names,
        env_names=server.env_names,
        secret_version=server.secret_version if isinstance(server, McpServerRecord) else None,
    )


def _kept(given: dict[str, str], stored: Mapping[str, str], field: str) -> dict[str, str]:
    """`given` with each `REDACTED` value replaced by the stored value of that name."""
    kept = dict(given)
    for name, value in given.items():
        if value != REDACTED:
            continue
        if name not in stored:
            raise InvalidArgument(
                f"{field}[{name[:100]!r}]: {REDACTED!r} keeps a stored value, and the server has "
                "none of that name",
                field=field,
            )
        kept[name] = stored[name]
    return kept


def connector_tool_name(connector: Connector) -> str:
    slug = _CONNECTOR_SLUG.sub("_", connector.name.lower()).strip("_") or "connector"
    return f"connector{SEPARATOR}{slug}"[:64]


class ToolRegistry:
    def __init__(
        self,
        store: ToolStore,
        connectors: ConnectorStore,
        connections: McpConnections,
        builtins: BuiltinTools,
        outbound: OutboundPolicy,
        limits: ToolLimits,
        connector_requests: ConnectorRequests | None = None,
    ) -> None:
        self.store = store
        self.connectors = connectors
        self.connections = connections
        self.builtins = builtins
        self.outbound = outbound
        self.limits = limits
        self.connector_requests = connector_requests

    # MCP servers

    def check_new_server(
        self,
        *,
        name: str,
        transport: str,
        command: str,
        args: list[str],
        url: str,
        call_timeout_seconds: float,
        headers: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> NewMcpServer:
        if not SERVER_NAME.match(name) or SEPARATOR in name:
            raise InvalidArgument(
                "name must be 1..40 characters of a-z, 0-9, '_' and '-', starting with a letter "
                f"or digit and without '__' (it prefixes its tools' names), got {name[:60]!r}",
                field="name",
            )
        timeout = call_timeout_seconds or self.limits.call_timeout
        validation.float_range(timeout, "call_timeout_seconds", low=1.0, high=MAX_TIMEOUT)
        if transport == "stdio":
            if url:
                raise InvalidArgument("url is for HTTP servers; a stdio server has a command")
            if command not in self.limits.stdio_commands:
                allowed = ", ".join(self.limits.stdio_commands) or "none"
                raise InvalidArgument(
                    f"command {command[:200]!r} is not one the operator allows to run as an MCP "
                    f"server on the integration host (EDRS_INTEGRATION_MCP_STDIO_COMMANDS; "
                    f"allowed: {allowed})",
                    field="command",
                )
            if len(args) > MAX_ARGS:
                raise InvalidArgument(
                    f"args has {len(args)} items; the limit is {MAX_ARGS}", field="args"
                )
            for i, arg in enumerate(args):
                if len(arg) > MAX_ARG_CHARS or "\x00" in arg:
                    raise InvalidArgument(
                        f"args[{i}] must be at most {MAX_ARG_CHARS} characters without NUL",
                        field=f"args[{i}]",
                    )
            credentials = self.check_credentials("stdio", headers or {}, env or {})
            return NewMcpServer(
                name=name,
                transport="stdio",
                command=command,
                args=tuple(args),
                call_timeout_seconds=timeout,
                env_names=tuple(sorted(credentials.env)),
                credentials=credentials,
            )
        if command or args:
            raise InvalidArgument("command and args are for stdio servers; an HTTP one has a url")
        credentials = self.check_credentials("http", headers or {}, env or {})
        http_url(url, "url", self.outbound)
        return NewMcpServer(
            name=name,
            transport="http",
            url=url,
            call_timeout_seconds=timeout,
            header_names=tuple(sorted(credentials.headers)),
            credentials=credentials,
        )

    @staticmethod
    def check_credentials(
        transport: str, headers: dict[str, str], env: dict[str, str]
    ) -> McpCredentials:
        """A server's credentials, checked against its transport's rules."""
        if transport == "stdio":
            if headers:
                raise InvalidArgument(
                    "headers are for HTTP servers; a stdio server gets credentials in env",
                    field="headers",
                )
            return McpCredentials(env=check_env(env))
        if env:
            raise InvalidArgument(
                "env is for stdio servers; an HTTP server gets credentials in headers", field="env"
            )
        return McpCredentials(headers=check_headers(headers))

    async def _list_remote(self, server_name: str, connection: McpConnection) -> list[StoredTool]:
        listed = await connection.list_tools()
        taken: set[str] = set()
        tools = []
        for remote in listed:
            schema = dict(remote.input_schema or {"type": "object"})
            problem = check_schema(schema)
            if problem:
                log.warning("MCP server %s: tool %s skipped: %s", server_name, remote.name, problem)
                continue
            tools.append(
                StoredTool(
                    name=tool_name(server_name, remote.name, taken),
                    remote_name=remote.name,
                    description=(remote.description or remote.title or "")[:2000],
                    input_schema=schema,
                    impact=impact_of_hints(remote.annotations),
                )
            )
        return tools

    async def add_server(self, client_id: str, new: NewMcpServer) -> McpServerRecord:
        """Connect, list the tools, store; nothing is stored when the server cannot be used."""
        credentials = new.credentials

        async def given() -> McpCredentials:
            return credentials

        connection = self.connections.detached(new.name, endpoint_of(new), given)
        try:
            tools = await self._list_remote(new.name, connection)
            record = await self.store.create_server(client_id, new, tools)
        except BaseException:
            await connection.close()
            raise
        # The session holds the credentials just stored: it is the stored version's session.
        connection.endpoint = endpoint_of(record)
        self.connections.adopt(str(record.id), connection)
        return record

    async def rotate_credentials(
        self, client_id: str, server_id: UUID, headers: dict[str, str], env: dict[str, str]
    ) -> McpServerRecord:
        """Replace the server's credentials with a complete new set, once a session opened with
        them has listed the tools; `REDACTED` keeps the stored value of that name."""
        server = await self.get_server(client_id, server_id)
        if REDACTED in headers.values() or REDACTED in env.values():
            stored = await self.store.credentials(client_id, server)
            headers = _kept(headers, stored.headers, "headers")
            env = _kept(env, stored.env, "env")
        credentials = self.check_credentials(server.transport, headers, env)
        trial = replace(
            server,
            header_names=tuple(sorted(credentials.headers)),
            env_names=tuple(sorted(credentials.env)),
            secret_version=None,
        )

        async def given() -> McpCredentials:
            return credentials

        connection = self.connections.detached(server.name, endpoint_of(trial), given)
        try:
            tools = await self._list_remote(server.name, connection)
            updated = await self.store.replace_credentials(client_id, server_id, credentials)
            if updated is None:
                raise NotFound(f"MCP server {server_id} not found")
            refreshed = await self.store.replace_tools(client_id, server_id, tools)
            if refreshed is None:
                raise NotFound(f"MCP server {server_id} not found")
        except BaseException:
            await connection.close()
            raise
        # The old session (and process) ends; this one holds the stored version's credentials.
        connection.endpoint = endpoint_of(refreshed)
        self.connections.adopt(str(server_id), connection)
        return refreshed

    async def get_server(self, client_id: str, server_id: UUID) -> McpServerRecord:
        server = await self.store.get_server(client_id, server_id)
        if server is None:
            raise NotFound(f"MCP server {server_id} not found")
        return server

    def _connection(self, client_id: str, server: McpServerRecord) -> McpConnection:
        async def stored() -> McpCredentials:
            # Read from the secret store each time the session opens, restarts included.
            return await self.store.credentials(client_id, server)

        return self.connections.get(str(server.id), server.name, endpoint_of(server), stored)

    async def refresh_server(self, client_id: str, server_id: UUID) -> McpServerRecord:
        server = await self.get_server(client_id, server_id)
        try:
            tools = await self._list_remote(server.name, self._connection(client_id, server))
        except FailedPrecondition as exc:
            await self.store.record_error(client_id, server_id, exc.message)
            raise
        refreshed = await self.store.replace_tools(client_id, server_id, tools)
        if refreshed is None:
            raise NotFound(f"MCP server {server_id} not found")
        return refreshed

    async def delete_server(self, client_id: str, server_id: UUID) -> int:
        deleted = await self.store.delete_server(client_id, server_id)
        if deleted is None:
            raise NotFound(f"MCP server {server_id} not found")
        await self.connections.drop(str(server_id))
        return deleted

    # The registry

    async def _connector_specs(self, client_id: str) -> list[ToolSpec]:
        specs: list[ToolSpec] = []
        token = ""
        while True:
            page, token = await self.connectors.list(client_id, token, 100)
            for c in page:
                if c.kind != "http" or not c.enabled:
                    continue
                specs.append(
                    ToolSpec(
                        name=connector_tool_name(c),
                        description=f"Send an HTTP request to {c.name} (connector {c.id}).",
                        input_schema=CONNECTOR_REQUEST_SCHEMA,
                        impact="write",
                        source="connector",
                        connector_id=str(c.id),
                        unavailable_reason=""
                        if self.connector_requests is not None
                        else NO_CONNECTOR_REQUESTS,
                    )
                )
            if not token:
                return specs

    async def tools(self, client_id: str) -> list[ToolSpec]:
        specs = self.builtins.specs()
        specs += await self._connector_specs(client_id)
        for server in await self.store.all_servers(client_id):
            specs += [
                ToolSpec(
                    name=t.name,
                    description=t.description,
                    input_schema=t.input_schema,
                    impact=t.impact,
                    source="mcp",
                    mcp_server_id=str(server.id),
                    remote_name=t.remote_name,
                )
                for t in server.tools
            ]
        return specs

    async def tool(self, client_id: str, name: str) -> ToolSpec:
        for spec in await self.tools(client_id):
            if spec.name == name:
                return spec
        raise NotFound(f"tool {name[:100]!r} not found")

    async def set_impact(self, client_id: str, name: str, impact: str) -> ToolSpec:
        spec = await self.tool(client_id, name)
        if spec.source != "mcp":
            raise FailedPrecondition(
                f"tool {name} is a {spec.source} tool, whose impact is fixed; only MCP tools' "
                "impact can be changed"
            )
        await self.store.set_impact(client_id, name, impact)
        return await self.tool(client_id, name)

    async def call(
        self,
        client_id: str,
        name: str,
        arguments_text: str,
        seconds: float,
        idempotency_key: str = "",
    ) -> CallResult:
        """Calls a tool; with `idempotency_key`, at most once per tenant and key (a repeat answers
        the first call's result or error without running the tool)."""
        arguments = parse_arguments(arguments_text)
        digest = arguments_digest(arguments)
        if idempotency_key:
            # A repeat is answered even if the tool went away since the first call.
            first = await self.store.get_call(client_id, idempotency_key)
            if first is not None:
                return _replay(first, name, digest)
        spec = await self.tool(client_id, name)
        if not spec.available:
            raise FailedPrecondition(f"tool {name} is unavailable: {spec.unavailable_reason}")
        validate_arguments(name, spec.input_schema, arguments)
        if idempotency_key:
            # No call outlives MAX_TIMEOUT, so a claim older than that (and a margin) was lost.
            first = await self.store.claim_call(
                client_id, idempotency_key, name, digest, MAX_TIMEOUT + STALE_MARGIN_SECONDS
            )
            if first is not None:  # a concurrent call claimed the key first
                return _replay(first, name, digest)
        # From here the tool runs: whatever the outcome, one `integration.tool_called` is written
        # with the call's record (a keyed call's row; a call without a key has only the event).
        started = time.perf_counter()
        try:
            answer = await self._dispatch(client_id, spec, arguments, seconds)
        except ServiceError as exc:
            called = _called(
                spec, idempotency_key, (time.perf_counter() - started) * 1e3, error=exc
            )
            if idempotency_key:
                await self.store.fail_call(
                    client_id, idempotency_key, exc.code.name, exc.message, called
                )
            else:
                await self.store.record_call(client_id, called)
            raise
        duration_ms = (time.perf_counter() - started) * 1e3
        if len(answer.content) > self.limits.result_max_chars:
            cut = self.limits.result_max_chars
            answer = ToolAnswer(
                content=answer.content[:cut] + f"\n[cut at {cut} characters]",
                structured=None,
                is_error=answer.is_error,
            )
        called = _called(spec, idempotency_key, duration_ms, answer=answer)
        if idempotency_key:
            await self.store.finish_call(
                client_id,
                idempotency_key,
                content=answer.content,
                structured=answer.structured,
                is_error=answer.is_error,
                impact=spec.impact,
                duration_ms=duration_ms,
                called=called,
            )
        else:
            await self.store.record_call(client_id, called)
        return CallResult(spec.impact, answer, duration_ms)

    async def _dispatch(
        self, client_id: str, spec: ToolSpec, arguments: dict[str, Any], seconds: float
    ) -> ToolAnswer:
        limit = self.limits.call_timeout
        if spec.source == "mcp":
            server = await self.get_server(client_id, UUID(spec.mcp_server_id))
            limit = server.call_timeout_seconds
            bounded = min(seconds, limit) if seconds > 0 else limit
            return await self._connection(client_id, server).call(
                spec.remote_name, arguments, bounded
            )
        bounded = min(seconds, limit) if seconds > 0 else limit
        if spec.source == "connector" or spec.name == "http_request":
            assert self.connector_requests is not None  # else the spec is unavailable
            connector_id = UUID(spec.connector_id) if spec.connector_id else None
            if connector_id is None:
                connector_id = await self._connector_named(client_id, arguments.pop("connector"))
            return await connector_request(
                self.connector_requests, client_id, connector_id, arguments, bounded
            )
        return await self.builtins.call(spec.name, arguments, bounded)

    async def _connector_named(self, client_id: str, name: str) -> UUID:
        token = ""
        while True:
            page, token = await self.connectors.list(client_id, token, 100)
            for c in page:
                if c.name.lower() == name.lower():
                    if c.kind != "http" or not c.enabled:
                        raise FailedPrecondition(
                            f"connector {c.name} is not an enabled HTTP connector",
                            field="arguments['connector']",
                        )
                    return c.id
            if not token:
                raise NotFound(
                    f"connector {name[:100]!r} not found", field="arguments['connector']"
                )
