"""Connectors at work, against real PostgreSQL, OpenBao, HTTP servers on loopback (allowed by an
explicit operator rule) and a real aiosmtpd SMTP server: REST auth types, the OAuth2 token fetched
once for 50 concurrent calls and once more on expiry, test connection, update with credential
rotation, delete, and the tools' http_request through a connector."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

import asyncpg
import grpc
import hvac
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from edrs_core import InvalidArgument, testing
from edrs_core.clock import ManualClock
from edrs_core.engines import free_port
from edrs_core.outbound import OutboundClient, OutboundPolicy
from edrs_core.secretstore import VaultConfig, VaultSecretStore
from edrs_core.testing_http import LoopbackHttpServer, RecordedRequest, Responder
from edrs_integration.app import definition
from edrs_integration.connector_calls import ConnectorCallError, ConnectorCalls
from edrs_integration.store.postgres import PostgresConnectorStore
from edrs_proto.integration.v1 import (
    integration_pb2,
    integration_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
)
from pydantic import SecretStr

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT = testing.tenant_metadata(f"tenant-conn-{RUN}")
OTHER = testing.tenant_metadata(f"tenant-other-{RUN}")
HTTP = integration_pb2.CONNECTOR_KIND_HTTP
SMTP = integration_pb2.CONNECTOR_KIND_SMTP
CLIENT_SECRET = f"client-secret-{RUN}"
SMTP_PASSWORD = f"smtp-password-{RUN}"


class Api:
    """A token endpoint and an API on loopback: tokens are `tok-<n>`; the API takes the newest."""

    def __init__(self) -> None:
        self.token_requests: list[RecordedRequest] = []
        self.expires_in = 3600

    @property
    def current(self) -> str:
        return f"tok-{len(self.token_requests)}"

    async def token(self, request: RecordedRequest, out: Responder) -> None:
        self.token_requests.append(request)
        body = {"access_token": self.current, "token_type": "Bearer", "expires_in": self.expires_in}
        await out.send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    async def orders(self, request: RecordedRequest, out: Responder) -> None:
        auth = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key", "")
        if auth in (f"Bearer {self.current}", "Bearer static-bearer-token") or key == "the-api-key":
            await out.send(200, b'{"orders": [1, 2]}', {"Content-Type": "application/json"})
        else:
            await out.send(401, b'{"error": "unauthorized"}')


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[tuple[Api, LoopbackHttpServer]]:
    handler = Api()
    async with LoopbackHttpServer("127.0.0.1") as server:
        server.routes["/oauth/token"] = handler.token
        server.routes["/v1/orders"] = handler.orders
        server.routes["/v1/"] = handler.orders
        yield handler, server


class Authenticator:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=Authenticator(),
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
async def integration(
    postgres_engine, redis_engine, nats_engine, openbao_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_connector_calls", redis_db=7
    )
    async with testing.running_service(
        definition,
        **settings,
        vault_address=openbao_engine.url(),
        vault_token=openbao_engine.root_token,
        vault_path_prefix=f"edrs-test-{RUN}",
        # The operator's explicit rule for the test's loopback servers.
        outbound_allow=("127.0.0.1",),
    ) as svc:
        yield svc


@pytest.fixture
def stub(integration) -> integration_pb2_grpc.IntegrationServiceStub:
    return integration_pb2_grpc.IntegrationServiceStub(integration.channel)


@pytest.fixture(scope="module")
async def local(
    postgres_engine, openbao_engine, integration
) -> AsyncIterator[PostgresConnectorStore]:
    """The service's connector store, read from the test (its own pool, same database)."""
    pool = await asyncpg.create_pool(postgres_engine.url("test_connector_calls"), min_size=1)
    secrets = VaultSecretStore(
        VaultConfig(
            address=openbao_engine.url(),
            token=SecretStr(openbao_engine.root_token),
            path_prefix=f"edrs-test-{RUN}",
        )
    )
    yield PostgresConnectorStore(pool, secrets, events=None)  # type: ignore[arg-type]
    await pool.close()


async def create(stub, name: str, kind: int, config: dict[str, str], metadata=TENANT):
    return await stub.CreateConnector(
        integration_pb2.CreateConnectorRequest(name=name, kind=kind, config=config, enabled=True),
        metadata=metadata,
    )


def oauth2_config(server: LoopbackHttpServer) -> dict[str, str]:
    return {
        "url": server.url("/v1"),
        "auth": "oauth2_client_credentials",
        "token_url": server.url("/oauth/token"),
        "client_id": "edrs-test",
        "client_secret": CLIENT_SECRET,
        "scope": "orders:read",
    }


