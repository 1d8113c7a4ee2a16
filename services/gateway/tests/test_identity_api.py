"""Identity and tokens through the public API: logins, tokens, users, API keys, audit, isolation.

Against a real gateway on embedded PostgreSQL and Redis, driven over HTTP as a client would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edrs_core.clock import ManualClock
from edrs_core.testing import HTTP_TIMEOUT, RunningService, engine_settings, running_service
from edrs_gateway.app import definition
from edrs_gateway.auth.passwords import Passwords
from edrs_gateway.auth.signing_keys import SigningKeyStore, signing_key_cipher
from edrs_gateway.config import GatewaySettings
from edrs_gateway.identity.api_keys import ApiKeyStore
from edrs_gateway.identity.users import UserStore
from edrs_gateway.store import NewTenant
from edrs_gateway.store.postgres import PostgresTenantStore
from pydantic import SecretStr

pytestmark = pytest.mark.integration

KEY_SECRET = "test-key-encryption-secret-0123456789abcdef"
ISSUER = "edrs-gateway-test"
AUDIENCE = "edrs-api-test"
PASSWORD = "correct horse battery staple"
LOCKOUT_THRESHOLD = 3


@pytest.fixture(scope="module")
async def gateway(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    settings = engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_gateway_identity", redis_db=0
    )
    async with running_service(
        definition,
        **settings,
        key_encryption_secret=KEY_SECRET,
        # These tests are about identity; rate limits have their own (test_edge_*, the security suite).
        rate_limits_enabled=False,
        token_issuer=ISSUER,
        token_audience=AUDIENCE,
        lockout_threshold=LOCKOUT_THRESHOLD,
        # Every process re-reads the keys at once, so a rotation is visible without waiting.
        signing_key_cache_seconds=0,
    ) as svc:
        yield svc


@pytest.fixture
async def client(gateway: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.http_url) as http:
        yield http


def _db(gateway: RunningService):  # type: ignore[no-untyped-def]
    assert gateway.runner.runtime is not None
    return gateway.runner.runtime.db


@dataclass
class Tenant:
    id: str
    admin_email: str
    admin_token: str


async def login(client: httpx.AsyncClient, tenant_id: str, email: str, password: str) -> dict:
    reply = await client.post(
        "/api/v1/auth/token",
        json={"grantType": "password", "tenantId": tenant_id, "email": email, "password": password},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def new_tenant(gateway: RunningService, client: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    """A factory: a fresh tenant with an admin, created as the operator CLI does, logged in."""

    async def make(tier: str = "professional") -> Tenant:
        db = _db(gateway)
        tenant = await PostgresTenantStore(db).create(
            NewTenant(name=f"t-{uuid.uuid4().hex[:12]}", tier=tier)
        )
        email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        await UserStore(db).create(
            tenant.id,
            email=email,
            display_name="Admin",
            password_hash=await Passwords().hash(PASSWORD),
            role="admin",
        )
        token = (await login(client, str(tenant.id), email, PASSWORD))["accessToken"]
        return Tenant(str(tenant.id), email, token)

    return make


async def add_user(
    client: httpx.AsyncClient, admin: Tenant, role: str = "member", password: str = PASSWORD
) -> dict:
    reply = await client.post(
        "/api/v1/users",
        headers=bearer(admin.admin_token),
        json={"email": f"u-{uuid.uuid4().hex[:8]}@example.com", "password": password, "role": role},
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


async def audit_actions(client: httpx.AsyncClient, admin: Tenant) -> list[dict]:
    reply = await client.get("/api/v1/audit-events?pageSize=200", headers=bearer(admin.admin_token))
    assert reply.status_code == 200, reply.text
    return reply.json()["auditEvents"]


# -- tokens ------------------------------------------------------------------------------------


async def signing_key(gateway: RunningService) -> tuple[str, Ed25519PrivateKey]:
    keys = await SigningKeyStore(_db(gateway), signing_key_cipher(SecretStr(KEY_SECRET))).active()
    return keys[0].kid, keys[0].private_key


def claims_for(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    payload = jwt.decode(tenant.admin_token, options={"verify_signature": False})
    now = int(time.time())
    payload.update({"iat": now, "nbf": now, "exp": now + 600, "jti": str(uuid.uuid4())})
    payload.update(overrides)
    return payload


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


async def test_a_token_forged_with_the_real_key_is_accepted_so_the_matrix_below_means_something(
    gateway, client, new_tenant
) -> None:
    tenant = await new_tenant()
    kid, key = await signing_key(gateway)
    token = jwt.encode(claims_for(tenant), key, algorithm="EdDSA", headers={"kid": kid})
    reply = await client.get("/api/v1/tenant", headers=bearer(token))
    assert reply.status_code == 200
    assert reply.json()["id"] == tenant.id


@pytest.mark.parametrize(
    "attack",
    [
        "alg_none",
        "hs256_with_public_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "unknown_kid",
        "no_kid",
        "garbage",
    ],
)
async def test_every_bad_token_is_401_with_a_bearer_challenge(
    gateway, client, new_tenant, attack
) -> None:
    tenant = await new_tenant()
    kid, key = await signing_key(gateway)
    now = int(time.time())
    claims = claims_for(tenant)

    def signed(payload: dict[str, Any], header_kid: str | None = kid) -> str:
        headers = {"kid": header_kid} if header_kid is not None else {}
        return jwt.encode(payload, key, algorithm="EdDSA", headers=headers)

    if attack == "alg_none":
        token = unsigned({"alg": "none", "kid": kid, "typ": "JWT"}, claims) + "."
    elif attack == "hs256_with_public_key":
        # The classic confusion: HMAC "signed" with the published public key as the secret.
        public = key.public_key().public_bytes_raw()
        jwk_x = b64(public).encode()
        body = unsigned({"alg": "HS256", "kid": kid, "typ": "JWT"}, claims)
        signature = hmac.new(jwk_x, body.encode(), hashlib.sha256).digest()
        token = f"{body}.{b64(signature)}"
    elif attack == "bad_signature":
        token = jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
        )
    elif attack == "expired":
        token = signed({**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})
    elif attack == "not_yet_valid":
        token = signed({**claims, "nbf": now + 3600, "exp": now + 7200})
    elif attack == "wrong_issuer":
        token = signed({**claims, "iss": "someone-else"})
    elif attack == "wrong_audience":
        token = signed({**claims, "aud": "another-api"})
    elif attack == "unknown_kid":
        token = signed(claims, header_kid="no-such-key")
    elif attack == "no_kid":
        token = signed(claims, header_kid=None)
    else:
        token = "not.a.jwt"
    reply = await client.get("/api/v1/tenant", headers=bearer(token))
    assert reply.status_code == 401
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert reply.json()["code"] == "unauthenticated"


async def test_no_token_is_401_asking_for_one(client) -> None:
    reply = await client.get("/api/v1/users")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in reply.json()["detail"]


async def test_access_token_carries_tenant_tier_role_and_standard_claims(
    gateway, client, new_tenant
) -> None:
    tenant = await new_tenant(tier="enterprise")
    header = jwt.get_unverified_header(tenant.admin_token)
    claims = jwt.decode(tenant.admin_token, options={"verify_signature": False})
    assert header["alg"] == "EdDSA"
    assert header["kid"] in {
        k["kid"] for k in (await client.get("/api/v1/.well-known/jwks.json")).json()["keys"]
    }
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert claims["tid"] == tenant.id and claims["tier"] == "enterprise"
    assert claims["role"] == "admin" and claims["knd"] == "user"
    assert claims["exp"] - claims["nbf"] == 3600
    assert {"sub", "iat", "jti", "scp"} <= claims.keys()


async def test_jwks_is_public_cacheable_and_verifies_issued_tokens(client, new_tenant) -> None:
    tenant = await new_tenant()
    reply = await client.get("/api/v1/.well-known/jwks.json")
    assert reply.status_code == 200
    assert "public" in reply.headers["cache-control"]
    keys = {k["kid"]: k for k in reply.json()["keys"]}
    kid = jwt.get_unverified_header(tenant.admin_token)["kid"]
    public = jwt.PyJWK(keys[kid]).key
    verified = jwt.decode(
        tenant.admin_token, public, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER
    )
    assert verified["tid"] == tenant.id
    assert all("d" not in k for k in keys.values()), "a private key part is published"


async def test_rotation_keeps_old_tokens_valid_and_publishes_both_keys(
    gateway, client, new_tenant
) -> None:
    tenant = await new_tenant()
    old_kid = jwt.get_unverified_header(tenant.admin_token)["kid"]
    store = SigningKeyStore(_db(gateway), signing_key_cipher(SecretStr(KEY_SECRET)))
    new_kid, retired = await store.rotate(timedelta(hours=1))
    assert retired == []
    published = [
        k["kid"] for k in (await client.get("/api/v1/.well-known/jwks.json")).json()["keys"]
    ]
    assert published[0] == new_kid and old_kid in published
    assert (
        await client.get("/api/v1/tenant", headers=bearer(tenant.admin_token))
    ).status_code == 200
    fresh = await login(client, tenant.id, tenant.admin_email, PASSWORD)
    assert jwt.get_unverified_header(fresh["accessToken"])["kid"] == new_kid


async def test_a_key_superseded_longer_than_a_token_lifetime_is_retired_and_refused(
    gateway, client, new_tenant
) -> None:
    tenant = await new_tenant()
    db = _db(gateway)
    store = SigningKeyStore(db, signing_key_cipher(SecretStr(KEY_SECRET)))
    old_kid = jwt.get_unverified_header(tenant.admin_token)["kid"]
    # Age the keys as if they were rotated hours ago: the current one was superseded 2 h ago
    # by a key that is itself superseded now.
    await db.execute("UPDATE signing_keys SET created_at = now() - interval '3 hours'")
    middle = await store.add()
    await db.execute(
        "UPDATE signing_keys SET created_at = now() - interval '2 hours' WHERE kid = $1", middle
    )
    newest, retired = await store.rotate(timedelta(hours=1))
    assert old_kid in retired
    assert middle not in retired, "the key that signed until now must keep verifying"
    published = {
        k["kid"] for k in (await client.get("/api/v1/.well-known/jwks.json")).json()["keys"]
    }
    assert published >= {middle, newest} and old_kid not in published
    reply = await client.get("/api/v1/tenant", headers=bearer(tenant.admin_token))
    assert reply.status_code == 401


# -- passwords and lockout ---------------------------------------------------------------------


async def test_wrong_password_unknown_user_and_unknown_tenant_answer_the_same(
    client, new_tenant
) -> None:
    tenant = await new_tenant()

    async def attempt(tenant_id: str, email: str, password: str) -> httpx.Response:
        return await client.post(
            "/api/v1/auth/token",
            json={
                "grantType": "password",
                "tenantId": tenant_id,
                "email": email,
                "password": password,
            },
        )

    answers = [
        await attempt(tenant.id, tenant.admin_email, "wrong password"),
        await attempt(tenant.id, "nobody@example.com", PASSWORD),
        await attempt(str(uuid.uuid4()), tenant.admin_email, PASSWORD),
    ]
    assert {a.status_code for a in answers} == {401}
    assert len({(a.json()["code"], a.json()["detail"]) for a in answers}) == 1


async def test_lockout_after_repeated_failures_is_indistinguishable_and_audited(
    client, new_tenant
) -> None:
    tenant = await new_tenant()
    user = await add_user(client, tenant)
    body = {"grantType": "password", "tenantId": tenant.id, "email": user["email"]}
    wrong = [
        await client.post("/api/v1/auth/token", json={**body, "password": "nope-nope"})
        for _ in range(LOCKOUT_THRESHOLD)
    ]
    locked = await client.post("/api/v1/auth/token", json={**body, "password": PASSWORD})
    assert locked.status_code == 401
    assert locked.json()["detail"] == wrong[0].json()["detail"]
    shown = (
        await client.get(f"/api/v1/users/{user['id']}", headers=bearer(tenant.admin_token))
    ).json()
    assert shown["lockedUntil"] is not None
    events = await audit_actions(client, tenant)
    mine = [
        e
        for e in events
        if e["actor"] == f"user:{user['id']}" or e["target"] == f"user:{user['id']}"
    ]
    assert [e["action"] for e in mine].count("user.locked") == 1
    failures = [e for e in mine if e["action"] == "login" and e["outcome"] == "failure"]
    assert len(failures) == LOCKOUT_THRESHOLD + 1
    assert any(e["details"].get("reason") == "locked" for e in failures)
    assert all("nope-nope" not in json.dumps(e) and PASSWORD not in json.dumps(e) for e in events)
    # An admin setting a new password lifts the lock.
    reset = await client.patch(
        f"/api/v1/users/{user['id']}",
        headers=bearer(tenant.admin_token),
        json={"password": "a brand new password"},
    )
    assert reset.status_code == 200 and reset.json()["lockedUntil"] is None
    await login(client, tenant.id, user["email"], "a brand new password")


async def test_successful_login_resets_the_failure_count(client, new_tenant) -> None:
    tenant = await new_tenant()
    user = await add_user(client, tenant)
    body = {"grantType": "password", "tenantId": tenant.id, "email": user["email"]}
    for _ in range(2):
        for _ in range(LOCKOUT_THRESHOLD - 1):
            await client.post("/api/v1/auth/token", json={**body, "password": "nope-nope"})
        await login(client, tenant.id, user["email"].upper(), PASSWORD)


async def test_documented_lockout_five_failures_lock_for_fifteen_minutes_then_unlock(
    gateway, new_tenant, api_of
) -> None:
    """docs/api.md: 5 failures in a row lock the account for 15 minutes. The defaults, on an API
    built from the running gateway's stores with a clock the test moves."""
    defaults = GatewaySettings.model_fields
    assert (defaults["lockout_threshold"].default, defaults["lockout_minutes"].default) == (5, 15)
    clock = ManualClock()
    tenant = await new_tenant()
    async with api_of(gateway, clock=clock, lockout_threshold=5, lockout_minutes=15) as client:
        user = await add_user(client, tenant)
        body = {"grantType": "password", "tenantId": tenant.id, "email": user["email"]}

        async def attempt(password: str) -> int:
            reply = await client.post("/api/v1/auth/token", json={**body, "password": password})
            return reply.status_code

        assert [await attempt("nope-nope") for _ in range(4)] == [401] * 4
        assert await attempt(PASSWORD) == 200, "four failures must not lock"
        assert [await attempt("nope-nope") for _ in range(5)] == [401] * 5
        shown = await client.get(f"/api/v1/users/{user['id']}", headers=bearer(tenant.admin_token))
        locked_until = datetime.fromisoformat(shown.json()["lockedUntil"])
        assert locked_until == clock.now() + timedelta(minutes=15)
        clock.advance(timedelta(minutes=14, seconds=59))
        assert await attempt(PASSWORD) == 401, "still locked a second before 15 minutes"
        clock.advance(timedelta(seconds=1))
        assert await attempt(PASSWORD) == 200, "unlocked once 15 minutes have passed"


