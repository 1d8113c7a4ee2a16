"""``edrs admin``: tenants, users, API keys and the key that signs access tokens.

Two kinds of command, and neither makes `edrs` depend on the gateway:

- bootstrap and break-glass (``create-tenant``, ``create-admin``, ``unlock-user``,
  ``rotate-signing-key``, ``operator-token``) belong to the gateway and ship with it as
  ``edrs-gateway-admin``, which works on the gateway's database (no access token exists yet, or none can be had). ``edrs admin``
  runs that command — from this environment, or the one named by ``EDRS_GATEWAY_ADMIN_COMMAND``
  (e.g. ``kubectl exec -i deploy/gateway -- edrs-gateway-admin``) — and points it at the local
  fleet's database when no other is given;
- everything else (``create-user``, ``create-api-key``) is a client of the gateway's REST API, with
  a token like any other client.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import typer

from edrs_cli.gateway_api import (
    DEFAULT_STATE_DIR,
    ApiKey,
    GatewayApiError,
    StateDir,
    Token,
    Url,
    access_token,
    gateway_url,
    problem_detail,
)
from edrs_cli.supervisor import Fleet

app = typer.Typer(
    help="Tenants, users, API keys and signing keys of the gateway.",
    no_args_is_help=True,
)

GATEWAY_ADMIN = "edrs-gateway-admin"
GATEWAY_ADMIN_COMMAND = "EDRS_GATEWAY_ADMIN_COMMAND"
GATEWAY_DATABASE = "edrs_gateway"
TIMEOUT = httpx.Timeout(30.0)

# -- bootstrap and break-glass: the gateway's own command ------------------------------------------

FORWARDED = {
    "create-tenant": "Create a tenant, and with --admin-email its first admin.",
    "create-admin": "Add an admin to a tenant (break-glass: no admin can log in).",
    "unlock-user": "Lift a user's lockout after failed logins.",
    "rotate-signing-key": "Add a new token-signing key and retire keys no token needs.",
    "operator-token": "Print an operator's identity token for the fleet's gRPC ports.",
}


def gateway_database_url(postgres_url: str) -> str:
    """The gateway's database on the PostgreSQL server of `postgres_url` (as `edrs dev` names it)."""
    return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{GATEWAY_DATABASE}"))


def gateway_admin_command() -> list[str]:
    """EDRS_GATEWAY_ADMIN_COMMAND, else edrs-gateway-admin beside this interpreter or on PATH."""
    configured = os.environ.get(GATEWAY_ADMIN_COMMAND)
    if configured:
        return shlex.split(configured)
    beside = Path(sys.executable).parent / GATEWAY_ADMIN
    found = str(beside) if beside.exists() else shutil.which(GATEWAY_ADMIN)
    if found is None:
        raise GatewayApiError(
            f"{GATEWAY_ADMIN}, the gateway's admin command, is not installed here: install the "
            f"gateway package (edrs-gateway), or set {GATEWAY_ADMIN_COMMAND} to run it where the "
            f"gateway runs, e.g. 'kubectl exec -i deploy/gateway -- {GATEWAY_ADMIN}'"
        )
    return [found]


def _split_state_dir(args: list[str]) -> tuple[Path, list[str]]:
    """Take `--state-dir` (ours, to find the local fleet) out of the gateway command's arguments."""
    state_dir = Path(os.environ.get("EDRS_STATE_DIR", DEFAULT_STATE_DIR))
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--state-dir":
            state_dir = Path(next(items, str(state_dir)))
        elif arg.startswith("--state-dir="):
            state_dir = Path(arg.partition("=")[2])
        else:
            rest.append(arg)
    return state_dir, rest


