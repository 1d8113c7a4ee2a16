"""MCP servers as the fleet speaks to them: one long-lived session per server (the official `mcp`
SDK), a supervisor that restarts a stdio server's process when it exits, and per-call timeouts.

Streamable HTTP goes through the fleet's outbound policy (edrs_core.outbound.httpx2: the SDK
talks `httpx2`), which checks the URL, resolves and pins the address, and refuses what the policy
refuses (loopback included, unless the operator allowed it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
from edrs_core import DeadlineExceeded, FailedPrecondition, Unavailable
from edrs_core.outbound import OutboundError, OutboundPolicy
from edrs_core.outbound.httpx2 import Httpx2OutboundTransport
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as McpTool

from edrs_integration.store.tools import NO_CREDENTIALS, McpCredentials

log = logging.getLogger("edrs.integration.mcp")

# JSON-RPC error code the SDK raises when the other end has gone (process exited, HTTP closed).
_CONNECTION_CLOSED = -32000


@dataclass(frozen=True)
class McpEndpoint:
    """Where one MCP server is: a stdio command, or a streamable HTTP URL."""

    transport: str  # "stdio" | "http"
    command: str = ""
    args: tuple[str, ...] = ()
    url: str = ""
    # Which credentials it gets, and their version in the secret store: a rotation makes another
    # endpoint, hence a new session. The values are read by the connection when it opens one.
    header_names: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()
    secret_version: int | None = None


CredentialsSource = Callable[[], Awaitable[McpCredentials]]


async def _no_credentials() -> McpCredentials:
    return NO_CREDENTIALS


@dataclass(frozen=True)
class ToolAnswer:
    content: str
    structured: dict[str, Any] | None
    is_error: bool


def _first_cause(exc: BaseException) -> BaseException:
    """The error inside the SDK's task-group wrapping: what a person needs to read."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, OutboundError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OutboundError):
        return cause
    return exc


def describe_failure(exc: BaseException) -> str:
    cause = _first_cause(exc)
    if isinstance(cause, OutboundError):
        return f"its URL {cause.reason}"
    if isinstance(cause, MCPError):
        return f"it answered an MCP error: {cause.error.message}"
    if isinstance(cause, TimeoutError):
        return "it did not answer in time"
    text = str(cause) or type(cause).__name__
    return f"{type(cause).__name__}: {text}"[:300]