async def test_auth_routes_are_exempt_from_idempotency(client, new_tenant) -> None:
    """docs/api.md: a token response is a secret not to be kept, so a repeated key runs again."""
    tenant = await new_tenant()
    body = {
        "grantType": "password",
        "tenantId": tenant.id,
        "email": tenant.admin_email,
        "password": PASSWORD,
    }
    headers = {"Idempotency-Key": f"login-{uuid.uuid4().hex}"}
    first = await client.post("/api/v1/auth/token", json=body, headers=headers)
    second = await client.post("/api/v1/auth/token", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert "idempotent-replayed" not in second.headers
    assert first.json()["accessToken"] != second.json()["accessToken"]
    # Elsewhere the same header does replay: the exemption is the auth routes'.
    key = {"Idempotency-Key": f"user-{uuid.uuid4().hex}", **bearer(tenant.admin_token)}
    user = {"email": f"u-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    made = await client.post("/api/v1/users", json=user, headers=key)
    again = await client.post("/api/v1/users", json=user, headers=key)
    assert made.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == made.json()


# -- refresh tokens and revocation -------------------------------------------------------------


async def test_refresh_rotates_and_a_replayed_refresh_token_revokes_its_family(
    client, new_tenant
) -> None:
    tenant = await new_tenant()
    first = await login(client, tenant.id, tenant.admin_email, PASSWORD)

    async def refresh(token: str) -> httpx.Response:
        return await client.post(
            "/api/v1/auth/token", json={"grantType": "refreshToken", "refreshToken": token}
        )

    second = await refresh(first["refreshToken"])
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refreshToken"] != first["refreshToken"]
    assert (
        await client.get("/api/v1/tenant", headers=bearer(rotated["accessToken"]))
    ).status_code == 200
    replay = await refresh(first["refreshToken"])
    assert replay.status_code == 401
    # The thief's replay cost the legitimate holder its newer token too: the family is gone.
    assert (await refresh(rotated["refreshToken"])).status_code == 401
    events = await audit_actions(client, tenant)
    assert any(e["action"] == "token.refresh_reuse" and e["outcome"] == "denied" for e in events)


async def test_revoked_access_token_is_refused_until_it_expires(client, new_tenant) -> None:
    tenant = await new_tenant()
    session = await login(client, tenant.id, tenant.admin_email, PASSWORD)
    token = session["accessToken"]
    assert (await client.get("/api/v1/tenant", headers=bearer(token))).status_code == 200
    revoked = await client.post("/api/v1/auth/revoke", json={"token": token})
    assert revoked.status_code == 204
    reply = await client.get("/api/v1/tenant", headers=bearer(token))
    assert reply.status_code == 401
    assert "revoked" in reply.json()["detail"]
    # Other sessions of the same user are not affected.
    assert (
        await client.get("/api/v1/tenant", headers=bearer(tenant.admin_token))
    ).status_code == 200


async def test_revoked_refresh_token_cannot_refresh_and_unknown_tokens_are_not_errors(
    client, new_tenant
) -> None:
    tenant = await new_tenant()
    session = await login(client, tenant.id, tenant.admin_email, PASSWORD)
    assert (
        await client.post("/api/v1/auth/revoke", json={"token": session["refreshToken"]})
    ).status_code == 204
    again = await client.post(
        "/api/v1/auth/token",
        json={"grantType": "refreshToken", "refreshToken": session["refreshToken"]},
    )
    assert again.status_code == 401
    assert (await client.post("/api/v1/auth/revoke", json={"token": "whatever"})).status_code == 204


# -- API keys ----------------------------------------------------------------------------------


async def test_api_key_is_shown_once_logs_in_and_is_stored_hashed(
    gateway, client, new_tenant
) -> None:
    tenant = await new_tenant()
    created = await client.post(
        "/api/v1/api-keys",
        headers=bearer(tenant.admin_token),
        json={
            "name": "publisher",
            "role": "integrator",
            "scopes": ["events:publish"],
            "expiresInDays": 30,
        },
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["apiKey"].startswith(f"edrs_{key['prefix']}_")
    expires = datetime.fromisoformat(key["expiresAt"]) - datetime.now(UTC)
    assert timedelta(days=29) < expires <= timedelta(days=30)
    listed = (await client.get("/api/v1/api-keys", headers=bearer(tenant.admin_token))).json()
    assert [k["id"] for k in listed["apiKeys"]] == [key["id"]]
    assert "apiKey" not in listed["apiKeys"][0]
    fetched = (
        await client.get(f"/api/v1/api-keys/{key['id']}", headers=bearer(tenant.admin_token))
    ).json()
    assert "apiKey" not in fetched and fetched["scopes"] == ["events:publish"]
    stored = await _db(gateway).fetchval(
        "SELECT secret_hash FROM api_keys WHERE id = $1", uuid.UUID(key["id"])
    )
    secret = key["apiKey"].split("_", 2)[2]
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    granted = await client.post(
        "/api/v1/auth/token", json={"grantType": "apiKey", "apiKey": key["apiKey"]}
    )
    assert granted.status_code == 200
    claims = jwt.decode(granted.json()["accessToken"], options={"verify_signature": False})
    assert claims["knd"] == "api_key" and claims["role"] == "integrator"
    assert claims["scp"] == ["events:publish"] and claims["tid"] == tenant.id
    assert granted.json()["refreshToken"] is None
    # Its scopes narrow the role: tenant:read is the integrator's, but not in this key's scopes.
    reply = await client.get("/api/v1/tenant", headers=bearer(granted.json()["accessToken"]))
    assert reply.status_code == 403


async def test_revoked_api_key_no_longer_logs_in_and_its_tokens_stop_working(
    client, new_tenant
) -> None:
    tenant = await new_tenant()
    key = (
        await client.post(
            "/api/v1/api-keys",
            headers=bearer(tenant.admin_token),
            json={"name": "ci", "role": "viewer"},
        )
    ).json()
    token = (
        await client.post(
            "/api/v1/auth/token", json={"grantType": "apiKey", "apiKey": key["apiKey"]}
        )
    ).json()["accessToken"]
    assert (await client.get("/api/v1/tenant", headers=bearer(token))).status_code == 200
    gone = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=bearer(tenant.admin_token))
    assert gone.status_code == 204
    again = await client.post(
        "/api/v1/auth/token", json={"grantType": "apiKey", "apiKey": key["apiKey"]}
    )
    assert again.status_code == 401
    assert (await client.get("/api/v1/tenant", headers=bearer(token))).status_code == 401
    assert (
        await client.get(f"/api/v1/api-keys/{key['id']}", headers=bearer(tenant.admin_token))
    ).status_code == 404
    actions = [e["action"] for e in await audit_actions(client, tenant)]
    assert "api_key.created" in actions and "api_key.revoked" in actions


async def test_expired_api_key_does_not_log_in(gateway, client, new_tenant) -> None:
    tenant = await new_tenant()
    _, plaintext = await ApiKeyStore(_db(gateway)).create(
        uuid.UUID(tenant.id),
        name="old",
        role="viewer",
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    reply = await client.post(
        "/api/v1/auth/token", json={"grantType": "apiKey", "apiKey": plaintext}
    )
    assert reply.status_code == 401
    tampered = plaintext[:-2] + ("AA" if not plaintext.endswith("AA") else "BB")
    assert (
        await client.post("/api/v1/auth/token", json={"grantType": "apiKey", "apiKey": tampered})
    ).status_code == 401


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "x", "role": "viewer", "scopes": ["users:write"]}, "/scopes"),
        ({"name": "x", "expiresInDays": 0}, "/expiresInDays"),
        ({"name": "x", "tenantId": str(uuid.uuid4())}, "/tenantId"),
    ],
)
async def test_api_key_bodies_beyond_the_rules_are_refused(
    client, new_tenant, body, pointer
) -> None:
    tenant = await new_tenant()
    reply = await client.post("/api/v1/api-keys", headers=bearer(tenant.admin_token), json=body)
    assert reply.status_code == 422
    assert pointer in json.dumps(reply.json())
    listed = (await client.get("/api/v1/api-keys", headers=bearer(tenant.admin_token))).json()
    assert listed["apiKeys"] == []


