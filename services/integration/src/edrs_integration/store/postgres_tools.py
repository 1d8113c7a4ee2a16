"""PostgreSQL adapter of the tool store: MCP servers and their listed tools, scoped by tenant."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists, FailedPrecondition
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_core.pagination import keyset_page
from edrs_core.secretstore import SecretNotFound, SecretStore

from edrs_integration.store.tools import (
    NO_CREDENTIALS,
    KeyedCall,
    McpCredentials,
    McpServerRecord,
    NewMcpServer,
    StoredTool,
    ToolCalled,
)

TOOL_CALLED = "integration.tool_called"

_COLUMNS = (
    "id, name, transport, command, args, url, call_timeout_seconds, last_error, created_at, "
    "refreshed_at, header_names, env_names, secret_version"
)
_CALL_COLUMNS = (
    "name, arguments_sha256, state, stale_at < now() AS stale, content, structured, is_error, "
    "impact, duration_ms, error_code, error_message"
)
_TOOL_COLUMNS = "server_id, name, remote_name, description, input_schema, impact, impact_overridden"


def _tool(row: Any) -> StoredTool:
    return StoredTool(
        name=row["name"],
        remote_name=row["remote_name"],
        description=row["description"],
        input_schema=json.loads(row["input_schema"]),
        impact=row["impact"],
        impact_overridden=row["impact_overridden"],
    )


def _keyed_call(row: Any) -> KeyedCall:
    return KeyedCall(
        name=row["name"],
        arguments_sha256=row["arguments_sha256"],
        state=row["state"],
        stale=bool(row["stale"]),
        content=row["content"],
        structured=json.loads(row["structured"]) if row["structured"] is not None else None,
        is_error=row["is_error"],
        impact=row["impact"],
        duration_ms=row["duration_ms"],
        error_code=row["error_code"],
        error_message=row["error_message"],
    )


def _server(row: Any, tools: list[StoredTool]) -> McpServerRecord:
    return McpServerRecord(
        id=row["id"],
        name=row["name"],
        transport=row["transport"],
        command=row["command"],
        args=tuple(json.loads(row["args"])),
        url=row["url"],
        call_timeout_seconds=row["call_timeout_seconds"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        refreshed_at=row["refreshed_at"],
        tools=tools,
        header_names=tuple(row["header_names"]),
        env_names=tuple(row["env_names"]),
        secret_version=row["secret_version"],
    )


def mcp_server_secret_path(client_id: str, server_id: UUID) -> tuple[str, ...]:
    """Where an MCP server's credentials live in the secret store."""
    return ("tenants", client_id, "mcp-servers", str(server_id))


async def _insert_tools(
    conn: Any, client_id: str, server_id: UUID, tools: list[StoredTool]
) -> None:
    await conn.executemany(
        """INSERT INTO mcp_tools (client_id, server_id, name, remote_name, description,
                                  input_schema, impact, impact_overridden, position)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)""",
        [
            (
                client_id,
                server_id,
                t.name,
                t.remote_name,
                t.description,
                json.dumps(t.input_schema),
                t.impact,
                t.impact_overridden,
                i,
            )
            for i, t in enumerate(tools)
        ],
    )


