"""First start: a signing key always; in development also a tenant and an admin to log in with."""

from __future__ import annotations

import json
import logging
from uuid import UUID

import asyncpg
from edrs_core import AlreadyExists

from edrs_gateway.auth.passwords import Passwords
from edrs_gateway.auth.signing_keys import SigningKeyStore, signing_key_cipher
from edrs_gateway.config import GatewaySettings
from edrs_gateway.identity.users import UserStore
from edrs_gateway.store import NewTenant
from edrs_gateway.store.postgres import PostgresTenantStore

log = logging.getLogger("edrs.gateway.bootstrap")

DEV_TENANT_NAME = "Development"
DEV_ADMIN_EMAIL = "admin@edrs.local"
# Used only with EDRS_ENVIRONMENT=development when EDRS_GATEWAY_DEV_ADMIN_PASSWORD is unset.
DEV_ADMIN_PASSWORD = "edrs-development-admin"


def dev_admin_password(settings: GatewaySettings) -> str:
    secret = settings.dev_admin_password
    return secret.get_secret_value() if secret is not None else DEV_ADMIN_PASSWORD


def token_curl(base_url: str, tenant_id: str, password: str) -> str:
    """The command that gets a token for the development admin."""
    body = json.dumps(
        {
            "grantType": "password",
            "tenantId": tenant_id,
            "email": DEV_ADMIN_EMAIL,
            "password": password,
        }
    )
    return (
        f"curl -s -X POST {base_url}/api/v1/auth/token "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


async def bootstrap(db: asyncpg.Pool, settings: GatewaySettings, passwords: Passwords) -> None:
    await SigningKeyStore(db, signing_key_cipher(settings.key_encryption_secret)).ensure_one()
    if settings.environment != "development":
        return
    if await db.fetchval("SELECT EXISTS (SELECT 1 FROM tenants)"):
        return
    try:
        tenant = await PostgresTenantStore(db).create(
            NewTenant(name=DEV_TENANT_NAME, tier="enterprise")
        )
    except AlreadyExists:
        return  # another replica got there first
    password = dev_admin_password(settings)
    await UserStore(db).create(
        tenant.id,
        email=DEV_ADMIN_EMAIL,
        display_name="Development admin",
        password_hash=await passwords.hash(password),
        role="admin",
    )
    base = f"http://{settings.host}:{settings.http_port}"
    # The public default may be shown; a password the operator chose is a secret and never logged.
    shown = "$EDRS_GATEWAY_DEV_ADMIN_PASSWORD" if settings.dev_admin_password else password
    log.info(
        "created the development tenant %s (%s) and its admin %s; get a token with: %s",
        DEV_TENANT_NAME,
        tenant.id,
        DEV_ADMIN_EMAIL,
        token_curl(base, str(tenant.id), shown),
    )


async def development_tenant_id(db: asyncpg.Pool) -> UUID | None:
    """The tenant of the development admin created on the first development start, if any."""
    found = await db.fetchval(
        "SELECT t.id FROM tenants t JOIN users u ON u.tenant_id = t.id "
        "WHERE t.name = $1 AND lower(u.email) = lower($2) AND u.role = 'admin'",
        DEV_TENANT_NAME,
        DEV_ADMIN_EMAIL,
    )
    return found if isinstance(found, UUID) else None