# -- users, roles and permissions --------------------------------------------------------------


async def test_users_crud_and_pagination(client, new_tenant) -> None:
    tenant = await new_tenant()
    made = [await add_user(client, tenant) for _ in range(3)]
    seen: list[str] = []
    token = ""
    while True:
        page = await client.get(
            "/api/v1/users",
            params={"pageSize": 2, "pageToken": token},
            headers=bearer(tenant.admin_token),
        )
        assert page.status_code == 200
        assert len(page.json()["users"]) <= 2
        seen += [u["id"] for u in page.json()["users"]]
        token = page.json()["nextPageToken"]
        if not token:
            break
    assert seen[1:] == [u["id"] for u in made] and len(seen) == 4
    patched = await client.patch(
        f"/api/v1/users/{made[0]['id']}",
        headers=bearer(tenant.admin_token),
        json={"displayName": "Bea", "role": "viewer"},
    )
    assert patched.status_code == 200
    assert patched.json()["displayName"] == "Bea" and patched.json()["role"] == "viewer"
    unchanged = await client.patch(
        f"/api/v1/users/{made[0]['id']}", headers=bearer(tenant.admin_token), json={}
    )
    assert unchanged.json() == patched.json()
    assert (
        await client.delete(f"/api/v1/users/{made[1]['id']}", headers=bearer(tenant.admin_token))
    ).status_code == 204
    assert (
        await client.get(f"/api/v1/users/{made[1]['id']}", headers=bearer(tenant.admin_token))
    ).status_code == 404
    duplicate = await client.post(
        "/api/v1/users",
        headers=bearer(tenant.admin_token),
        json={"email": made[2]["email"].upper(), "password": PASSWORD},
    )
    assert duplicate.status_code == 409
    bad_page = await client.get(
        "/api/v1/users", params={"pageToken": "garbage!"}, headers=bearer(tenant.admin_token)
    )
    assert bad_page.status_code == 422 and bad_page.json()["code"] == "invalid_page_token"


