"""``edrs connectors`` and ``edrs webhooks``: a client of the gateway's `/api/v1/connectors` and
`/api/v1/webhooks` routes (docs/integration.md), with the credentials of every `edrs` command
that talks to the API. Credentials are given as `KEY=VALUE` settings and never printed back."""

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

connectors = typer.Typer(
    help="Connectors: create, list, show, update (rotate credentials), test, delete.",
    no_args_is_help=True,
)
webhooks = typer.Typer(
    help="Webhooks out: subscribe, list, show, rotate the secret, deliveries, replay, delete.",
    no_args_is_help=True,
)
Settings = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="A setting KEY=VALUE (repeatable); secret keys are stored in the secret store",
    ),
]


def _settings(values: list[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set takes KEY=VALUE, not {item!r}", 2)
        found[key] = value
    return found


def _connectors_table(items: list[dict[str, Any]]) -> Table:
    table = table_of("id", "name", "kind", "enabled", "settings")
    for c in items:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(c["config"].items()))
        table.add_row(c["id"], c["name"], c["kind"], "yes" if c["enabled"] else "no", settings)
    return table


def _webhooks_table(items: list[dict[str, Any]]) -> Table:
    table = table_of("id", "url", "event types", "enabled")
    for w in items:
        table.add_row(
            w["id"], w["url"], ", ".join(w["eventTypes"]), "yes" if w["enabled"] else "no"
        )
    return table


def _deliveries_table(items: list[dict[str, Any]]) -> Table:
    table = table_of("id", "event type", "state", "attempts", "last status", "last error")
    for d in items:
        last = d["attempts"][-1] if d["attempts"] else {}
        table.add_row(
            d["id"],
            d["eventType"],
            d["state"],
            str(len(d["attempts"])),
            str(last.get("statusCode", "")),
            last.get("error", ""),
        )
    return table


@connectors.command("list")
def list_connectors(
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's connectors (credentials shown as ********)."""
    with api(url, token, api_key, state_dir) as client:
        items: list[dict[str, Any]] = []
        page = ""
        while True:
            reply = check(client.get("/api/v1/connectors", params={"pageToken": page}))
            items += reply["connectors"]
            page = reply["nextPageToken"]
            if not page:
                break
    show(items, as_json, _connectors_table)


@connectors.command("create")
def create_connector(
    name: Annotated[str, typer.Argument(help="Unique in the tenant.")],
    kind: Annotated[str, typer.Option(help="http, smtp, webhook or mcp")] = "http",
    settings: Settings = None,
    enabled: Annotated[bool, typer.Option("--enabled/--disabled")] = True,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create a connector, e.g. `--set url=https://crm.example.com --set auth=bearer
    --set token=...`."""
    body = {"name": name, "kind": kind, "config": _settings(settings), "enabled": enabled}
    with api(url, token, api_key, state_dir) as client:
        made = check(client.post("/api/v1/connectors", json=body), 201)
    show([made], as_json, _connectors_table)


@connectors.command("show")
def show_connector(
    connector_id: Annotated[str, typer.Argument(help="The connector's id.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """One connector as JSON, with its inbound webhook path."""
    with api(url, token, api_key, state_dir) as client:
        typer.echo(json.dumps(check(client.get(f"/api/v1/connectors/{connector_id}")), indent=2))


@connectors.command("update")
def update_connector(
    connector_id: Annotated[str, typer.Argument(help="The connector's id.")],
    settings: Settings = None,
    remove: Annotated[list[str] | None, typer.Option(help="A key to remove (repeatable)")] = None,
    name: Annotated[str | None, typer.Option(help="A new name")] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled")] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Change settings; a secret key given with --set rotates that credential."""
    body: dict[str, Any] = {"removeKeys": remove or []}
    if settings:
        body["config"] = _settings(settings)
    if name is not None:
        body["name"] = name
    if enabled is not None:
        body["enabled"] = enabled
    with api(url, token, api_key, state_dir) as client:
        made = check(client.patch(f"/api/v1/connectors/{connector_id}", json=body))
    show([made], as_json, _connectors_table)


@connectors.command("test")
def test_connector(
    connector_id: Annotated[str, typer.Argument(help="The connector's id.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Test the connection; exits 1 when it failed."""
    with api(url, token, api_key, state_dir) as client:
        result = check(client.post(f"/api/v1/connectors/{connector_id}/test"))
    typer.echo(("ok: " if result["ok"] else "failed: ") + result["detail"])
    if not result["ok"]:
        raise typer.Exit(1)


@connectors.command("delete")
def delete_connector(
    connector_id: Annotated[str, typer.Argument(help="The connector's id.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete a connector and destroy its credentials."""
    with api(url, token, api_key, state_dir) as client:
        check(client.delete(f"/api/v1/connectors/{connector_id}"), 204)
    typer.echo(f"deleted {connector_id}")


@webhooks.command("list")
def list_webhooks(
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The tenant's webhook subscriptions."""
    with api(url, token, api_key, state_dir) as client:
        items: list[dict[str, Any]] = []
        page = ""
        while True:
            reply = check(client.get("/api/v1/webhooks", params={"pageToken": page}))
            items += reply["webhooks"]
            page = reply["nextPageToken"]
            if not page:
                break
    show(items, as_json, _webhooks_table)


@webhooks.command("create")
def create_webhook(
    target: Annotated[str, typer.Argument(help="The receiver's URL.")],
    event_types: Annotated[
        list[str], typer.Option("--event", "-e", help="An event type or pattern (repeatable)")
    ],
    description: Annotated[str, typer.Option()] = "",
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Subscribe a URL; prints the signing secret, shown this once."""
    body = {"url": target, "eventTypes": event_types, "description": description}
    with api(url, token, api_key, state_dir) as client:
        made = check(client.post("/api/v1/webhooks", json=body), 201)
    typer.echo(f"{made['webhook']['id']}\nsecret (shown once): {made['secret']}")


@webhooks.command("rotate-secret")
def rotate_secret(
    webhook_id: Annotated[str, typer.Argument(help="The subscription's id.")],
    keep_previous: Annotated[
        int, typer.Option(help="Seconds the previous secret still signs")
    ] = 86_400,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """A new signing secret (shown once); the old one signs beside it for --keep-previous s."""
    with api(url, token, api_key, state_dir) as client:
        made = check(
            client.post(
                f"/api/v1/webhooks/{webhook_id}/rotate-secret",
                json={"previousSecretTtlSeconds": keep_previous},
            )
        )
    typer.echo(f"secret (shown once): {made['secret']}")


@webhooks.command("deliveries")
def list_deliveries(
    webhook_id: Annotated[str, typer.Argument(help="The subscription's id.")],
    state: Annotated[str | None, typer.Option(help="pending, succeeded or dead")] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The delivery log, newest first (first page); --state dead lists the dead letters."""
    params = {"state": state} if state else {}
    with api(url, token, api_key, state_dir) as client:
        reply = check(client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params=params))
    show(reply["deliveries"], as_json, _deliveries_table)


@webhooks.command("replay")
def replay(
    webhook_id: Annotated[str, typer.Argument(help="The subscription's id.")],
    delivery_id: Annotated[str, typer.Argument(help="The delivery's webhook-id (msg_...).")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Send a delivery again, same webhook-id."""
    with api(url, token, api_key, state_dir) as client:
        check(client.post(f"/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"))
    typer.echo(f"replaying {delivery_id}")


@webhooks.command("delete")
def delete_webhook(
    webhook_id: Annotated[str, typer.Argument(help="The subscription's id.")],
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete a subscription, its deliveries and its secret."""
    with api(url, token, api_key, state_dir) as client:
        check(client.delete(f"/api/v1/webhooks/{webhook_id}"), 204)
    typer.echo(f"deleted {webhook_id}")
