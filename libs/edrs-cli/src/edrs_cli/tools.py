"""``edrs tools``: the tenant's tools and MCP servers — list, show, call; add, refresh and remove MCP
servers; set a tool's impact. A client of `/api/v1/tools` and `/api/v1/mcp-servers`
(docs/integration.md, "Tools"), with the credentials and output conventions of ``edrs tasks``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from edrs_cli.gateway_api import DEFAULT_STATE_DIR, ApiKey, StateDir, Token, Url
from edrs_cli.tasks import Json
from edrs_cli.tasks import _api as api
from edrs_cli.tasks import _check as check
from edrs_cli.tasks import _fail as fail
from edrs_cli.tasks import _print as show
from edrs_cli.tasks import _table as table_of

app = typer.Typer(
    help="Tools personas may call: list, show, call; MCP servers: add, list, refresh, remove.",
    no_args_is_help=True,
)
IMPACTS = ("read", "write", "destructive")
Headers = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        help="HTTP: a credential header NAME=VALUE sent on every request (repeatable); stored in "
        "the secret store",
    ),
]
Env = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        help="stdio: a credential variable NAME=VALUE of the process (repeatable); stored in the "
        "secret store",
    ),
]


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            # Never echo the item: its value is a credential.
            fail(f"{option} takes NAME=VALUE (got one without '=' or without a name)", 2)
        found[name] = value
    return found


def _tools_table(tools: list[dict[str, Any]]) -> Table:
    table = table_of("name", "impact", "source", "available", "description")
    for t in tools:
        table.add_row(
            t["name"],
            t["impact"],
            t["source"],
            "yes" if t["available"] else f"no: {t['unavailableReason']}",
            t["description"][:80],
        )
    return table


def _servers_table(servers: list[dict[str, Any]]) -> Table:
    table = table_of("id", "name", "transport", "endpoint", "tools", "last error")
    for s in servers:
        endpoint = s["url"] or " ".join([s["command"], *s["args"]])
        table.add_row(
            s["id"], s["name"], s["transport"], endpoint, str(len(s["tools"])), s["lastError"]
        )
    return table


@app.command("list")
def list_tools(
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Every tool of the tenant, with its impact and whether it can be called now."""
    with api(url, token, api_key, state_dir) as client:
        tools = check(client.get("/api/v1/tools"))["tools"]
    show(tools, as_json, _tools_table)


@app.command("show")
def show_tool(
    name: Annotated[str, typer.Argument(help="The tool's name.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """One tool, with its argument schema (JSON)."""
    with api(url, token, api_key, state_dir) as client:
        tool = check(client.get(f"/api/v1/tools/{name}"))
    typer.echo(json.dumps(tool, indent=2))


@app.command("call")
def call_tool(
    name: Annotated[str, typer.Argument(help="The tool's name.")],
    arguments: Annotated[str, typer.Argument(help="The arguments, a JSON object.")] = "{}",
    timeout: Annotated[float, typer.Option("--timeout", min=0, max=600)] = 0,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Call a tool now, as you (administrators only); prints its result."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        fail(f"arguments are not JSON: {exc}", 2)
    with api(url, token, api_key, state_dir) as client:
        result = check(
            client.post(
                f"/api/v1/tools/{name}/calls",
                json={"arguments": parsed, "timeoutSeconds": timeout},
            )
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(result["content"])
        if result["isError"]:
            raise typer.Exit(1)


@app.command("set-impact")
def set_impact(
    name: Annotated[str, typer.Argument(help="An MCP tool's name.")],
    impact: Annotated[str, typer.Argument(help="read, write or destructive.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Set an MCP tool's impact level (what a persona's tool policy decides on)."""
    if impact not in IMPACTS:
        fail(f"impact must be one of {', '.join(IMPACTS)}", 2)
    with api(url, token, api_key, state_dir) as client:
        tool = check(client.patch(f"/api/v1/tools/{name}", json={"impact": impact}))
    typer.echo(f"{tool['name']}: {tool['impact']}")


@app.command("servers")
def list_servers(
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's MCP servers (every page)."""
    servers: list[dict[str, Any]] = []
    with api(url, token, api_key, state_dir) as client:
        page_token = ""
        while True:
            params = {"pageToken": page_token} if page_token else {}
            page = check(client.get("/api/v1/mcp-servers", params=params))
            servers += page["mcpServers"]
            page_token = page["nextPageToken"]
            if not page_token:
                break
    show(servers, as_json, _servers_table)


@app.command("add-server")
def add_server(
    name: Annotated[str, typer.Argument(help="a-z, 0-9, '_' and '-': its tools' name prefix.")],
    server_url: Annotated[
        str | None, typer.Option("--server-url", help="A streamable HTTP endpoint.")
    ] = None,
    command: Annotated[
        str | None,
        typer.Option("--command", help="A stdio server's executable (the operator allows it)."),
    ] = None,
    arg: Annotated[list[str] | None, typer.Option("--arg", help="Its arguments, in order.")] = None,
    call_timeout: Annotated[float, typer.Option("--call-timeout", min=0, max=600)] = 0,
    header: Headers = None,
    env: Env = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Add an MCP server (HTTP with --server-url, stdio with --command) and list its tools."""
    if (server_url is None) == (command is None):
        fail("give either --server-url (HTTP) or --command (stdio)", 2)
    body: dict[str, Any] = {"name": name, "callTimeoutSeconds": call_timeout}
    if server_url is not None:
        body |= {"transport": "http", "url": server_url}
    else:
        body |= {"transport": "stdio", "command": command, "args": arg or []}
    if header:
        body["headers"] = _pairs(header, "--header")
    if env:
        body["env"] = _pairs(env, "--env")
    with api(url, token, api_key, state_dir) as client:
        server = check(client.post("/api/v1/mcp-servers", json=body), 201)
    show(server["tools"] if not as_json else server, as_json, _tools_table)


@app.command("rotate-credentials")
def rotate_credentials(
    server_id: Annotated[str, typer.Argument(help="The server's id.")],
    header: Headers = None,
    env: Env = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Replace a server's credentials with the complete new set given (VALUE '********' keeps the
    stored one; none at all removes them), once a session with them lists its tools."""
    body = {"headers": _pairs(header, "--header"), "env": _pairs(env, "--env")}
    with api(url, token, api_key, state_dir) as client:
        server = check(client.put(f"/api/v1/mcp-servers/{server_id}/credentials", json=body))
    if as_json:
        show(server, True, _tools_table)
        return
    names = sorted(server["headers"]) or sorted(server["env"])
    typer.echo(f"credentials of {server['name']}: {', '.join(names) or 'none'}")


@app.command("refresh-server")
def refresh_server(
    server_id: Annotated[str, typer.Argument(help="The server's id.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List a server's tools again."""
    with api(url, token, api_key, state_dir) as client:
        server = check(client.post(f"/api/v1/mcp-servers/{server_id}/refresh"))
    show(server["tools"], False, _tools_table)


@app.command("remove-server")
def remove_server(
    server_id: Annotated[str, typer.Argument(help="The server's id.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Remove an MCP server and its tools."""
    with api(url, token, api_key, state_dir) as client:
        check(client.delete(f"/api/v1/mcp-servers/{server_id}"), 204)
    typer.echo(f"removed {server_id}")
