"""The operator side of identity: the development bootstrap and `edrs admin` commands, run with
typer's CliRunner against the gateway database of a real gateway, then used over HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from click.testing import Result
from edrs_cli.admin import development_token_command
from edrs_cli.main import app
from edrs_core.testing import RunningService, engine_settings, running_service
from edrs_gateway.app import definition
from edrs_gateway.config import GatewaySettings
from edrs_gateway.identity.bootstrap import DEV_ADMIN_EMAIL
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

DEV_PASSWORD = "a-development-password"
# The gateway below runs in development, so it uses the development key-encryption secret.
DEV_KEY_SECRET = GatewaySettings.model_fields["key_encryption_secret"].default.get_secret_value()


@pytest.fixture(scope="module")
def database_url(postgres_engine) -> str:
    return postgres_engine.url("test_gateway_identity_cli")


@pytest.fixture(scope="module")
async def gateway(
    postgres_engine, redis_engine, nats_engine, database_url
) -> AsyncIterator[RunningService]:
    settings = engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_gateway_identity_cli", redis_db=0
    )
    async with running_service(
        definition,
        **settings,
        EDRS_ENVIRONMENT="development",
        dev_admin_password=DEV_PASSWORD,
        signing_key_cache_seconds=0,
    ) as svc:
        yield svc


@pytest.fixture
async def client(gateway: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        yield http


async def edrs(
    database_url: str | None, *args: str, stdin: str | None = None, **env: str | None
) -> Result:
    """Run `edrs ...` as an operator would; in a thread, since the command runs its own loop."""
    environment: dict[str, str | None] = {
        "EDRS_GATEWAY_DATABASE_URL": database_url,
        "EDRS_GATEWAY_KEY_ENCRYPTION_SECRET": None,
        **env,
    }
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, list(args), input=stdin, env=environment, catch_exceptions=False
    )


def fields(result: Result) -> dict[str, str]:
    assert result.exit_code == 0, result.output
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


async def token_for(client: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await client.post("/api/v1/auth/token", json=body)


async def test_first_development_start_creates_a_tenant_and_an_admin_to_log_in_with(
    gateway, client, database_url, monkeypatch
) -> None:
    # `edrs dev up` passes its environment to the gateway, so both read the same variable.
    monkeypatch.setenv("EDRS_GATEWAY_DEV_ADMIN_PASSWORD", DEV_PASSWORD)
    command = await asyncio.to_thread(development_token_command, database_url, gateway.http_url)
    assert command is not None and command.startswith(
        f"curl -s -X POST {gateway.http_url}/api/v1/auth/token"
    )
    body = json.loads(command.split("-d '", 1)[1].rstrip("'"))
    assert body["email"] == DEV_ADMIN_EMAIL and body["password"] == DEV_PASSWORD
    reply = await token_for(client, body)
    assert reply.status_code == 200, reply.text
    claims = jwt.decode(reply.json()["accessToken"], options={"verify_signature": False})
    assert claims["role"] == "admin" and claims["tier"] == "enterprise"
    tenant = await client.get(
        "/api/v1/tenant", headers={"Authorization": f"Bearer {reply.json()['accessToken']}"}
    )
    assert tenant.json()["name"] == "Development"


async def test_operator_bootstraps_a_tenant_a_user_and_an_api_key(client, database_url) -> None:
    name = f"Acme {uuid.uuid4().hex[:6]}"
    tenant = fields(
        await edrs(database_url, "admin", "create-tenant", name, "--tier", "professional")
    )
    assert tenant["name"] == name and tenant["tier"] == "professional"
    user = fields(
        await edrs(
            database_url, "admin", "create-user", "--tenant", tenant["id"], "--email",
            "ops@acme.example", "--role", "admin", "--password-stdin",
            stdin="operator password 1\n",
        )
    )  # fmt: skip
    assert user["role"] == "admin"
    login = await token_for(
        client,
        {"grantType": "password", "tenantId": tenant["id"], "email": "ops@acme.example",
         "password": "operator password 1"},
    )  # fmt: skip
    assert login.status_code == 200
    claims = jwt.decode(login.json()["accessToken"], options={"verify_signature": False})
    assert claims["tid"] == tenant["id"] and claims["tier"] == "professional"

    created = await edrs(
        database_url, "admin", "create-api-key", "--tenant", tenant["id"], "--name", "ci",
        "--role", "integrator", "--scope", "events:publish", "--expires-days", "7",
    )  # fmt: skip
    key = fields(created)
    assert "not shown again" in created.stderr
    granted = await token_for(client, {"grantType": "apiKey", "apiKey": key["apiKey"]})
    assert granted.status_code == 200
    key_claims = jwt.decode(granted.json()["accessToken"], options={"verify_signature": False})
    assert key_claims["scp"] == ["events:publish"] and key_claims["knd"] == "api_key"

    admin = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    audit = (await client.get("/api/v1/audit-events", headers=admin)).json()["auditEvents"]
    by_operator = {e["action"] for e in audit if e["actor"] == "operator:edrs-admin"}
    assert by_operator == {"user.created", "api_key.created"}
    assert key["apiKey"] not in json.dumps(audit)


async def test_rotate_signing_key_keeps_issued_tokens_valid(client, database_url) -> None:
    login = await token_for(
        client,
        {"grantType": "password", "tenantId": await _dev_tenant(database_url),
         "email": DEV_ADMIN_EMAIL, "password": DEV_PASSWORD},
    )  # fmt: skip
    token = login.json()["accessToken"]
    before = {k["kid"] for k in (await client.get("/api/v1/.well-known/jwks.json")).json()["keys"]}
    rotated = fields(
        await edrs(
            database_url, "admin", "rotate-signing-key",
            EDRS_GATEWAY_KEY_ENCRYPTION_SECRET=DEV_KEY_SECRET,
        )
    )  # fmt: skip
    after = {k["kid"] for k in (await client.get("/api/v1/.well-known/jwks.json")).json()["keys"]}
    assert after == before | {rotated["kid"]}
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/tenant", headers=headers)).status_code == 200


async def test_rotation_against_a_named_database_needs_the_gateways_secret(database_url) -> None:
    result = await edrs(database_url, "admin", "rotate-signing-key")
    assert result.exit_code == 1
    assert "EDRS_GATEWAY_KEY_ENCRYPTION_SECRET" in result.stderr


async def test_without_a_url_the_local_fleets_database_is_used(
    postgres_engine, tmp_path: Path
) -> None:
    (tmp_path / "fleet.json").write_text(
        json.dumps({"engines": {"postgres": {"url": postgres_engine.url()}}})
    )
    name = f"Local {uuid.uuid4().hex[:6]}"
    created = fields(await edrs(None, "admin", "create-tenant", name, "--state-dir", str(tmp_path)))
    again = await edrs(None, "admin", "create-tenant", name.upper(), "--state-dir", str(tmp_path))
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert created["name"] == name
    nothing = await edrs(None, "admin", "create-tenant", "X", "--state-dir", str(tmp_path / "none"))
    assert nothing.exit_code == 1 and "--database-url" in nothing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create-tenant", "T", "--tier", "gold"], "--tier must be one of"),
        (["create-user", "--tenant", "nope", "--email", "a@b.c", "--password-stdin"], "--tenant must be"),
        (["create-user", "--tenant", str(uuid.uuid4()), "--email", "a@b.c", "--role", "root",
          "--password-stdin"], "--role must be one of"),
        (["create-api-key", "--tenant", str(uuid.uuid4()), "--name", "n", "--role", "viewer",
          "--scope", "users:write"], "beyond what the role"),
        (["create-api-key", "--tenant", str(uuid.uuid4()), "--name", "n", "--scope", "root"],
         "is not a permission"),
    ],
)  # fmt: skip
async def test_bad_arguments_are_refused_naming_the_option(database_url, args, message) -> None:
    result = await edrs(database_url, "admin", *args, stdin="long enough password\n")
    assert result.exit_code == 2
    assert message in result.stderr


async def test_an_unknown_tenant_is_named(database_url) -> None:
    missing = str(uuid.uuid4())
    result = await edrs(database_url, "admin", "create-api-key", "--tenant", missing, "--name", "n")
    assert result.exit_code == 1
    assert f"no tenant with id {missing}" in result.stderr


async def _dev_tenant(database_url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        return str(await conn.fetchval("SELECT id FROM tenants WHERE name = 'Development'"))
    finally:
        await conn.close()
