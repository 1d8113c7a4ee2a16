"""``edrs-gateway-admin`` (``python -m edrs_gateway.admin``): the gateway's bootstrap and break-glass
commands, run where the gateway's database is reachable (its image, a pod, the local fleet).

They use the gateway's store code on its own database rather than its HTTP API, on purpose: the API
needs an access token, and these commands are how the first one becomes possible (a tenant and its
first admin), or how an operator regains access when every admin is locked out (another admin, a
lockout lifted, a new signing key), or how an operator administers tenants over gRPC (an operator
token). Everything else — more users, API keys — goes through the REST
API (`edrs admin create-user` / `create-api-key` call it). ``edrs admin`` runs this command.

Settings are the gateway's own variables: EDRS_GATEWAY_DATABASE_URL (or --database-url),
EDRS_GATEWAY_KEY_ENCRYPTION_SECRET (to store a new signing key; with EDRS_ENVIRONMENT=development
the development default), EDRS_GATEWAY_ACCESS_TOKEN_TTL_SECONDS. Exit codes: 0 done, 1 failed,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from importlib.resources import files
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg
from edrs_core import ServiceError
from edrs_core.db import open_database
from pydantic import SecretStr

from edrs_gateway.auth.fleet_tokens import FleetTokens
from edrs_gateway.auth.passwords import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, Passwords
from edrs_gateway.auth.signing_keys import KeyRing, SigningKeyStore, signing_key_cipher
from edrs_gateway.config import GatewaySettings
from edrs_gateway.identity.audit import AuditLog
from edrs_gateway.identity.users import UserStore
from edrs_gateway.store import NewTenant
from edrs_gateway.store.postgres import PostgresTenantStore
from edrs_gateway.tenants import tenant_name

TIERS = ("standard", "professional", "enterprise")
OPERATOR = "operator:edrs-admin"

T = TypeVar("T")


class AdminError(Exception):
    """A failure to tell the operator in one line; `code` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _database_url(args: argparse.Namespace) -> str:
    url = args.database_url or os.environ.get("EDRS_GATEWAY_DATABASE_URL")
    if not url:
        raise AdminError(
            "no gateway database: pass --database-url or set EDRS_GATEWAY_DATABASE_URL "
            "(`edrs admin` finds the local fleet's)"
        )
    return str(url)


