"""The tool store port: a tenant's MCP servers and the tools they listed, whatever the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class StoredTool:
    name: str
    remote_name: str
    description: str
    input_schema: dict[str, Any]
    impact: str  # read | write | destructive
    impact_overridden: bool = False


_HEADER = "header:"
_ENV = "env:"


@dataclass(frozen=True, eq=False)
class McpCredentials:
    """An MCP server's credentials: headers of an HTTP server's requests, variables of a stdio
    server's environment. The values live in the secret store; this object never shows them
    (its repr names the keys only)."""

    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __repr__(self) -> str:
        return f"McpCredentials(headers={sorted(self.headers)}, env={sorted(self.env)})"

    def __bool__(self) -> bool:
        return bool(self.headers or self.env)

    def as_secret(self) -> dict[str, str]:
        """The values as one secret-store entry."""
        return {
            **{_HEADER + k: v for k, v in self.headers.items()},
            **{_ENV + k: v for k, v in self.env.items()},
        }

    @classmethod
    def of_secret(cls, values: Mapping[str, str]) -> McpCredentials:
        return cls(
            headers={k[len(_HEADER) :]: v for k, v in values.items() if k.startswith(_HEADER)},
            env={k[len(_ENV) :]: v for k, v in values.items() if k.startswith(_ENV)},
        )


NO_CREDENTIALS = McpCredentials()


@dataclass(frozen=True, kw_only=True)
class NewMcpServer:
    name: str
    transport: str  # stdio | http
    command: str = ""
    args: tuple[str, ...] = ()
    url: str = ""
    call_timeout_seconds: float
    # The names of its credentials (their values only in `credentials`, of a server being added).
    header_names: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()
    credentials: McpCredentials = field(default=NO_CREDENTIALS, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class McpServerRecord(NewMcpServer):
    id: UUID
    created_at: datetime
    refreshed_at: datetime
    last_error: str = ""
    tools: list[StoredTool] = field(default_factory=list)
    # The secret store's version of its credentials; None when it has none.
    secret_version: int | None = None


@dataclass(frozen=True, kw_only=True)
class KeyedCall:
    """A tool call made with an idempotency key, as first recorded (docs/integration.md)."""

    name: str
    arguments_sha256: str
    state: str  # running | done | failed
    stale: bool  # still running past its stale time: the outcome was lost
    content: str = ""
    structured: dict[str, Any] | None = None
    is_error: bool = False
    impact: str = ""
    duration_ms: float = 0.0
    error_code: str = ""
    error_message: str = ""


# Outcomes of a call that ran, as `integration.tool_called` says them (docs/events.md).
OUTCOMES = ("completed", "failed", "timed_out")


@dataclass(frozen=True, kw_only=True)
class ToolCalled:
    """What `integration.tool_called` tells of a call that ran: never its arguments nor its
    result, which may hold secrets or personal data (docs/integration.md, "Tool call events")."""

    name: str
    source: str  # builtin | connector | mcp
    impact: str
    outcome: str  # one of OUTCOMES
    duration_ms: float
    server_id: str = ""  # the MCP server's id, for an MCP tool
    connector_id: str = ""  # the connector's id, for a connector's tool
    is_error: bool = False  # completed, and the tool reported a failure
    error_code: str = ""  # failed or timed_out: the gRPC status name
    idempotency_key: str = ""
    caller: str = ""  # the verified caller's subject, when the call had one

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "impact": self.impact,
            "outcome": self.outcome,
            "duration_ms": max(0.0, round(self.duration_ms, 3)),
            "is_error": self.is_error,
        }
        optional = {
            "server_id": self.server_id,
            "connector_id": self.connector_id,
            "error_code": self.error_code,
            "idempotency_key": self.idempotency_key,
            "caller": self.caller,
        }
        payload.update({k: v for k, v in optional.items() if v})
        return payload


class KeyedCallStore(Protocol):
    async def get_call(self, client_id: str, key: str) -> KeyedCall | None: ...

    async def claim_call(
        self, client_id: str, key: str, name: str, arguments_sha256: str, stale_after: float
    ) -> KeyedCall | None:
        """None when the key is claimed now (the caller runs the tool); else the existing call."""
        ...

    async def finish_call(
        self,
        client_id: str,
        key: str,
        *,
        content: str,
        structured: dict[str, Any] | None,
        is_error: bool,
        impact: str,
        duration_ms: float,
        called: ToolCalled,
    ) -> None:
        """Records the first call's answer and writes `called` to the outbox, in one transaction."""
        ...

    async def fail_call(
        self, client_id: str, key: str, code: str, message: str, called: ToolCalled
    ) -> None:
        """Records the first call's error and writes `called` to the outbox, in one transaction."""
        ...

    async def record_call(self, client_id: str, called: ToolCalled) -> None:
        """Writes `called` of a call made without a key to the outbox."""
        ...

    async def sweep_calls(self, retention_hours: float, batch: int) -> int:
        """Deletes, across tenants, at most `batch` keyed calls finished more than
        `retention_hours` ago (or lost claims that long past their stale time); never one
        still running. Returns how many were deleted."""
        ...


class ToolStore(KeyedCallStore, Protocol):
    async def create_server(
        self, client_id: str, server: NewMcpServer, tools: list[StoredTool]
    ) -> McpServerRecord:
        """Raises AlreadyExists when the tenant has a server of that name. Its `credentials` go
        to the secret store; the row keeps their names and the store's version."""
        ...

    async def get_server(self, client_id: str, server_id: UUID) -> McpServerRecord | None: ...

    async def credentials(self, client_id: str, server: McpServerRecord) -> McpCredentials:
        """The server's credentials, read from the secret store (none when it has none)."""
        ...

    async def list_servers(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[McpServerRecord], str]: ...

    async def all_servers(self, client_id: str) -> list[McpServerRecord]: ...

    async def replace_tools(
        self, client_id: str, server_id: UUID, tools: list[StoredTool]
    ) -> McpServerRecord | None:
        """The server's tools become `tools`, keeping overridden impacts of tools that remain."""
        ...

    async def replace_credentials(
        self, client_id: str, server_id: UUID, credentials: McpCredentials
    ) -> McpServerRecord | None:
        """The server's credentials become `credentials` (a new version in the secret store; none
        at all destroys every version); None when there is no such server."""
        ...

    async def record_error(self, client_id: str, server_id: UUID, error: str) -> None: ...

    async def delete_server(self, client_id: str, server_id: UUID) -> int | None:
        """The number of tools deleted with it; None when there was no such server. Its
        credentials are destroyed in the secret store."""
        ...

    async def set_impact(self, client_id: str, name: str, impact: str) -> bool:
        """False when the tenant has no MCP tool of that name."""
        ...
