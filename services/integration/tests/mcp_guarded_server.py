"""An MCP server that needs credentials, built with the official SDK, for the tests of MCP server
credentials:

- `python mcp_guarded_server.py http PORT`: streamable HTTP on 127.0.0.1 that answers 401 to any
  request without `Authorization: Bearer <token>`, the tokens it accepts being its own
  `GUARD_TOKEN` environment variable, comma-separated (so the test hands them over without putting
  them on a command line);
- `python mcp_guarded_server.py stdio SHA256`: over stdio; its `api_token` tool says whether its
  `API_TOKEN` environment variable has the SHA-256 digest SHA256, never the value itself."""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

READ = ToolAnnotations(read_only_hint=True)

server = MCPServer("guarded")


@server.tool(annotations=READ)
def secret_report(quarter: str) -> str:
    """The quarter's figures (only for callers holding the token)."""
    return f"Figures for {quarter}: 42 orders."


@server.tool(annotations=READ)
def api_token() -> str:
    """Whether API_TOKEN in this process's environment is the expected one."""
    value = os.environ.get("API_TOKEN")
    if value is None:
        return "API_TOKEN is not set"
    if hashlib.sha256(value.encode()).hexdigest() == sys.argv[2]:
        return "API_TOKEN matches"
    return "API_TOKEN differs"


@server.tool(annotations=READ)
def environment_names() -> list[str]:
    """The names (never the values) of this process's environment variables."""
    return sorted(os.environ)


class BearerOnly:
    """ASGI middleware: 401 for any HTTP request without the right bearer token."""

    def __init__(self, app: Any, tokens: list[str]) -> None:
        self.app = app
        self.expected = {f"Bearer {token}".encode() for token in tokens}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization")
            if given not in self.expected:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": b"bearer token required"})
                return
        await self.app(scope, receive, send)


async def serve_http(port: int) -> None:
    app = server.streamable_http_app()
    guarded = BearerOnly(app, os.environ["GUARD_TOKEN"].split(","))
    config = uvicorn.Config(guarded, host="127.0.0.1", port=port, log_level="warning")
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        anyio.run(serve_http, int(sys.argv[2]))
