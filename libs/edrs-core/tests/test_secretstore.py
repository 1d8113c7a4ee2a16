"""The secret store against a real OpenBao: KV v2 round trips, AppRole login, renewal of a
short-lived token before it expires and a new login once it cannot be renewed or was revoked."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import hvac
import hvac.exceptions
import pytest
from edrs_core.secretstore import (
    SecretNotFound,
    SecretStoreError,
    SecretStoreServiceSettings,
    VaultConfig,
    VaultSecretStore,
)
from edrs_core.settings import SettingsError, load_settings
from edrs_core.testing import wait_until
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

pytestmark = pytest.mark.integration

POLICY = """
path "secret/data/edrs-test/*" { capabilities = ["create", "read", "update", "delete"] }
path "secret/metadata/edrs-test/*" { capabilities = ["read", "delete", "list"] }
"""


@pytest.fixture(scope="module")
def root(openbao_engine) -> Iterator[hvac.Client]:
    client = hvac.Client(url=openbao_engine.url(), token=openbao_engine.root_token)
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy("edrs-test", POLICY)
    yield client


def approle(root: hvac.Client, **token: object) -> tuple[str, str]:
    name = f"edrs-{uuid.uuid4().hex[:8]}"
    root.auth.approle.create_or_update_approle(name, token_policies=["edrs-test"], **token)
    role_id = root.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    return role_id, secret_id


def store_for(openbao_engine, role_id: str, secret_id: str) -> VaultSecretStore:
    return VaultSecretStore(
        VaultConfig(
            address=openbao_engine.url(),
            auth_method="approle",
            approle_role_id=role_id,
            approle_secret_id=SecretStr(secret_id),
            path_prefix=f"edrs-test/{uuid.uuid4().hex[:8]}",
        )
    )


def ttl_of(root: hvac.Client, accessor: str) -> int | None:
    """The token's remaining TTL in seconds, or None once the server no longer knows it."""
    try:
        return int(root.auth.token.lookup_accessor(accessor)["data"]["ttl"])
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return None


async def test_values_round_trip_by_version_and_are_destroyed(openbao_engine, root) -> None:
    store = store_for(openbao_engine, *approle(root))
    path = ("tenants", "t1", "connectors", str(uuid.uuid4()))
    assert await store.put(path, {"api_key": "k1"}) == 1
    assert await store.put(path, {"api_key": "k2", "extra": "x"}) == 2
    assert await store.get(path) == {"api_key": "k2", "extra": "x"}
    assert await store.get(path, version=1) == {"api_key": "k1"}
    await store.delete(path)
    with pytest.raises(SecretNotFound):
        await store.get(path)
    await store.delete(path)  # absent is fine
    with pytest.raises(ValueError, match="plain name"):
        await store.get(("tenants", "../other"))


async def test_the_store_answers_while_the_loops_default_threads_are_all_busy(
    openbao_engine, root
) -> None:
    # Blocking work elsewhere in a service (DNS lookups, an SMTP connection waiting out its
    # timeout) fills the event loop's default pool; secret reads must not queue behind it.
    store = store_for(openbao_engine, *approle(root))
    release = threading.Event()
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, release.wait) for _ in range(64)]
    try:
        path = ("tenants", "t1", "busy")
        assert await asyncio.wait_for(store.put(path, {"k": "v"}), 60) == 1
        assert await asyncio.wait_for(store.get(path), 60) == {"k": "v"}
    finally:
        release.set()
        await asyncio.gather(*busy)


async def test_a_short_lived_token_is_renewed_before_it_expires(openbao_engine, root) -> None:
    store = store_for(openbao_engine, *approle(root, token_ttl="9s", token_max_ttl="10m"))
    await store.put(("a",), {"v": "1"})
    accessor = store.token_accessor
    assert accessor is not None

    # Once less than a third of its lifetime (3 of 9 s) is left, the next use renews it: the
    # server's TTL (whole seconds) reads 1 a second after that.
    async def nearly_expired() -> bool:
        return (ttl_of(root, accessor) or 9) <= 1

    await wait_until(nearly_expired, 20, "the token to near its expiry")
    assert await store.get(("a",)) == {"v": "1"}
    assert store.token_accessor == accessor, "renewed, not replaced"
    assert (ttl_of(root, accessor) or 0) >= 5


async def test_a_token_past_its_max_ttl_is_replaced_by_a_new_login(openbao_engine, root) -> None:
    store = store_for(openbao_engine, *approle(root, token_ttl="2s", token_max_ttl="2s"))
    await store.put(("b",), {"v": "2"})
    first = store.token_accessor
    assert first is not None

    async def expired() -> bool:
        return ttl_of(root, first) is None

    await wait_until(expired, 10, "the first token to expire")
    assert await store.get(("b",)) == {"v": "2"}
    assert store.token_accessor not in (None, first)


async def test_a_revoked_token_leads_to_a_new_login(openbao_engine, root) -> None:
    store = store_for(openbao_engine, *approle(root, token_ttl="1h"))
    await store.put(("c",), {"v": "3"})
    first = store.token_accessor
    assert first is not None
    root.auth.token.revoke_accessor(first)
    assert await store.get(("c",)) == {"v": "3"}
    assert store.token_accessor not in (None, first)


async def test_refusals_name_the_identity_never_the_secret(openbao_engine, root) -> None:
    role_id, _ = approle(root)
    store = store_for(openbao_engine, role_id, "not-the-secret-id-0000")
    with pytest.raises(SecretStoreError, match=f"AppRole '{role_id}'") as caught:
        await store.get(("x",))
    assert "not-the-secret-id-0000" not in str(caught.value)


async def test_an_unreachable_server_is_a_clear_error() -> None:
    store = VaultSecretStore(
        VaultConfig(address="http://127.0.0.1:9", token=SecretStr("t"), timeout_seconds=1)
    )
    with pytest.raises(SecretStoreError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        await store.check()


class _Settings(SecretStoreServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_VAULTTEST_")


def test_settings_name_what_the_auth_method_needs() -> None:
    with pytest.raises(SettingsError, match="EDRS_VAULTTEST_VAULT_TOKEN required"):
        load_settings(_Settings, database_url="postgresql://x/y", environment="development")
    with pytest.raises(SettingsError, match="EDRS_VAULTTEST_VAULT_APPROLE_ROLE_ID"):
        load_settings(
            _Settings,
            database_url="postgresql://x/y",
            environment="development",
            vault_auth_method="approle",
        )
    ok = load_settings(
        _Settings,
        database_url="postgresql://x/y",
        environment="development",
        vault_auth_method="kubernetes",
        vault_kubernetes_role="edrs-integration",
    )
    assert ok.vault_config().setting("token") == "EDRS_VAULTTEST_VAULT_TOKEN"
