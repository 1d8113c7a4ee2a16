"""The gateway's REST API as the `edrs` commands use it: where it is, and how to get a token.

Credentials, in order: an access token (--token / EDRS_TOKEN), an API key exchanged for one
(--api-key / EDRS_API_KEY), or, beside a local development fleet, the development admin that the
gateway created on its first start (found through `GET /api/v1/auth/development-login`). No command
reads the gateway's database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from edrs_cli.supervisor import Fleet

DEFAULT_STATE_DIR = Path(".edrs")
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
DEV_PASSWORD_VARIABLE = "EDRS_GATEWAY_DEV_ADMIN_PASSWORD"


# The options every command that talks to the gateway's API takes.
Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="EDRS_URL",
        help="The gateway. Default: the local fleet's, else http://127.0.0.1:8080.",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EDRS_TOKEN",
        help="An access token (an admin's for `edrs admin`).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="EDRS_API_KEY", help="An API key to log in with.", show_default=False
    ),
]
StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="EDRS_STATE_DIR",
        help="The local fleet's state dir (its gateway and development admin).",
        file_okay=False,
    ),
]


class GatewayApiError(Exception):
    """A failure to tell the user in one line; `code` is the exit code (2: the request was bad)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def gateway_url(url: str | None, state_dir: Path) -> str:
    """--url, else the local fleet's gateway (fleet.json), else the default local port."""
    if url:
        return url.rstrip("/")
    state = Fleet(state_dir).read_state() or {}
    found = state.get("gateway_url")
    return str(found).rstrip("/") if found else DEFAULT_GATEWAY_URL


def problem_detail(reply: httpx.Response) -> str:
    """The problem+json `detail` (or title) of an error reply."""
    try:
        body = reply.json()
    except ValueError:
        return f"HTTP {reply.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {reply.status_code}"
    return str(body.get("detail") or body.get("title") or f"HTTP {reply.status_code}")


def access_token(client: httpx.Client, token: str | None, api_key: str | None) -> str:
    """The token given, else the API key exchanged for one, else the development admin's."""
    if token:
        return token
    if api_key:
        reply = client.post("/api/v1/auth/token", json={"grantType": "apiKey", "apiKey": api_key})
        if reply.status_code != 200:
            raise GatewayApiError(f"authentication failed: {problem_detail(reply)}")
        return str(reply.json()["accessToken"])
    return development_token(client)


def development_login(client: httpx.Client) -> dict[str, Any] | None:
    """The password grant of the gateway's development admin, or None when it has none (not in
    development, tenants existed before its first start, or it cannot be reached)."""
    try:
        reply = client.get("/api/v1/auth/development-login")
    except httpx.TransportError:
        return None
    if reply.status_code != 200:
        return None
    found = reply.json()
    # The gateway discloses only the public default; a configured password is read from the same
    # variable the gateway reads (`edrs dev up` passes its environment to the gateway).
    password = os.environ.get(DEV_PASSWORD_VARIABLE) or found.get("password")
    if not password:
        return None
    return {
        "grantType": "password",
        "tenantId": found["tenantId"],
        "email": found["email"],
        "password": password,
    }


def development_token(client: httpx.Client) -> str:
    grant = development_login(client)
    if grant is None:
        raise GatewayApiError(
            "no credentials: pass --token (or EDRS_TOKEN) or --api-key (or EDRS_API_KEY); without "
            f"them only the development admin of a local development fleet is used, and the "
            f"gateway at {client.base_url} has none"
        )
    reply = client.post("/api/v1/auth/token", json=grant)
    if reply.status_code != 200:
        raise GatewayApiError(f"authentication failed (development admin): {problem_detail(reply)}")
    return str(reply.json()["accessToken"])


def token_curl(base_url: str, grant: dict[str, Any]) -> str:
    """The curl command that exchanges `grant` for a token."""
    return (
        f"curl -s -X POST {base_url}/api/v1/auth/token "
        f"-H 'Content-Type: application/json' -d '{json.dumps(grant)}'"
    )