async def test_the_oauth2_token_is_fetched_once_for_50_calls_and_once_more_on_expiry(
    stub, local, api
) -> None:
    handler, server = api
    made = await create(stub, f"oauth-{uuid.uuid4().hex[:6]}", HTTP, oauth2_config(server))
    clock = ManualClock(datetime.now(UTC))
    client = OutboundClient(OutboundPolicy(allow=("127.0.0.1",)))
    calls = ConnectorCalls(local, client, OutboundPolicy(allow=("127.0.0.1",)), clock)
    tenant, connector_id = testing.tenant_of(TENANT), uuid.UUID(made.id)
    before = len(handler.token_requests)

    async def one() -> tuple[int, str]:
        return await calls.request(
            tenant,
            connector_id,
            method="GET",
            path="/orders",
            query={},
            body=None,
            timeout_seconds=10,
        )

    answers = await asyncio.gather(*(one() for _ in range(50)))
    assert [status for status, _ in answers] == [200] * 50
    assert json.loads(answers[0][1]) == {"orders": [1, 2]}
    assert len(handler.token_requests) == before + 1
    form = handler.token_requests[-1].body.decode()
    assert "grant_type=client_credentials" in form and "scope=orders%3Aread" in form

    # The token expires: the next 50 concurrent calls fetch exactly one new token.
    clock.advance(timedelta(seconds=handler.expires_in))
    answers = await asyncio.gather(*(one() for _ in range(50)))
    assert [status for status, _ in answers] == [200] * 50
    assert len(handler.token_requests) == before + 2
    await client.aclose()


async def test_api_key_and_bearer_connectors_send_their_credentials(stub, local, api) -> None:
    _, server = api
    tenant = testing.tenant_of(TENANT)
    client = OutboundClient(OutboundPolicy(allow=("127.0.0.1",)))
    calls = ConnectorCalls(
        local, client, OutboundPolicy(allow=("127.0.0.1",)), ManualClock(datetime.now(UTC))
    )
    keyed = await create(
        stub,
        f"key-{uuid.uuid4().hex[:6]}",
        HTTP,
        {"url": server.url("/v1"), "auth": "api_key", "api_key": "the-api-key"},
    )
    bearer = await create(
        stub,
        f"bearer-{uuid.uuid4().hex[:6]}",
        HTTP,
        {"url": server.url("/v1"), "auth": "bearer", "token": "static-bearer-token"},
    )
    for made in (keyed, bearer):
        status, _ = await calls.request(
            tenant,
            uuid.UUID(made.id),
            method="GET",
            path="/orders",
            query={"page": "1"},
            body=None,
            timeout_seconds=10,
        )
        assert status == 200
    with pytest.raises(InvalidArgument, match=r"'\.\.' segments"):
        await calls.request(
            tenant,
            uuid.UUID(keyed.id),
            method="GET",
            path="/../admin",
            query={},
            body=None,
            timeout_seconds=10,
        )
    await client.aclose()


async def test_a_loopback_connector_without_the_operators_rule_is_refused_before_connecting(
    stub, local, api
) -> None:
    _, server = api
    made = await create(
        stub, f"noallow-{uuid.uuid4().hex[:6]}", HTTP, {"url": server.url("/v1"), "auth": "none"}
    )
    client = OutboundClient(OutboundPolicy())
    calls = ConnectorCalls(local, client, OutboundPolicy(), ManualClock(datetime.now(UTC)))
    before = server.connections
    with pytest.raises(ConnectorCallError, match="loopback"):
        await calls.request(
            testing.tenant_of(TENANT),
            uuid.UUID(made.id),
            method="GET",
            path="/orders",
            query={},
            body=None,
            timeout_seconds=5,
        )
    assert server.connections == before
    await client.aclose()