def run_gateway_admin(command: str, args: list[str]) -> int:
    """Run ``edrs-gateway-admin <command> <args>``; its output is ours, its exit code too."""
    state_dir, rest = _split_state_dir(args)
    env = dict(os.environ)
    has_url = any(a == "--database-url" or a.startswith("--database-url=") for a in rest)
    wants_help = any(a in ("-h", "--help") for a in rest)
    if not has_url and not wants_help and not env.get("EDRS_GATEWAY_DATABASE_URL"):
        state = Fleet(state_dir).read_state() or {}
        postgres = state.get("engines", {}).get("postgres", {}).get("url")
        if not postgres:
            print(
                "error: no gateway database: pass --database-url (or set "
                "EDRS_GATEWAY_DATABASE_URL), or start the local fleet with `edrs dev up` "
                f"(no fleet.json in {state_dir})",
                file=sys.stderr,
            )
            return 1
        rest += ["--database-url", gateway_database_url(postgres)]
        # The local fleet is a development fleet: its gateway runs with the development defaults.
        env["EDRS_ENVIRONMENT"] = "development"
    try:
        base = gateway_admin_command()
    except GatewayApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Pass what we were given on stdin (a password) along; a terminal is inherited as it is.
    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    try:
        done = subprocess.run(
            [*base, command, *rest],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    except OSError as exc:
        print(f"error: cannot run {shlex.join(base)}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def _forwarding(command: str, help_text: str) -> None:
    @app.command(
        command,
        short_help=help_text,
        help=f"{help_text} Runs `{GATEWAY_ADMIN} {command}` ({command} --help: its options); "
        "--state-dir picks the local fleet whose database it uses when no --database-url is given.",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def forward(ctx: typer.Context) -> None:
        raise typer.Exit(run_gateway_admin(command, list(ctx.args)))


for _command, _help in FORWARDED.items():
    _forwarding(_command, _help)


# -- users and API keys: the REST API -------------------------------------------------------------

# Where the API's validation errors point, the option a user typed.
_OPTIONS = {
    "/email": "--email",
    "/role": "--role",
    "/displayName": "--display-name",
    "/password": "the password",
    "/name": "--name",
    "/scopes": "--scope",
    "/expiresInDays": "--expires-days",
}


def _fail(message: str, code: int) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _option(pointer: str) -> str:
    """The option behind a JSON pointer into the request body (``/scopes/0`` is ``--scope``)."""
    field = pointer.strip("/").split("/", 1)[0]
    return _OPTIONS.get(f"/{field}", pointer or "the request")


def _refusal(reply: httpx.Response) -> typer.Exit:
    """A refused request as one line per problem, naming the option; exit 2 for bad input."""
    if reply.status_code in (400, 422):
        try:
            errors = reply.json().get("errors") or []
        except ValueError:
            errors = []
        lines = [
            f"{_option(str(e.get('pointer', '')))}: {e.get('detail', '')}"
            for e in errors
            if isinstance(e, dict)
        ]
        return _fail("; ".join(lines) or problem_detail(reply), 2)
    return _fail(problem_detail(reply), 1)


def _post(url: str | None, token: str | None, api_key: str | None, state_dir: Path,
          path: str, body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    base = gateway_url(url, state_dir)
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            bearer = access_token(client, token, api_key)
            reply = client.post(path, json=body, headers={"Authorization": f"Bearer {bearer}"})
    except GatewayApiError as exc:
        raise _fail(str(exc), exc.code) from None
    except httpx.TransportError as exc:
        raise _fail(f"cannot reach the gateway at {base}: {exc}", 1) from None
    if reply.status_code != 201:
        raise _refusal(reply)
    return dict(reply.json())


def _print(fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        print(f"{name}: {value}")


@app.command("create-user")
def create_user(
    email: Annotated[str, typer.Option("--email", help="Login email (unique in the tenant).")],
    role: Annotated[str, typer.Option("--role", help="admin, member, integrator or viewer.")] = (
        "member"
    ),
    display_name: Annotated[str, typer.Option("--display-name")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create a user in the caller's tenant (POST /api/v1/users); the password is prompted for
    (or read from stdin), never an argument."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _post(
        url, token, api_key, state_dir, "/api/v1/users",
        {"email": email.strip(), "displayName": display_name.strip(), "password": password,
         "role": role},
    )  # fmt: skip
    _print({"id": user["id"], "email": user["email"], "role": user["role"]})


@app.command("create-api-key")
def create_api_key(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    role: Annotated[str, typer.Option("--role", help="admin, member, integrator or viewer.")] = (
        "integrator"
    ),
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Narrow the role to this permission; repeatable."),
    ] = None,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Expire after this many days.")
    ] = None,
    url: Url = None,
    token: Token = None,
    api_key: ApiKey = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create an API key in the caller's tenant (POST /api/v1/api-keys) and print it: this is the
    only time it is shown."""
    body: dict[str, Any] = {"name": name, "role": role, "scopes": sorted(set(scope or []))}
    if expires_days is not None:
        body["expiresInDays"] = expires_days
    key = _post(url, token, api_key, state_dir, "/api/v1/api-keys", body)
    _print(
        {
            "id": key["id"],
            "prefix": key["prefix"],
            "role": key["role"],
            "scopes": ",".join(key["scopes"]) or "(all of the role's)",
            "expiresAt": key["expiresAt"] or "never",
            "apiKey": key["apiKey"],
        }
    )
    print("store the key now: it is not shown again", file=sys.stderr)
