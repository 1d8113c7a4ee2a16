"""``edrs admin``: operator commands that bootstrap access to the gateway: tenants, users,
API keys and the key that signs access tokens.

They use the gateway's own store code on the gateway's own database rather than its HTTP API,
on purpose: the API needs an access token, and these commands are how the first one becomes
possible (no tenant or admin exists yet), or how an operator regains access when every admin is
locked out. They run where the database is reachable (a pod, the local fleet), like a migration.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import typer
from pydantic import SecretStr

from edrs_cli.supervisor import Fleet

if TYPE_CHECKING:
    import asyncpg

app = typer.Typer(
    help="Bootstrap access to the gateway: tenants, users, API keys, signing keys.",
    no_args_is_help=True,
)

GATEWAY_DATABASE = "edrs_gateway"
ROLES = ("admin", "member", "integrator", "viewer")
TIERS = ("standard", "professional", "enterprise")
OPERATOR = "operator:edrs-admin"

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="EDRS_GATEWAY_DATABASE_URL",
        help="The gateway's PostgreSQL database. Default: the running local fleet's.",
        show_default=False,
    ),
]
StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="EDRS_STATE_DIR",
        help="The local fleet's state dir, to find its database when no URL is given.",
        file_okay=False,
    ),
]
DEFAULT_STATE_DIR = Path(".edrs")


@dataclass(frozen=True)
class Target:
    url: str
    local_fleet: bool


def fail(message: str, code: int = 1) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def gateway_database(database_url: str | None, state_dir: Path) -> Target:
    """The URL given, else the local fleet's PostgreSQL with the gateway's database name."""
    if database_url:
        return Target(database_url, local_fleet=False)
    state = Fleet(state_dir).read_state() or {}
    engine_url = state.get("engines", {}).get("postgres", {}).get("url")
    if not engine_url:
        raise fail(
            "no gateway database: pass --database-url (or set EDRS_GATEWAY_DATABASE_URL), "
            f"or start the local fleet with `edrs dev up` (no fleet.json in {state_dir})"
        )
    return Target(gateway_database_url(engine_url), local_fleet=True)


def gateway_database_url(postgres_url: str) -> str:
    """The gateway's database on the PostgreSQL server of `postgres_url` (as `edrs dev` names it)."""
    return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{GATEWAY_DATABASE}"))


def key_encryption_secret(target: Target) -> SecretStr:
    """EDRS_GATEWAY_KEY_ENCRYPTION_SECRET; the development default only for the local fleet."""
    value = os.environ.get("EDRS_GATEWAY_KEY_ENCRYPTION_SECRET")
    if value:
        return SecretStr(value)
    if not target.local_fleet:
        raise fail(
            "set EDRS_GATEWAY_KEY_ENCRYPTION_SECRET to the gateway's value: the new signing key is "
            "stored encrypted with it"
        )
    from edrs_gateway.config import GatewaySettings

    default = GatewaySettings.model_fields["key_encryption_secret"].default
    assert isinstance(default, SecretStr)
    return default


T = TypeVar("T")


