"""The integration service over real gRPC, against embedded PostgreSQL, NATS and OpenBao."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import hvac
import pytest
from edrs_core import testing
from edrs_core.secretstore import VaultConfig, VaultSecretStore
from edrs_integration.app import definition
from edrs_integration.credentials import SecretCipher
from edrs_integration.store.postgres import PostgresConnectorStore
from edrs_proto.common.v1 import common_pb2
from edrs_proto.integration.v1 import integration_pb2, integration_pb2_grpc
from pydantic import SecretStr

pytestmark = pytest.mark.integration

# Tenants of this run only: against a server kept from an earlier run (EDRS_TEST_POSTGRES_URL),
# fixed tenants would meet that run's personas, names and pages.
RUN = uuid.uuid4().hex[:8]
TENANT_A = testing.tenant_metadata(f"tenant-a-{RUN}")
TENANT_B = testing.tenant_metadata(f"tenant-b-{RUN}")
WEBHOOK = integration_pb2.CONNECTOR_KIND_WEBHOOK


@pytest.fixture(scope="module")
async def integration(
    postgres_engine, redis_engine, nats_engine, openbao_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_integration", redis_db=7
    )
    async with testing.running_service(
        definition,
        **settings,
        vault_address=openbao_engine.url(),
        vault_token=openbao_engine.root_token,
        vault_path_prefix=f"edrs-test-{RUN}",
        # An operator exception, as EDRS_INTEGRATION_OUTBOUND_ALLOW would set it.
        outbound_allow=("10.20.0.0/16",),
    ) as svc:
        yield svc


@pytest.fixture
def stub(integration: testing.RunningService) -> integration_pb2_grpc.IntegrationServiceStub:
    return integration_pb2_grpc.IntegrationServiceStub(integration.channel)


async def test_create_then_get_returns_what_was_stored(stub) -> None:
    created = await stub.CreateConnector(
        integration_pb2.CreateConnectorRequest(
            name=" Orders hook ",
            kind=WEBHOOK,
            config={"url": "https://hooks.example.com/orders", "format": "json"},
            enabled=True,
        ),
        metadata=TENANT_A,
    )
    assert created.name == "Orders hook"
    assert created.kind == WEBHOOK
    assert dict(created.config) == {"url": "https://hooks.example.com/orders", "format": "json"}
    assert created.enabled is True
    fetched = await stub.GetConnector(
        integration_pb2.GetConnectorRequest(id=created.id), metadata=TENANT_A
    )
    assert fetched == created


async def test_secrets_are_redacted_and_kept_in_the_secret_store_only(
    stub, postgres_engine, openbao_engine
) -> None:
    created = await stub.CreateConnector(
        integration_pb2.CreateConnectorRequest(
            name="CRM",
            kind=integration_pb2.CONNECTOR_KIND_HTTP,
            config={
                "url": "https://crm.example.com/api",
                "Api_Key": "sk-live-abc123",
                "db.password": "hunter2",
                "region": "eu",
            },
        ),
        metadata=TENANT_A,
    )
    expected = {
        "url": "https://crm.example.com/api",
        "Api_Key": "********",
        "db.password": "********",
        "region": "eu",
    }
    assert dict(created.config) == expected
    fetched = await stub.GetConnector(
        integration_pb2.GetConnectorRequest(id=created.id), metadata=TENANT_A
    )
    assert dict(fetched.config) == expected
    listed = await stub.ListConnectors(integration_pb2.ListConnectorsRequest(), metadata=TENANT_A)
    assert dict(next(c for c in listed.connectors if c.id == created.id).config) == expected

    # What a reader of the database (or of a backup) sees: the names of the secret keys and the
    # secret store's version, never a value, not even encrypted.
    conn = await asyncpg.connect(postgres_engine.url("test_integration"))
    try:
        row = await conn.fetchrow("SELECT * FROM connectors WHERE id = $1::uuid", created.id)
    finally:
        await conn.close()
    assert row is not None
    raw = json.dumps({k: str(v) for k, v in dict(row).items()})
    assert "sk-live-abc123" not in raw
    assert "hunter2" not in raw
    assert json.loads(row["config"]) == {"url": "https://crm.example.com/api", "region": "eu"}
    assert sorted(row["secret_keys"]) == ["Api_Key", "db.password"]
    # The values are in the secret store, under the tenant's folder.
    vault = hvac.Client(url=openbao_engine.url(), token=openbao_engine.root_token)
    kept = vault.secrets.kv.v2.read_secret_version(
        path=f"edrs-test-{RUN}/tenants/{testing.tenant_of(TENANT_A)}/connectors/{created.id}",
        mount_point="secret",
        raise_on_deleted_version=True,
    )
    assert kept["data"]["data"] == {"Api_Key": "sk-live-abc123", "db.password": "hunter2"}


async def test_duplicate_name_in_a_tenant_is_refused_but_other_tenants_may_reuse_it(stub) -> None:
    request = integration_pb2.CreateConnectorRequest(
        name="Tools", kind=integration_pb2.CONNECTOR_KIND_MCP
    )
    await stub.CreateConnector(request, metadata=TENANT_A)
    await testing.expect_rpc_error(
        stub.CreateConnector(
            integration_pb2.CreateConnectorRequest(
                name="TOOLS", kind=integration_pb2.CONNECTOR_KIND_MCP
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "TOOLS",
    )
    theirs = await stub.CreateConnector(request, metadata=TENANT_B)
    assert theirs.name == "Tools"


async def test_other_tenant_cannot_see_the_connector(stub) -> None:
    created = await stub.CreateConnector(
        integration_pb2.CreateConnectorRequest(
            name="Private", kind=integration_pb2.CONNECTOR_KIND_MCP
        ),
        metadata=TENANT_A,
    )
    await testing.expect_rpc_error(
        stub.GetConnector(integration_pb2.GetConnectorRequest(id=created.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListConnectors(integration_pb2.ListConnectorsRequest(), metadata=TENANT_B)
    assert created.id not in {c.id for c in listed.connectors}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (integration_pb2.CreateConnectorRequest(name="", kind=WEBHOOK), "name is required"),
        (
            integration_pb2.CreateConnectorRequest(name="n" * 201, kind=WEBHOOK),
            "name is 201 characters",
        ),
        (integration_pb2.CreateConnectorRequest(name="n"), "kind is required"),
        (
            integration_pb2.CreateConnectorRequest(name="n", kind=WEBHOOK),
            "config[url] is required",
        ),
        (
            integration_pb2.CreateConnectorRequest(
                name="n", kind=WEBHOOK, config={"url": "ftp://files.example.com"}
            ),
            "config[url] must use http or https, not 'ftp'",
        ),
        (
            integration_pb2.CreateConnectorRequest(
                name="n",
                kind=integration_pb2.CONNECTOR_KIND_MCP,
                config={f"k{i}": "v" for i in range(51)},
            ),
            "config has 51 keys",
        ),
        (
            integration_pb2.CreateConnectorRequest(
                name="n", kind=integration_pb2.CONNECTOR_KIND_MCP, config={"bad key": "v"}
            ),
            "config key 'bad key'",
        ),
        (
            integration_pb2.CreateConnectorRequest(
                name="n", kind=integration_pb2.CONNECTOR_KIND_MCP, config={"k": "v" * 4097}
            ),
            "config[k] is 4097 characters",
        ),
    ],
)
async def test_invalid_create_names_the_field(stub, request_, field) -> None:
    await testing.expect_rpc_error(
        stub.CreateConnector(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, field
    )


@pytest.mark.parametrize("kind", [WEBHOOK, integration_pb2.CONNECTOR_KIND_HTTP])
async def test_a_connector_to_a_loopback_url_is_refused_as_ssrf(stub, kind) -> None:
    # The research service refuses such URLs too: one outbound policy for every service.
    await testing.expect_rpc_error(
        stub.CreateConnector(
            integration_pb2.CreateConnectorRequest(
                name="loopback", kind=kind, config={"url": "http://127.0.0.1:8080/in"}
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "config[url] host 127.0.0.1 is a loopback address",
    )


async def test_the_operators_outbound_allow_rule_opens_that_network_only(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-{uuid.uuid4().hex}")
    made = await stub.CreateConnector(
        integration_pb2.CreateConnectorRequest(
            name="intranet hook", kind=WEBHOOK, config={"url": "http://10.20.3.4/in"}
        ),
        metadata=tenant,
    )
    assert made.config["url"] == "http://10.20.3.4/in"
    await testing.expect_rpc_error(
        stub.CreateConnector(
            integration_pb2.CreateConnectorRequest(
                name="other hook", kind=WEBHOOK, config={"url": "http://10.21.0.1/in"}
            ),
            metadata=tenant,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "config[url] host 10.21.0.1 is a private address",
    )


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(
        stub.ListConnectors(integration_pb2.ListConnectorsRequest())
    )


async def test_list_pages_through_every_connector_once(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-paging-{RUN}")
    made = []
    for i in range(7):
        c = await stub.CreateConnector(
            integration_pb2.CreateConnectorRequest(
                name=f"c{i}", kind=integration_pb2.CONNECTOR_KIND_MCP
            ),
            metadata=tenant,
        )
        made.append(c.id)
    connectors = await testing.collect_pages(
        stub.ListConnectors,
        integration_pb2.ListConnectorsRequest,
        "connectors",
        page_size=3,
        metadata=tenant,
    )
    assert [c.id for c in connectors] == made


async def test_bad_page_token_is_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.ListConnectors(
            integration_pb2.ListConnectorsRequest(
                page=common_pb2.PageRequest(page_token="garbage!")
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token",
    )


async def test_a_created_connector_is_announced_without_its_secrets(stub, integration) -> None:
    created = await stub.CreateConnector(
        integration_pb2.CreateConnectorRequest(
            name="Announced",
            kind=WEBHOOK,
            config={"url": "https://hooks.example.com/a", "signing_secret": "s3cr3t-value"},
        ),
        metadata=TENANT_A,
    )
    [event] = await testing.published_events(
        integration, "integration.connector_created", created.id
    )
    assert event["payload"] == {"connector_id": created.id, "kind": "webhook", "name": "Announced"}
    assert "s3cr3t-value" not in json.dumps(event)
    assert (event["client_id"], event["source_container"]) == (
        testing.tenant_of(TENANT_A),
        "integration",
    )


async def test_secrets_sealed_by_an_earlier_release_move_into_the_secret_store(
    integration, postgres_engine, openbao_engine
) -> None:
    """Rows written before the secret store hold Fernet-sealed values; start-up moves them."""
    key = SecretStr("former-credentials-key-0123456789abcdef")
    cipher = SecretCipher(key)
    tenant, connector_id = f"tenant-legacy-{RUN}", uuid.uuid4()
    pool = await asyncpg.create_pool(postgres_engine.url("test_integration"), min_size=1)
    try:
        await pool.execute(
            "INSERT INTO connectors (id, client_id, name, kind, config) VALUES ($1, $2, $3, $4, $5)",
            connector_id,
            tenant,
            "legacy",
            "http",
            json.dumps(
                {"url": "https://old.example.com", "token": {"fernet": cipher.encrypt("t0k")}}
            ),
        )
        secrets = VaultSecretStore(
            VaultConfig(
                address=openbao_engine.url(),
                token=SecretStr(openbao_engine.root_token),
                path_prefix=f"edrs-test-{RUN}",
            )
        )
        store = PostgresConnectorStore(pool, secrets, events=None)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="EDRS_INTEGRATION_CREDENTIALS_KEY"):
            await store.move_sealed_secrets(None, "EDRS_INTEGRATION_CREDENTIALS_KEY")
        assert await store.move_sealed_secrets(cipher, "EDRS_INTEGRATION_CREDENTIALS_KEY") >= 1
        moved = await store.get(tenant, connector_id)
        assert moved is not None
        assert moved.config == {"url": "https://old.example.com"}
        assert await store.secret_values(moved) == {"token": "t0k"}
        raw = await pool.fetchval("SELECT config::text FROM connectors WHERE id = $1", connector_id)
        assert "fernet" not in raw
        assert await store.move_sealed_secrets(None, "EDRS_INTEGRATION_CREDENTIALS_KEY") == 0
    finally:
        await pool.close()