def result_text(result: CallToolResult) -> str:
    """A tool result as text: text content joined; other content named, not inlined."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content]")
    return "\n".join(parts)


class McpConnection:
    """One server's session, kept open by a supervising task that reconnects (restarting a stdio
    process) whenever the session ends, with backoff, until `close()`."""

    def __init__(
        self,
        key: str,
        endpoint: McpEndpoint,
        policy: OutboundPolicy,
        *,
        connect_timeout: float,
        health_interval: float,
        max_backoff: float = 30.0,
        credentials: CredentialsSource = _no_credentials,
    ) -> None:
        self.key = key
        self.endpoint = endpoint
        # Read each time a session opens (the supervisor's restarts included), never kept.
        self._credentials = credentials
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self._max_backoff = max_backoff
        self._client: Client | None = None
        self._ready = asyncio.Event()
        # Set when an attempt to connect has failed (cleared when one succeeds), so a caller
        # waiting for the session learns a definitive failure (a host that does not resolve, a
        # refused URL) at once instead of waiting out the connect timeout.
        self._failed = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""
        self.starts = 0

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[Client]:
        ep = self.endpoint
        credentials = await self._credentials()
        if ep.transport == "stdio":
            # Only the SDK's minimal environment (PATH, HOME, ...) and the server's own
            # credentials: the service's settings, credentials keys included, never reach a tool
            # server's process. Credential names never override the minimal environment
            # (registry.check_env refuses them), and the minimal environment wins regardless.
            env = {**credentials.env, **get_default_environment()}
            params = StdioServerParameters(command=ep.command, args=list(ep.args), env=env)
            async with Client(params, cache=None, mode="legacy") as client:
                yield client
            return
        async with (
            httpx2.AsyncClient(
                transport=Httpx2OutboundTransport(self._policy),
                timeout=httpx2.Timeout(self._connect_timeout, read=300.0),
                trust_env=False,
                # On every request of the session; the SDK follows a redirect only on the
                # endpoint's own origin, so they never reach another host.
                headers=dict(credentials.headers),
            ) as http,
            Client(
                streamable_http_client(ep.url, http_client=http), cache=None, mode="legacy"
            ) as client,
        ):
            yield client

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.key}")

    async def _supervise(self) -> None:
        backoff = 0.2
        while not self._closing.is_set():
            self._reconnect.clear()
            try:
                async with self._open() as client:
                    self.starts += 1
                    self._client = client
                    self.last_error = ""
                    self._failed.clear()
                    self._ready.set()
                    backoff = 0.2
                    await self._watch(client)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the SDK wraps failures in exception groups
                self.last_error = describe_failure(exc)
                self._failed.set()
                log.warning("MCP server %s: %s", self.key, self.last_error)
            finally:
                self._client = None
                self._ready.clear()
            if self._closing.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _watch(self, client: Client) -> None:
        """Return when the session is gone (a ping fails) or a caller saw it fail."""
        while not self._closing.is_set():
            waits = {
                asyncio.ensure_future(self._closing.wait()),
                asyncio.ensure_future(self._reconnect.wait()),
            }
            done, pending = await asyncio.wait(
                waits, timeout=self._health_interval, return_when="FIRST_COMPLETED"
            )
            for task in pending:
                task.cancel()
            if done:
                return
            try:
                with warnings.catch_warnings():
                    # Sessions are opened in legacy mode (the initialize handshake), where ping
                    # is part of the protocol; the SDK warns because newer revisions drop it.
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await asyncio.wait_for(client.send_ping(), self._connect_timeout)
            except (MCPError, TimeoutError) as exc:
                self.last_error = f"it stopped answering ({describe_failure(exc)}); restarting"
                log.warning("MCP server %s: %s", self.key, self.last_error)
                return

    async def _connected(self) -> Client:
        self.start()
        if not self._ready.is_set():
            waits = {
                asyncio.ensure_future(self._ready.wait()),
                asyncio.ensure_future(self._failed.wait()),
            }
            _, pending = await asyncio.wait(
                waits, timeout=self._connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
        if not self._ready.is_set() or self._client is None:
            reason = self.last_error or "it did not finish connecting in time"
            raise FailedPrecondition(f"MCP server {self.key} cannot be reached: {reason}")
        return self._client

    def _lost(self, exc: BaseException) -> None:
        if isinstance(exc, MCPError) and exc.code == _CONNECTION_CLOSED:
            self._reconnect.set()

    async def list_tools(self) -> list[McpTool]:
        client = await self._connected()
        tools: list[McpTool] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                while True:
                    page = await client.list_tools(cursor=cursor, cache_mode="refresh")
                    tools += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        return tools
        except (MCPError, TimeoutError) as exc:
            self._lost(exc)
            raise FailedPrecondition(
                f"MCP server {self.key} could not list its tools: {describe_failure(exc)}"
            ) from None

    async def call(self, name: str, arguments: dict[str, Any], seconds: float) -> ToolAnswer:
        started = time.monotonic()
        client = await self._connected()
        left = max(0.05, seconds - (time.monotonic() - started))
        try:
            async with asyncio.timeout(left):
                result = await client.call_tool(name, arguments, read_timeout_seconds=left)
        except TimeoutError:
            raise DeadlineExceeded(
                f"tool {name} of MCP server {self.key} did not answer within {seconds:g} s"
            ) from None
        except MCPError as exc:
            self._lost(exc)
            if exc.code == _CONNECTION_CLOSED:
                raise Unavailable(
                    f"MCP server {self.key} went away during the call; it is being restarted"
                ) from None
            return ToolAnswer(content=exc.error.message, structured=None, is_error=True)
        return ToolAnswer(
            content=result_text(result),
            structured=result.structured_content,
            is_error=bool(result.is_error),
        )

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, 10.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class McpConnections:
    """The open sessions of every MCP server in use, keyed by server id; closed with the service."""

    def __init__(
        self, policy: OutboundPolicy, *, connect_timeout: float, health_interval: float
    ) -> None:
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self._connections: dict[str, McpConnection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def detached(
        self, label: str, endpoint: McpEndpoint, credentials: CredentialsSource = _no_credentials
    ) -> McpConnection:
        """A connection kept by nobody yet (a server being added): `adopt` it, or close it."""
        made = McpConnection(
            label,
            endpoint,
            self.policy,
            connect_timeout=self.connect_timeout,
            health_interval=self.health_interval,
            credentials=credentials,
        )
        made.start()
        return made

    def adopt(self, server_id: str, connection: McpConnection) -> None:
        previous = self._connections.pop(server_id, None)
        if previous is not None:
            closing = asyncio.create_task(previous.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._connections[server_id] = connection

    def get(
        self,
        server_id: str,
        label: str,
        endpoint: McpEndpoint,
        credentials: CredentialsSource = _no_credentials,
    ) -> McpConnection:
        found = self._connections.get(server_id)
        if found is not None and found.endpoint == endpoint:
            return found
        made = self.detached(label, endpoint, credentials)
        self.adopt(server_id, made)
        return made

    def peek(self, server_id: str) -> McpConnection | None:
        return self._connections.get(server_id)

    async def drop(self, server_id: str) -> None:
        found = self._connections.pop(server_id, None)
        if found is not None:
            await found.close()

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