def run_on_database(url: str, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Open the gateway database (creating and migrating it like the gateway does), run `work`."""
    from edrs_core.db import open_database

    async def main() -> T:
        try:
            pool = await open_database(url, files("edrs_gateway") / "migrations", pool_size=2)
        except OSError as exc:
            raise fail(f"cannot reach the gateway database at {_redacted(url)}: {exc}") from None
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _tenant_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise fail(f"--tenant must be a tenant id (a UUID), got {value!r}", 2) from None


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise fail(f"{option} must be one of {', '.join(allowed)}; got {value!r}", 2)
    return value


def _print(fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        print(f"{name}: {value}")


@app.command("create-tenant")
def create_tenant(
    name: Annotated[str, typer.Argument(help="The organisation's name (unique, ignoring case).")],
    tier: Annotated[str, typer.Option(help=f"One of: {', '.join(TIERS)}.")] = "standard",
    database_url: DatabaseUrl = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create a tenant and print its id."""
    from edrs_core import ServiceError
    from edrs_gateway.store import NewTenant
    from edrs_gateway.store.postgres import PostgresTenantStore
    from edrs_gateway.tenants import tenant_name

    tier = _choice(tier, TIERS, "--tier")
    target = gateway_database(database_url, state_dir)

    async def work(db: asyncpg.Pool) -> Any:
        try:
            return await PostgresTenantStore(db).create(
                NewTenant(name=tenant_name(name), tier=tier)
            )
        except ServiceError as exc:
            raise fail(exc.message) from None

    tenant = run_on_database(target.url, work)
    _print({"id": tenant.id, "name": tenant.name, "tier": tenant.tier})


@app.command("create-user")
def create_user(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    email: Annotated[str, typer.Option("--email", help="Login email (unique in the tenant).")],
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")] = "member",
    display_name: Annotated[str, typer.Option("--display-name")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    database_url: DatabaseUrl = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create a user; the password is prompted for (or read from stdin), never an argument."""
    from edrs_core import ServiceError
    from edrs_gateway.auth.passwords import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, Passwords
    from edrs_gateway.identity.audit import AuditLog
    from edrs_gateway.identity.users import UserStore

    tenant_id = _tenant_id(tenant)
    role = _choice(role, ROLES, "--role")
    if "@" not in email.strip():
        raise fail(f"--email must be an email address, got {email!r}", 2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise fail(
            f"the password must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters", 2
        )
    target = gateway_database(database_url, state_dir)

    async def work(db: asyncpg.Pool) -> Any:
        await _require_tenant(db, tenant_id)
        try:
            user = await UserStore(db).create(
                tenant_id,
                email=email.strip(),
                display_name=display_name.strip(),
                password_hash=await Passwords().hash(password),
                role=role,
            )
        except ServiceError as exc:
            raise fail(exc.message) from None
        await AuditLog(db).record(
            tenant_id, "user.created", "success", actor=OPERATOR, target=f"user:{user.id}",
            details={"role": role},
        )  # fmt: skip
        return user

    user = run_on_database(target.url, work)
    _print({"id": user.id, "tenant": user.tenant_id, "email": user.email, "role": user.role})


@app.command("create-api-key")
def create_api_key(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")] = (
        "integrator"
    ),
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Narrow the role to this permission; repeatable."),
    ] = None,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Expire after this many days.")
    ] = None,
    database_url: DatabaseUrl = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create an API key and print it: this is the only time it is shown."""
    from edrs_gateway.auth.permissions import ROLE_PERMISSIONS, Permission
    from edrs_gateway.identity.api_keys import ApiKeyStore
    from edrs_gateway.identity.audit import AuditLog

    tenant_id = _tenant_id(tenant)
    role = _choice(role, ROLES, "--role")
    if not name.strip():
        raise fail("--name must not be blank", 2)
    known = {p.value for p in Permission}
    scopes = tuple(sorted(set(scope or [])))
    for s in scopes:
        if s not in known:
            raise fail(f"--scope {s!r} is not a permission; valid: {', '.join(sorted(known))}", 2)
        if Permission(s) not in ROLE_PERMISSIONS[role]:
            raise fail(f"--scope {s!r} is beyond what the role {role!r} allows", 2)
    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    target = gateway_database(database_url, state_dir)

    async def work(db: asyncpg.Pool) -> Any:
        await _require_tenant(db, tenant_id)
        key, plaintext = await ApiKeyStore(db).create(
            tenant_id,
            name=name.strip(),
            role=role,
            scopes=scopes,
            expires_at=expires_at,
        )
        await AuditLog(db).record(
            tenant_id, "api_key.created", "success", actor=OPERATOR, target=f"api_key:{key.id}",
            details={"name": key.name, "prefix": key.prefix, "role": key.role,
                     "scopes": list(key.scopes)},
        )  # fmt: skip
        return key, plaintext

    key, plaintext = run_on_database(target.url, work)
    _print(
        {
            "id": key.id,
            "prefix": key.prefix,
            "role": key.role,
            "scopes": ",".join(key.scopes) or "(all of the role's)",
            "expiresAt": key.expires_at.isoformat() if key.expires_at else "never",
            "apiKey": plaintext,
        }
    )
    print("store the key now: it is not shown again", file=sys.stderr)


@app.command("rotate-signing-key")
def rotate_signing_key(
    access_token_ttl_seconds: Annotated[
        int,
        typer.Option(
            envvar="EDRS_GATEWAY_ACCESS_TOKEN_TTL_SECONDS",
            min=60,
            help="The gateway's access-token lifetime: keys are kept that long after replacement.",
        ),
    ] = 3600,
    database_url: DatabaseUrl = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Add a new token-signing key (it signs from now on) and retire keys no token needs."""
    from edrs_gateway.auth.signing_keys import SigningKeyStore, signing_key_cipher
    from edrs_gateway.identity.audit import AuditLog

    target = gateway_database(database_url, state_dir)
    cipher = signing_key_cipher(key_encryption_secret(target))

    async def work(db: asyncpg.Pool) -> tuple[str, list[str]]:
        kid, retired = await SigningKeyStore(db, cipher).rotate(
            timedelta(seconds=access_token_ttl_seconds)
        )
        await AuditLog(db).record(
            None, "signing_key.rotated", "success", actor=OPERATOR, target=f"signing_key:{kid}",
            details={"retired": retired},
        )  # fmt: skip
        return kid, retired

    kid, retired = run_on_database(target.url, work)
    _print({"kid": kid, "retired": ",".join(retired) or "(none)"})


async def _require_tenant(db: asyncpg.Pool, tenant_id: UUID) -> None:
    if not await db.fetchval("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)", tenant_id):
        raise fail(f"no tenant with id {tenant_id}; `edrs admin create-tenant` makes one")


def development_tenant_id(database_url: str) -> str | None:
    """The id of the tenant the gateway created on its first development start, or None (no
    such tenant, or the database cannot be reached)."""
    import asyncpg
    from edrs_gateway.identity.bootstrap import DEV_TENANT_NAME

    async def tenant_id() -> str | None:
        conn = await asyncpg.connect(database_url)
        try:
            found = await conn.fetchval("SELECT id FROM tenants WHERE name = $1", DEV_TENANT_NAME)
        finally:
            await conn.close()
        return str(found) if found else None

    try:
        return asyncio.run(tenant_id())
    except (OSError, asyncpg.PostgresError):
        return None


def development_token_command(database_url: str, gateway_url: str) -> str | None:
    """The curl command that gets a token for the development admin the gateway created on its
    first development start; None when there is no such tenant (e.g. tenants were made first)."""
    from edrs_gateway.identity.bootstrap import DEV_ADMIN_PASSWORD, token_curl

    found = development_tenant_id(database_url)
    if found is None:
        return None
    password = os.environ.get("EDRS_GATEWAY_DEV_ADMIN_PASSWORD") or DEV_ADMIN_PASSWORD
    return token_curl(gateway_url, found, password)