async def admin_api_key_token(client: httpx.AsyncClient, tenant: Tenant) -> tuple[str, str]:
    """(key id, access token) of a new admin-role API key: an admin that is not a user."""
    key = await client.post(
        "/api/v1/api-keys",
        headers=bearer(tenant.admin_token),
        json={"name": f"ops-{uuid.uuid4().hex[:6]}", "role": "admin"},
    )
    assert key.status_code == 201, key.text
    granted = await client.post(
        "/api/v1/auth/token", json={"grantType": "apiKey", "apiKey": key.json()["apiKey"]}
    )
    assert granted.status_code == 200, granted.text
    return key.json()["id"], granted.json()["accessToken"]


async def test_the_last_admin_cannot_be_removed_or_demoted(client, new_tenant) -> None:
    # The sole admin user is acted on by another admin (an admin-role API key), so the
    # self-change guard is not what answers: the last-admin rule is.
    tenant = await new_tenant()
    last = jwt.decode(tenant.admin_token, options={"verify_signature": False})["sub"]
    _, other_admin = await admin_api_key_token(client, tenant)
    demote = await client.patch(
        f"/api/v1/users/{last}", headers=bearer(other_admin), json={"role": "member"}
    )
    assert demote.status_code == 409, demote.text
    assert demote.json()["code"] == "failed_precondition"
    assert "last admin" in demote.json()["detail"]
    delete = await client.delete(f"/api/v1/users/{last}", headers=bearer(other_admin))
    assert delete.status_code == 409, delete.text
    assert delete.json()["code"] == "failed_precondition"
    assert "last admin" in delete.json()["detail"]
    shown = await client.get(f"/api/v1/users/{last}", headers=bearer(other_admin))
    assert shown.json()["role"] == "admin"
    # With a second admin user the same two changes are allowed: the rule is about the last one.
    await add_user(client, tenant, role="admin")
    demoted = await client.patch(
        f"/api/v1/users/{last}", headers=bearer(other_admin), json={"role": "member"}
    )
    assert demoted.status_code == 200 and demoted.json()["role"] == "member"
    assert (
        await client.delete(f"/api/v1/users/{last}", headers=bearer(other_admin))
    ).status_code == 204


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(client, new_tenant) -> None:
    tenant = await new_tenant()
    first = jwt.decode(tenant.admin_token, options={"verify_signature": False})["sub"]
    second = await add_user(client, tenant, role="admin")
    second_token = (await login(client, tenant.id, second["email"], PASSWORD))["accessToken"]
    callers = [tenant.admin_token, second_token]
    replies = await asyncio.gather(
        client.patch(
            f"/api/v1/users/{second['id']}", headers=bearer(callers[0]), json={"role": "member"}
        ),
        client.patch(f"/api/v1/users/{first}", headers=bearer(callers[1]), json={"role": "member"}),
    )
    # Exactly one change goes through. The other is refused either by the last-admin rule (both
    # requests were past authentication when the first change committed), or, when the first
    # change committed before the other request was authenticated, because demoting its caller
    # revoked the caller's tokens: which one depends on the scheduling, both leave one admin.
    statuses = sorted(r.status_code for r in replies)
    assert statuses in ([200, 409], [200, 401]), [r.text for r in replies]
    refused = next(r for r in replies if r.status_code != 200)
    if refused.status_code == 409:
        assert refused.json()["code"] == "failed_precondition"
    else:
        assert refused.json()["code"] == "unauthenticated"
        assert "revoked" in refused.json()["detail"]
    # The admin whose change went through is the one left (the other's session has ended).
    survivor = callers[[r.status_code for r in replies].index(200)]
    users = (await client.get("/api/v1/users", headers=bearer(survivor))).json()["users"]
    assert [u["role"] for u in users].count("admin") == 1


