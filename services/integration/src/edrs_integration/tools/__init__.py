"""Tools: the registry of what personas may call, built-in, connector and MCP tools."""