class PostgresToolStore:
    def __init__(self, db: asyncpg.Pool, events: ServiceEvents, secrets: SecretStore) -> None:
        self.db = db
        self.events = events
        self.secrets = secrets

    async def _called(self, conn: Any, client_id: str, called: ToolCalled) -> None:
        await self.events.add(
            conn, TOOL_CALLED, called.payload(), aggregate_id=called.name, client_id=client_id
        )

    async def _with_tools(self, client_id: str, rows: list[Any]) -> list[McpServerRecord]:
        if not rows:
            return []
        tool_rows = await self.db.fetch(
            f"""SELECT {_TOOL_COLUMNS} FROM mcp_tools
                WHERE client_id = $1 AND server_id = ANY($2::uuid[])
                ORDER BY position""",
            client_id,
            [r["id"] for r in rows],
        )
        by_server: dict[UUID, list[StoredTool]] = {}
        for t in tool_rows:
            by_server.setdefault(t["server_id"], []).append(_tool(t))
        return [_server(r, by_server.get(r["id"], [])) for r in rows]

    async def create_server(
        self, client_id: str, server: NewMcpServer, tools: list[StoredTool]
    ) -> McpServerRecord:
        server_id = new_id()
        path = mcp_server_secret_path(client_id, server_id)
        credentials = server.credentials
        version = await self.secrets.put(path, credentials.as_secret()) if credentials else None
        try:
            async with self.db.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""INSERT INTO mcp_servers (id, client_id, name, transport, command, args, url,
                                                 call_timeout_seconds, header_names, env_names,
                                                 secret_version)
                        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11)
                        RETURNING {_COLUMNS}""",
                    server_id,
                    client_id,
                    server.name,
                    server.transport,
                    server.command,
                    json.dumps(list(server.args)),
                    server.url,
                    server.call_timeout_seconds,
                    sorted(credentials.headers),
                    sorted(credentials.env),
                    version,
                )
                assert row is not None  # INSERT ... RETURNING yields the row
                await _insert_tools(conn, client_id, row["id"], tools)
        except BaseException as exc:
            # No row refers to them: do not leave the values behind.
            if version is not None:
                await self.secrets.delete(path)
            if isinstance(exc, asyncpg.UniqueViolationError):
                raise AlreadyExists(
                    f"an MCP server named {server.name!r} already exists", field="name"
                ) from None
            raise
        return _server(row, list(tools))

    async def credentials(self, client_id: str, server: McpServerRecord) -> McpCredentials:
        if server.secret_version is None:
            return NO_CREDENTIALS
        try:
            values = await self.secrets.get(
                mcp_server_secret_path(client_id, server.id), server.secret_version
            )
        except SecretNotFound:
            raise FailedPrecondition(
                f"the credentials of MCP server {server.name} are missing from the secret store "
                f"(version {server.secret_version}); delete the server and add it again"
            ) from None
        return McpCredentials.of_secret(values)

    async def get_server(self, client_id: str, server_id: UUID) -> McpServerRecord | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM mcp_servers WHERE client_id = $1 AND id = $2",
            client_id,
            server_id,
        )
        found = await self._with_tools(client_id, [row] if row else [])
        return found[0] if found else None

    async def list_servers(
        self, client_id: str, page_token: str, page_size: int
    ) -> tuple[list[McpServerRecord], str]:
        rows, token = await keyset_page(
            self.db,
            table="mcp_servers",
            columns=_COLUMNS,
            where="client_id = $1",
            args=[client_id],
            page_token=page_token,
            requested_size=page_size,
        )
        return await self._with_tools(client_id, list(rows)), token

    async def all_servers(self, client_id: str) -> list[McpServerRecord]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM mcp_servers WHERE client_id = $1 ORDER BY created_at, id",
            client_id,
        )
        return await self._with_tools(client_id, list(rows))

    async def replace_tools(
        self, client_id: str, server_id: UUID, tools: list[StoredTool]
    ) -> McpServerRecord | None:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE mcp_servers SET refreshed_at = now(), last_error = ''
                    WHERE client_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
                client_id,
                server_id,
            )
            if row is None:
                return None
            overridden = {
                r["name"]: r["impact"]
                for r in await conn.fetch(
                    """SELECT name, impact FROM mcp_tools
                       WHERE client_id = $1 AND server_id = $2 AND impact_overridden""",
                    client_id,
                    server_id,
                )
            }
            kept = [
                StoredTool(
                    name=t.name,
                    remote_name=t.remote_name,
                    description=t.description,
                    input_schema=t.input_schema,
                    impact=overridden.get(t.name, t.impact),
                    impact_overridden=t.name in overridden,
                )
                for t in tools
            ]
            await conn.execute(
                "DELETE FROM mcp_tools WHERE client_id = $1 AND server_id = $2",
                client_id,
                server_id,
            )
            await _insert_tools(conn, client_id, server_id, kept)
        return _server(row, kept)

    async def replace_credentials(
        self, client_id: str, server_id: UUID, credentials: McpCredentials
    ) -> McpServerRecord | None:
        path = mcp_server_secret_path(client_id, server_id)
        version = await self.secrets.put(path, credentials.as_secret()) if credentials else None
        row = await self.db.fetchrow(
            f"""UPDATE mcp_servers SET header_names = $3, env_names = $4, secret_version = $5
                WHERE client_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
            client_id,
            server_id,
            sorted(credentials.headers),
            sorted(credentials.env),
            version,
        )
        if row is None or version is None:
            # No server (deleted meanwhile), or no credentials any more: nothing refers to them.
            await self.secrets.delete(path)
        found = await self._with_tools(client_id, [row] if row else [])
        return found[0] if found else None

    async def record_error(self, client_id: str, server_id: UUID, error: str) -> None:
        await self.db.execute(
            "UPDATE mcp_servers SET last_error = $3 WHERE client_id = $1 AND id = $2",
            client_id,
            server_id,
            error,
        )

    async def delete_server(self, client_id: str, server_id: UUID) -> int | None:
        async with self.db.acquire() as conn, conn.transaction():
            tools = await conn.fetchval(
                "SELECT count(*) FROM mcp_tools WHERE client_id = $1 AND server_id = $2",
                client_id,
                server_id,
            )
            deleted = await conn.fetchval(
                "DELETE FROM mcp_servers WHERE client_id = $1 AND id = $2 RETURNING id",
                client_id,
                server_id,
            )
        if deleted is None:
            return None
        # Every version of its credentials goes with it (absent is fine).
        await self.secrets.delete(mcp_server_secret_path(client_id, server_id))
        return int(tools)

    async def set_impact(self, client_id: str, name: str, impact: str) -> bool:
        done = await self.db.fetchval(
            """UPDATE mcp_tools SET impact = $3, impact_overridden = true
               WHERE client_id = $1 AND name = $2 RETURNING name""",
            client_id,
            name,
            impact,
        )
        return done is not None

    # -- tool calls with an idempotency key ------------------------------------------------------

    async def get_call(self, client_id: str, key: str) -> KeyedCall | None:
        row = await self.db.fetchrow(
            f"""SELECT {_CALL_COLUMNS} FROM keyed_tool_calls
                WHERE client_id = $1 AND idempotency_key = $2""",
            client_id,
            key,
        )
        return _keyed_call(row) if row is not None else None

    async def claim_call(
        self, client_id: str, key: str, name: str, arguments_sha256: str, stale_after: float
    ) -> KeyedCall | None:
        async with self.db.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(
                """INSERT INTO keyed_tool_calls
                       (client_id, idempotency_key, name, arguments_sha256, state, stale_at)
                   VALUES ($1, $2, $3, $4, 'running', now() + make_interval(secs => $5))
                   ON CONFLICT (client_id, idempotency_key) DO NOTHING RETURNING name""",
                client_id,
                key,
                name,
                arguments_sha256,
                stale_after,
            )
            if claimed is not None:
                return None
            row = await conn.fetchrow(
                f"""SELECT {_CALL_COLUMNS} FROM keyed_tool_calls
                    WHERE client_id = $1 AND idempotency_key = $2""",
                client_id,
                key,
            )
        return _keyed_call(row)

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
        # PostgreSQL text and jsonb hold no NUL: the replayed answer has U+FFFD in its place.
        content = content.replace("\x00", "\ufffd")
        stored = json.dumps(structured) if structured is not None else None
        if stored is not None and "\\u0000" in stored:
            stored = stored.replace("\\u0000", "\\ufffd")
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE keyed_tool_calls SET state = 'done', content = $3,
                       structured = $4::jsonb, is_error = $5, impact = $6, duration_ms = $7,
                       finished_at = now()
                   WHERE client_id = $1 AND idempotency_key = $2 AND state = 'running'""",
                client_id,
                key,
                content,
                stored,
                is_error,
                impact,
                duration_ms,
            )
            await self._called(conn, client_id, called)

    async def fail_call(
        self, client_id: str, key: str, code: str, message: str, called: ToolCalled
    ) -> None:
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE keyed_tool_calls SET state = 'failed', error_code = $3,
                       error_message = $4, finished_at = now()
                   WHERE client_id = $1 AND idempotency_key = $2 AND state = 'running'""",
                client_id,
                key,
                code,
                message,
            )
            await self._called(conn, client_id, called)

    async def record_call(self, client_id: str, called: ToolCalled) -> None:
        async with self.db.acquire() as conn, conn.transaction():
            await self._called(conn, client_id, called)

    async def sweep_calls(self, retention_hours: float, batch: int) -> int:
        # One short transaction per batch; SKIP LOCKED leaves rows a call is updating right now
        # (a running call's row is never a candidate anyway). Across tenants on purpose: this is
        # the operator's retention, the same for every tenant.
        deleted = await self.db.fetch(
            """DELETE FROM keyed_tool_calls AS k
               USING (SELECT client_id, idempotency_key FROM keyed_tool_calls
                      WHERE (state IN ('done', 'failed')
                             AND finished_at < now() - make_interval(secs => $1))
                         OR (state = 'running'
                             AND stale_at < now() - make_interval(secs => $1))
                      LIMIT $2
                      FOR UPDATE SKIP LOCKED) AS expired
               WHERE k.client_id = expired.client_id
                 AND k.idempotency_key = expired.idempotency_key
               RETURNING k.client_id""",
            retention_hours * 3600.0,
            batch,
        )
        return len(deleted)