@pytest.mark.parametrize("change", ["own_role", "own_password", "delete_self", "revoke_own_key"])
async def test_an_admin_cannot_change_themselves_even_with_another_admin_present(
    client, new_tenant, change
) -> None:
    # A second admin exists, so the last-admin rule would let each of these through: only the
    # self-change guard refuses them.
    tenant = await new_tenant()
    await add_user(client, tenant, role="admin")
    me = jwt.decode(tenant.admin_token, options={"verify_signature": False})["sub"]
    caller = tenant.admin_token
    if change == "own_role":
        reply = await client.patch(
            f"/api/v1/users/{me}", headers=bearer(caller), json={"role": "member"}
        )
    elif change == "own_password":
        reply = await client.patch(
            f"/api/v1/users/{me}", headers=bearer(caller), json={"password": "another password!"}
        )
    elif change == "delete_self":
        reply = await client.delete(f"/api/v1/users/{me}", headers=bearer(caller))
    else:
        key_id, caller = await admin_api_key_token(client, tenant)
        reply = await client.delete(f"/api/v1/api-keys/{key_id}", headers=bearer(caller))
    assert reply.status_code == 409, reply.text
    assert reply.json()["code"] == "self_change_not_allowed"
    # Nothing changed: the caller's session still works, and so do the role and password.
    assert (await client.get("/api/v1/users", headers=bearer(caller))).status_code == 200
    assert (await client.get(f"/api/v1/users/{me}", headers=bearer(tenant.admin_token))).json()[
        "role"
    ] == "admin"
    await login(client, tenant.id, tenant.admin_email, PASSWORD)
    # The guard is about role, password and existence: an admin still renames themself.
    renamed = await client.patch(
        f"/api/v1/users/{me}", headers=bearer(caller), json={"displayName": "Me"}
    )
    assert renamed.status_code == 200