def _on_database(url: str, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Open the gateway database (creating and migrating it like the gateway does), run `work`."""

    async def main() -> T:
        try:
            pool = await open_database(url, files("edrs_gateway") / "migrations", pool_size=2)
        except (OSError, asyncpg.PostgresError) as exc:
            raise AdminError(
                f"cannot reach the gateway database at {_redacted(url)}: {exc}"
            ) from None
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def _tenant_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise AdminError(f"--tenant must be a tenant id (a UUID), got {value!r}", 2) from None


def _email(value: str, option: str) -> str:
    if "@" not in value.strip():
        raise AdminError(f"{option} must be an email address, got {value!r}", 2)
    return value.strip()


def _password(from_stdin: bool) -> str:
    """Read from stdin, or prompted twice on the terminal; never an argument (shell history)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat the password: ") != password:
            raise AdminError("the two passwords differ", 2)
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise AdminError(
            f"the password must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters", 2
        )
    return password


def _key_encryption_secret() -> SecretStr:
    """EDRS_GATEWAY_KEY_ENCRYPTION_SECRET; the development default only in development."""
    value = os.environ.get("EDRS_GATEWAY_KEY_ENCRYPTION_SECRET")
    if value:
        return SecretStr(value)
    if os.environ.get("EDRS_ENVIRONMENT") != "development":
        raise AdminError(
            "set EDRS_GATEWAY_KEY_ENCRYPTION_SECRET to the gateway's value: the new signing key is "
            "stored encrypted with it"
        )
    default = GatewaySettings.model_fields["key_encryption_secret"].default
    assert isinstance(default, SecretStr)
    return default


async def _require_tenant(db: asyncpg.Pool, tenant_id: UUID) -> None:
    if not await PostgresTenantStore(db).get(tenant_id):
        raise AdminError(f"no tenant with id {tenant_id}; `create-tenant` makes one")


async def _create_admin(
    db: asyncpg.Pool, tenant_id: UUID, email: str, display_name: str, password: str
) -> Any:
    try:
        user = await UserStore(db).create(
            tenant_id,
            email=email,
            display_name=display_name,
            password_hash=await Passwords().hash(password),
            role="admin",
        )
    except ServiceError as exc:
        raise AdminError(exc.message) from None
    await AuditLog(db).record(
        tenant_id, "user.created", "success", actor=OPERATOR, target=f"user:{user.id}",
        details={"role": "admin"},
    )  # fmt: skip
    return user


def create_tenant(args: argparse.Namespace) -> dict[str, Any]:
    if args.tier not in TIERS:
        raise AdminError(f"--tier must be one of {', '.join(TIERS)}; got {args.tier!r}", 2)
    email = _email(args.admin_email, "--admin-email") if args.admin_email else None
    password = _password(args.password_stdin) if email else None
    url = _database_url(args)

    async def work(db: asyncpg.Pool) -> dict[str, Any]:
        try:
            tenant = await PostgresTenantStore(db).create(
                NewTenant(name=tenant_name(args.name), tier=args.tier)
            )
        except ServiceError as exc:
            raise AdminError(exc.message) from None
        printed: dict[str, Any] = {"id": tenant.id, "name": tenant.name, "tier": tenant.tier}
        if email and password:
            # Should this fail (the database went away), `create-admin` adds the admin later.
            admin = await _create_admin(
                db, tenant.id, email, args.admin_display_name.strip(), password
            )
            printed |= {"adminId": admin.id, "adminEmail": admin.email}
        return printed

    return _on_database(url, work)


def create_admin(args: argparse.Namespace) -> dict[str, Any]:
    tenant_id = _tenant_id(args.tenant)
    email = _email(args.email, "--email")
    password = _password(args.password_stdin)
    url = _database_url(args)

    async def work(db: asyncpg.Pool) -> dict[str, Any]:
        await _require_tenant(db, tenant_id)
        user = await _create_admin(db, tenant_id, email, args.display_name.strip(), password)
        return {"id": user.id, "tenant": user.tenant_id, "email": user.email, "role": user.role}

    return _on_database(url, work)


def unlock_user(args: argparse.Namespace) -> dict[str, Any]:
    tenant_id = _tenant_id(args.tenant)
    email = _email(args.email, "--email")
    url = _database_url(args)

    async def work(db: asyncpg.Pool) -> dict[str, Any]:
        await _require_tenant(db, tenant_id)
        user = await UserStore(db).unlock(tenant_id, email)
        if user is None:
            raise AdminError(f"no user {email!r} in tenant {tenant_id}")
        await AuditLog(db).record(
            tenant_id, "user.unlocked", "success", actor=OPERATOR, target=f"user:{user.id}"
        )
        return {"id": user.id, "email": user.email, "lockedUntil": "(not locked)"}

    return _on_database(url, work)


def rotate_signing_key(args: argparse.Namespace) -> dict[str, Any]:
    url = _database_url(args)
    cipher = signing_key_cipher(_key_encryption_secret())

    async def work(db: asyncpg.Pool) -> dict[str, Any]:
        kid, retired = await SigningKeyStore(db, cipher).rotate(
            timedelta(seconds=args.access_token_ttl_seconds)
        )
        await AuditLog(db).record(
            None, "signing_key.rotated", "success", actor=OPERATOR, target=f"signing_key:{kid}",
            details={"retired": retired},
        )  # fmt: skip
        return {"kid": kid, "retired": ",".join(retired) or "(none)"}

    return _on_database(url, work)


def operator_token(args: argparse.Namespace) -> dict[str, Any]:
    """An operator's identity token for the fleet's gRPC ports (TenantService), signed with the
    gateway's key like the identities it forwards (auth/fleet_tokens.py)."""
    if not 60 <= args.ttl_seconds <= 3600:
        raise AdminError("--ttl-seconds must be between 60 and 3600", 2)
    url = _database_url(args)
    cipher = signing_key_cipher(_key_encryption_secret())
    defaults = GatewaySettings.model_fields
    issuer = os.environ.get("EDRS_GATEWAY_IDENTITY_ISSUER") or defaults["identity_issuer"].default
    audience = (
        os.environ.get("EDRS_GATEWAY_IDENTITY_AUDIENCE") or defaults["identity_audience"].default
    )

    async def work(db: asyncpg.Pool) -> dict[str, Any]:
        store = SigningKeyStore(db, cipher)
        await store.ensure_one()
        tokens = FleetTokens(
            KeyRing(store, cache_seconds=0),
            issuer=issuer,
            audience=audience,
            ttl_seconds=args.ttl_seconds,
        )
        identity = await tokens.operator(f"operator:{args.operator}", args.ttl_seconds)
        await AuditLog(db).record(
            None, "operator_token.issued", "success", actor=OPERATOR,
            target=f"operator:{args.operator}", details={"ttlSeconds": args.ttl_seconds},
        )  # fmt: skip
        return {"token": identity.token, "expiresIn": args.ttl_seconds}

    return _on_database(url, work)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise AdminError(f"{self.prog}: {message}", 2)


def parser() -> argparse.ArgumentParser:
    root = _Parser(
        prog="edrs-gateway-admin",
        description="The gateway's bootstrap and break-glass commands, on its own database. "
        "More users and API keys: the REST API (`edrs admin create-user`, `create-api-key`).",
    )
    commands = root.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str, run: Callable[[argparse.Namespace], dict[str, Any]]) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--database-url",
            help="The gateway's PostgreSQL database (default: EDRS_GATEWAY_DATABASE_URL).",
        )
        sub.set_defaults(run=run)
        return sub

    tenant = command("create-tenant", "Create a tenant, and with --admin-email its first admin.",
                     create_tenant)  # fmt: skip
    tenant.add_argument("name", help="The organisation's name (unique, ignoring case).")
    tenant.add_argument("--tier", default="standard", help=f"One of: {', '.join(TIERS)}.")
    tenant.add_argument("--admin-email", help="Create the tenant's first admin with this login.")
    tenant.add_argument("--admin-display-name", default="")
    tenant.add_argument("--password-stdin", action="store_true",
                        help="Read the admin's password from standard input (else prompted).")  # fmt: skip

    admin = command("create-admin", "Add an admin to a tenant (break-glass: no admin can log in).",
                    create_admin)  # fmt: skip
    admin.add_argument("--tenant", required=True, help="Tenant id.")
    admin.add_argument("--email", required=True, help="Login email (unique in the tenant).")
    admin.add_argument("--display-name", default="")
    admin.add_argument("--password-stdin", action="store_true",
                       help="Read the password from standard input (else prompted).")  # fmt: skip

    unlock = command("unlock-user", "Lift a user's lockout after failed logins.", unlock_user)
    unlock.add_argument("--tenant", required=True, help="Tenant id.")
    unlock.add_argument("--email", required=True, help="The user's login email.")

    rotate = command("rotate-signing-key",
                     "Add a new token-signing key (it signs from now on) and retire keys no token "
                     "needs.", rotate_signing_key)  # fmt: skip
    rotate.add_argument(
        "--access-token-ttl-seconds",
        type=int,
        default=int(os.environ.get("EDRS_GATEWAY_ACCESS_TOKEN_TTL_SECONDS", "3600")),
        help="The gateway's access-token lifetime: keys are kept that long after replacement.",
    )
    operator = command("operator-token",
                       "Print an operator's identity token for the fleet's gRPC ports (tenant "
                       "administration), sent as 'authorization: Bearer <token>'.",
                       operator_token)  # fmt: skip
    operator.add_argument("--ttl-seconds", type=int, default=900, help="Lifetime, 60 to 3600.")
    operator.add_argument("--operator", default="cli",
                          help="Who is acting: the token's subject and the audit log's target.")  # fmt: skip
    return root


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if getattr(args, "access_token_ttl_seconds", 60) < 60:
            raise AdminError("--access-token-ttl-seconds must be at least 60", 2)
        printed = args.run(args)
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    for name, value in printed.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
