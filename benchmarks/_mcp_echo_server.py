"""The trivial MCP server of bench_integration.py, built with the official SDK: run as
`python _mcp_echo_server.py stdio` or `python _mcp_echo_server.py http PORT`.

Its one tool does next to nothing, so a call's time is the time of the path to it."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("bench-echo")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Answer the text it is given."""
    return text


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