async def test_a_member_cannot_change_roles_and_the_denial_is_audited(client, new_tenant) -> None:
    tenant = await new_tenant()
    member = await add_user(client, tenant, role="member")
    token = (await login(client, tenant.id, member["email"], PASSWORD))["accessToken"]
    reply = await client.patch(
        f"/api/v1/users/{member['id']}", headers=bearer(token), json={"role": "admin"}
    )
    assert reply.status_code == 403
    assert reply.json()["code"] == "forbidden"
    assert (
        await client.get(f"/api/v1/users/{member['id']}", headers=bearer(tenant.admin_token))
    ).json()["role"] == "member"
    assert (await client.get("/api/v1/audit-events", headers=bearer(token))).status_code == 403
    events = await audit_actions(client, tenant)
    denied = [e for e in events if e["action"] == "permission.denied"]
    assert {e["actor"] for e in denied} == {f"user:{member['id']}"}
    assert {e["details"]["permission"] for e in denied} == {"users:write", "audit:read"}


async def test_a_role_change_ends_the_users_sessions(client, new_tenant) -> None:
    tenant = await new_tenant()
    user = await add_user(client, tenant, role="admin")
    session = await login(client, tenant.id, user["email"], PASSWORD)
    assert (
        await client.get("/api/v1/users", headers=bearer(session["accessToken"]))
    ).status_code == 200
    await client.patch(
        f"/api/v1/users/{user['id']}", headers=bearer(tenant.admin_token), json={"role": "viewer"}
    )
    assert (
        await client.get("/api/v1/users", headers=bearer(session["accessToken"]))
    ).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/token",
        json={"grantType": "refreshToken", "refreshToken": session["refreshToken"]},
    )
    assert refreshed.status_code == 401
    fresh = await login(client, tenant.id, user["email"], PASSWORD)
    assert (
        await client.get("/api/v1/users", headers=bearer(fresh["accessToken"]))
    ).status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "post",
            "/api/v1/users",
            {"email": "x@example.com", "password": PASSWORD, "tenantId": "{other}"},
        ),
        ("patch", "/api/v1/users/{me}", {"displayName": "x", "tenantId": "{other}"}),
        ("patch", "/api/v1/users/{me}", {"displayName": "x", "tenant_id": "{other}"}),
        (
            "post",
            "/api/v1/auth/token",
            {"grantType": "apiKey", "apiKey": "edrs_a_b", "role": "admin"},
        ),
        ("post", "/api/v1/api-keys", {"name": "x", "tenantId": "{other}"}),
    ],
)
async def test_extra_fields_are_refused_and_change_nothing(
    client, new_tenant, method, path, body
) -> None:
    tenant = await new_tenant()
    other = await new_tenant()
    me = jwt.decode(tenant.admin_token, options={"verify_signature": False})["sub"]
    before = (await client.get("/api/v1/users", headers=bearer(tenant.admin_token))).json()
    filled = json.loads(json.dumps(body).replace("{other}", other.id))
    reply = await client.request(
        method, path.replace("{me}", me), headers=bearer(tenant.admin_token), json=filled
    )
    assert reply.status_code == 422
    assert reply.json()["code"] == "validation_failed"
    assert (await client.get("/api/v1/users", headers=bearer(tenant.admin_token))).json() == before
    assert (await client.get("/api/v1/users", headers=bearer(other.admin_token))).json()["users"][
        0
    ]["email"] == other.admin_email