async def test_test_connection_update_rotation_and_delete(stub, api, openbao_engine) -> None:
    handler, server = api
    made = await create(stub, f"crm-{uuid.uuid4().hex[:6]}", HTTP, oauth2_config(server))
    tested = await stub.TestConnector(
        integration_pb2.TestConnectorRequest(id=made.id), metadata=TENANT
    )
    assert (tested.ok, tested.status_code) == (True, 200), tested.detail

    # Rotate the client secret: a new version in the secret store; the answer still redacts it.
    rotated = await stub.UpdateConnector(
        integration_pb2.UpdateConnectorRequest(
            id=made.id,
            update_mask=["config", "name"],
            name=made.name + "-2",
            config={"client_secret": "rotated-secret-value", "scope": "orders:write"},
        ),
        metadata=TENANT,
    )
    assert rotated.config["client_secret"] == "********"
    assert rotated.config["scope"] == "orders:write"
    assert rotated.name == made.name + "-2"
    vault = hvac.Client(url=openbao_engine.url(), token=openbao_engine.root_token)
    path = f"edrs-test-{RUN}/tenants/{testing.tenant_of(TENANT)}/connectors/{made.id}"
    latest = vault.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    assert latest["data"]["data"]["client_secret"] == "rotated-secret-value"
    assert latest["data"]["metadata"]["version"] == 2
    before = len(handler.token_requests)
    tested = await stub.TestConnector(
        integration_pb2.TestConnectorRequest(id=made.id), metadata=TENANT
    )
    assert tested.ok
    assert len(handler.token_requests) == before + 1, "a new credential means a new token"
    assert b"rotated-secret-value" in handler.token_requests[-1].body

    # Settings that break the kind's rules are refused, naming the field.
    await testing.expect_rpc_error(
        stub.UpdateConnector(
            integration_pb2.UpdateConnectorRequest(
                id=made.id, update_mask=["config"], remove_keys=["client_secret"]
            ),
            metadata=TENANT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "config[client_secret] is required",
    )
    await testing.expect_rpc_error(
        stub.UpdateConnector(
            integration_pb2.UpdateConnectorRequest(id=made.id, update_mask=["enabled"]),
            metadata=OTHER,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await stub.DeleteConnector(integration_pb2.DeleteConnectorRequest(id=made.id), metadata=TENANT)
    await testing.expect_rpc_error(
        stub.GetConnector(integration_pb2.GetConnectorRequest(id=made.id), metadata=TENANT),
        grpc.StatusCode.NOT_FOUND,
    )
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault.secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )


async def test_the_http_request_tool_calls_through_a_connector(stub, integration, api) -> None:
    _, server = api
    name = f"orders-api-{uuid.uuid4().hex[:6]}"
    await create(
        stub, name, HTTP, {"url": server.url("/v1"), "auth": "api_key", "api_key": "the-api-key"}
    )
    tools = tools_pb2_grpc.ToolServiceStub(integration.channel)
    answer = await tools.CallTool(
        tools_pb2.CallToolRequest(
            name="http_request",
            arguments=json.dumps({"connector": name, "method": "GET", "path": "/orders"}),
        ),
        metadata=TENANT,
    )
    assert not answer.is_error
    assert json.loads(answer.structured)["body"] == {"orders": [1, 2]}
    assert "the-api-key" not in answer.content


async def test_the_smtp_connector_sends_through_a_real_server_and_tests_its_login(
    stub, local, smtp_server
) -> None:
    inbox, port = smtp_server
    config = {
        "host": "127.0.0.1",
        "port": str(port),
        "security": "none",
        "username": "edrs",
        "password": SMTP_PASSWORD,
        "from_address": "persona@edrs.test",
    }
    made = await create(stub, f"mail-{uuid.uuid4().hex[:6]}", SMTP, config)
    assert made.config["password"] == "********"
    tested = await stub.TestConnector(
        integration_pb2.TestConnectorRequest(id=made.id), metadata=TENANT
    )
    assert tested.ok, tested.detail
    assert tested.status_code == 250

    client = OutboundClient(OutboundPolicy(allow=("127.0.0.1",)))
    calls = ConnectorCalls(
        local, client, OutboundPolicy(allow=("127.0.0.1",)), ManualClock(datetime.now(UTC))
    )
    await calls.send_email(
        testing.tenant_of(TENANT),
        uuid.UUID(made.id),
        to=["ada@example.com"],
        subject="Weekly summary",
        text="All orders shipped.",
    )
    [raw] = inbox.messages[-1:]
    sent = message_from_bytes(raw)
    assert (sent["From"], sent["To"], sent["Subject"]) == (
        "persona@edrs.test",
        "ada@example.com",
        "Weekly summary",
    )
    assert "All orders shipped." in sent.get_payload()

    # A wrong password: the test says the login was refused, and shows no password.
    bad = await stub.UpdateConnector(
        integration_pb2.UpdateConnectorRequest(
            id=made.id, update_mask=["config"], config={"password": "wrong"}
        ),
        metadata=TENANT,
    )
    tested = await stub.TestConnector(
        integration_pb2.TestConnectorRequest(id=bad.id), metadata=TENANT
    )
    assert not tested.ok
    assert "login refused (535)" in tested.detail
    assert "wrong" not in tested.detail
    # Without the operator's rule the SMTP host on loopback is refused, before connecting.
    strict = ConnectorCalls(local, client, OutboundPolicy(), ManualClock(datetime.now(UTC)))
    with pytest.raises(ConnectorCallError, match="loopback"):
        await strict.send_email(
            testing.tenant_of(TENANT), uuid.UUID(made.id), to=["a@b.c"], subject="s", text="t"
        )
    await client.aclose()
