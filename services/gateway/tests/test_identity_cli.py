"""The operator side of identity: the development bootstrap, the gateway's own bootstrap and
break-glass commands (`edrs-gateway-admin`, reached through `edrs admin`), and `edrs admin`'s
users and API keys through the REST API — each run as an operator runs it, in its own process,
against a real gateway, then used over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from edrs_cli.gateway_api import development_login, token_curl
from edrs_core.testing import HTTP_TIMEOUT, RunningService, engine_settings, running_service
from edrs_gateway.app import definition
from edrs_gateway.config import GatewaySettings
from edrs_gateway.identity.bootstrap import DEV_ADMIN_EMAIL

pytestmark = pytest.mark.integration

DEV_PASSWORD = "a-development-password"
# The gateway below runs in development, so it uses the development key-encryption secret.
DEV_KEY_SECRET = GatewaySettings.model_fields["key_encryption_secret"].default.get_secret_value()
LOCKOUT_THRESHOLD = 3


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
        lockout_threshold=LOCKOUT_THRESHOLD,
    ) as svc:
        yield svc


@pytest.fixture
async def client(gateway: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as http:
        yield http


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


async def edrs(
    database_url: str | None, *args: str, stdin: str | None = None, **env: str | None
) -> Result:
    """Run `edrs ...` as an operator would, in its own process (the gateway shares this loop)."""
    environment = {
        **os.environ,
        "EDRS_GATEWAY_DATABASE_URL": database_url,
        "EDRS_GATEWAY_KEY_ENCRYPTION_SECRET": None,
        # `edrs dev up` passes its environment to the gateway, so both read the same variable.
        "EDRS_GATEWAY_DEV_ADMIN_PASSWORD": DEV_PASSWORD,
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edrs_cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in environment.items() if v is not None},
    )
    out, err = await proc.communicate((stdin or "").encode())
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def fields(result: Result) -> dict[str, str]:
    assert result.exit_code == 0, result.stdout + result.stderr
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


async def token_for(client: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await client.post("/api/v1/auth/token", json=body)


async def test_first_development_start_creates_a_tenant_and_an_admin_to_log_in_with(
    gateway, client, monkeypatch
) -> None:
    # The gateway's API says where the development admin logs in; a configured password is not
    # disclosed, the client reads it from the variable the gateway read.
    found = (await client.get("/api/v1/auth/development-login")).json()
    assert found["email"] == DEV_ADMIN_EMAIL and found["password"] is None
    monkeypatch.setenv("EDRS_GATEWAY_DEV_ADMIN_PASSWORD", DEV_PASSWORD)

    def login() -> dict | None:
        with httpx.Client(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as sync_client:
            return development_login(sync_client)

    grant = await asyncio.to_thread(login)
    assert grant is not None
    command = token_curl(gateway.http_url, grant)
    assert command.startswith(f"curl -s -X POST {gateway.http_url}/api/v1/auth/token")
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


async def test_operator_bootstraps_a_tenant_and_its_admin_who_adds_a_user_and_an_api_key(
    gateway, client, database_url
) -> None:
    name = f"Acme {uuid.uuid4().hex[:6]}"
    tenant = fields(
        await edrs(
            database_url, "admin", "create-tenant", name, "--tier", "professional",
            "--admin-email", "ops@acme.example", "--password-stdin",
            stdin="operator password 1\n",
        )
    )  # fmt: skip
    assert tenant["name"] == name and tenant["tier"] == "professional"
    assert tenant["adminEmail"] == "ops@acme.example"
    login = await token_for(
        client,
        {"grantType": "password", "tenantId": tenant["id"], "email": "ops@acme.example",
         "password": "operator password 1"},
    )  # fmt: skip
    assert login.status_code == 200
    claims = jwt.decode(login.json()["accessToken"], options={"verify_signature": False})
    assert claims["tid"] == tenant["id"] and claims["tier"] == "professional"
    token = login.json()["accessToken"]

    # Further users and keys: the REST API, with the admin's token.
    rest = ["--url", gateway.http_url, "--token", token]
    user = fields(
        await edrs(
            None, "admin", "create-user", "--email", "ann@acme.example", "--role", "admin",
            "--password-stdin", *rest, stdin="ann's password 1\n",
        )
    )  # fmt: skip
    assert user["role"] == "admin" and user["email"] == "ann@acme.example"
    ann = await token_for(
        client,
        {"grantType": "password", "tenantId": tenant["id"], "email": "ann@acme.example",
         "password": "ann's password 1"},
    )  # fmt: skip
    assert ann.status_code == 200

    created = await edrs(
        None, "admin", "create-api-key", "--name", "ci", "--role", "integrator",
        "--scope", "events:publish", "--expires-days", "7", *rest,
    )  # fmt: skip
    key = fields(created)
    assert "not shown again" in created.stderr
    granted = await token_for(client, {"grantType": "apiKey", "apiKey": key["apiKey"]})
    assert granted.status_code == 200
    key_claims = jwt.decode(granted.json()["accessToken"], options={"verify_signature": False})
    assert key_claims["scp"] == ["events:publish"] and key_claims["knd"] == "api_key"
    assert key_claims["tid"] == tenant["id"]

    admin = {"Authorization": f"Bearer {token}"}
    audit = (await client.get("/api/v1/audit-events", headers=admin)).json()["auditEvents"]
    by_operator = {e["action"] for e in audit if e["actor"] == "operator:edrs-admin"}
    assert by_operator == {"user.created"}
    by_admin = {e["action"] for e in audit if e["actor"] == f"user:{tenant['adminId']}"}
    assert {"user.created", "api_key.created"} <= by_admin
    assert key["apiKey"] not in json.dumps(audit)


async def test_rotate_signing_key_keeps_issued_tokens_valid(client, database_url) -> None:
    login = await token_for(
        client,
        {"grantType": "password", "tenantId": await _dev_tenant(client),
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
        (["create-admin", "--tenant", "nope", "--email", "a@b.c", "--password-stdin"],
         "--tenant must be"),
        (["create-user", "--email", "a@b.c", "--role", "root", "--password-stdin"], "--role: "),
        (["create-api-key", "--name", "n", "--role", "viewer", "--scope", "users:write"],
         "--scope: scope beyond the role"),
        (["create-api-key", "--name", "n", "--scope", "root"], "--scope: "),
    ],
)  # fmt: skip
async def test_bad_arguments_are_refused_naming_the_option(
    gateway, database_url, args, message
) -> None:
    # The REST commands log in as the development admin (no token): the gateway is in development.
    result = await edrs(
        database_url, "admin", *args, stdin="long enough password\n", EDRS_URL=gateway.http_url
    )
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in result.stderr


async def test_an_unknown_tenant_is_named(database_url) -> None:
    missing = str(uuid.uuid4())
    result = await edrs(
        database_url, "admin", "create-admin", "--tenant", missing, "--email", "a@b.c",
        "--password-stdin", stdin="long enough password\n",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"no tenant with id {missing}" in result.stderr


async def test_break_glass_a_new_admin_and_a_lifted_lockout(client, database_url) -> None:
    tenant = fields(
        await edrs(
            database_url, "admin", "create-tenant", f"Glass {uuid.uuid4().hex[:6]}",
            "--admin-email", "first@glass.example", "--password-stdin",
            stdin="first password 1\n",
        )
    )  # fmt: skip
    wrong = {"grantType": "password", "tenantId": tenant["id"], "email": "first@glass.example",
             "password": "not the password"}  # fmt: skip
    for _ in range(LOCKOUT_THRESHOLD):
        assert (await token_for(client, wrong)).status_code == 401
    right = {**wrong, "password": "first password 1"}
    assert (await token_for(client, right)).status_code == 401, "locked out"

    second = fields(
        await edrs(
            database_url, "admin", "create-admin", "--tenant", tenant["id"], "--email",
            "second@glass.example", "--password-stdin", stdin="second password 1\n",
        )
    )  # fmt: skip
    assert second["role"] == "admin"
    as_second = {**wrong, "email": "second@glass.example", "password": "second password 1"}
    assert (await token_for(client, as_second)).status_code == 200

    unlocked = fields(
        await edrs(
            database_url, "admin", "unlock-user", "--tenant", tenant["id"], "--email",
            "FIRST@glass.example",
        )
    )  # fmt: skip
    assert unlocked["id"] == tenant["adminId"]
    assert (await token_for(client, right)).status_code == 200
    missing = await edrs(
        database_url, "admin", "unlock-user", "--tenant", tenant["id"], "--email", "x@glass.example"
    )
    assert missing.exit_code == 1 and "no user 'x@glass.example'" in missing.stderr


async def _dev_tenant(client: httpx.AsyncClient) -> str:
    return str((await client.get("/api/v1/auth/development-login")).json()["tenantId"])


async def test_chat_beside_a_development_gateway_logs_in_through_the_api(gateway, client) -> None:
    tenant_id = await _dev_tenant(client)
    login = await token_for(
        client,
        {"grantType": "password", "tenantId": tenant_id, "email": DEV_ADMIN_EMAIL,
         "password": DEV_PASSWORD},
    )  # fmt: skip
    admin = {"Authorization": f"Bearer {login.json()['accessToken']}"}

    async def logins() -> int:
        page = await client.get("/api/v1/audit-events", headers=admin, params={"pageSize": 200})
        audit = page.json()["auditEvents"]
        return sum(1 for e in audit if e["action"] == "login" and e["outcome"] == "success")

    before = await logins()
    # No token and no API key: `edrs chat` finds the development admin through the API (this
    # gateway has no persona service, so the chat itself ends at the persona lookup).
    result = await edrs(None, "chat", "Ada", "-m", "hi", "--url", gateway.http_url)
    assert result.exit_code == 1
    assert "no credentials" not in result.stderr
    assert "authentication failed" not in result.stderr
    assert await logins() == before + 1


async def test_a_configured_development_password_is_never_logged(
    postgres_engine, redis_engine, nats_engine, caplog
) -> None:
    # The first development start logs how to get a token; only the public default may appear in
    # it, a password the operator chose stays a secret (the log names its variable instead).
    database = f"test_gateway_dev_log_{uuid.uuid4().hex[:8]}"
    settings = engine_settings(
        postgres_engine, redis_engine, nats_engine, database=database, redis_db=0
    )
    secret = f"chosen-{uuid.uuid4().hex}"
    caplog.set_level(logging.INFO, logger="edrs")
    async with running_service(
        definition, **settings, EDRS_ENVIRONMENT="development", dev_admin_password=secret
    ):
        pass
    lines = [record.getMessage() for record in caplog.records]
    assert any("get a token with" in line for line in lines), lines
    assert not any(secret in line for line in lines)
    assert any("$EDRS_GATEWAY_DEV_ADMIN_PASSWORD" in line for line in lines)