def _without_ids(reply: httpx.Response) -> dict[str, Any]:
    return {k: v for k, v in reply.json().items() if k not in ("detail", "instance", "requestId")}


# -- tenant isolation --------------------------------------------------------------------------


async def test_another_tenants_objects_are_404_and_stay_unchanged(client, new_tenant) -> None:
    a = await new_tenant()
    b = await new_tenant()
    b_user = await add_user(client, b)
    b_key = (
        await client.post("/api/v1/api-keys", headers=bearer(b.admin_token), json={"name": "b"})
    ).json()
    missing = str(uuid.uuid4())
    attempts = [
        ("get", f"/api/v1/users/{b_user['id']}", None),
        ("patch", f"/api/v1/users/{b_user['id']}", {"displayName": "pwned", "role": "admin"}),
        ("delete", f"/api/v1/users/{b_user['id']}", None),
        ("get", f"/api/v1/api-keys/{b_key['id']}", None),
        ("delete", f"/api/v1/api-keys/{b_key['id']}", None),
    ]
    for method, path, body in attempts:
        reply = await client.request(method, path, headers=bearer(a.admin_token), json=body)
        assert reply.status_code == 404, (method, path)
        # Exactly what a missing id gets: nothing tells "exists elsewhere" from "does not exist".
        ghost = await client.request(
            method, path.rsplit("/", 1)[0] + f"/{missing}", headers=bearer(a.admin_token), json=body
        )
        assert _without_ids(reply) == _without_ids(ghost)
    assert (
        await client.get(f"/api/v1/users/{b_user['id']}", headers=bearer(b.admin_token))
    ).json() == b_user
    assert (
        await client.get(f"/api/v1/api-keys/{b_key['id']}", headers=bearer(b.admin_token))
    ).status_code == 200
    listed = (await client.get("/api/v1/users", headers=bearer(a.admin_token))).json()["users"]
    assert b_user["id"] not in {u["id"] for u in listed}
    a_keys = (await client.get("/api/v1/api-keys", headers=bearer(a.admin_token))).json()["apiKeys"]
    assert a_keys == []
    a_audit = await audit_actions(client, a)
    assert not any(
        b_user["id"] in e["target"] and e["action"] != "permission.denied" for e in a_audit
    )
    b_audit = await audit_actions(client, b)
    assert all(
        e["actor"]
        != f"user:{jwt.decode(a.admin_token, options={'verify_signature': False})['sub']}"
        for e in b_audit
    )
    tenant = (await client.get("/api/v1/tenant", headers=bearer(a.admin_token))).json()
    assert tenant["id"] == a.id


async def test_a_route_whose_service_has_no_configured_address_answers_503_naming_it(
    client, new_tenant
) -> None:
    # This gateway was started without PEERS: a deployment mistake, not the client's.
    tenant = await new_tenant()
    reply = await client.get("/api/v1/traces", headers=bearer(tenant.admin_token))
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["detail"] == "the reasoning service is unavailable; try again shortly"
    assert reply.headers["Retry-After"] == "1"
