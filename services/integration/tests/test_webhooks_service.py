"""Webhooks through the integration service over gRPC, on real PostgreSQL, NATS and OpenBao:
an event of the fleet reaches a subscriber through the bus consumer and the dispatcher; inbound
webhooks are verified (Standard Webhooks, GitHub and Stripe HMAC) and refused when forged, stale
or replayed, with no event; a good one publishes exactly one `integration.webhook_received`."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_core.testing_http import LoopbackHttpServer, RecordedRequest, Responder
from edrs_integration.app import definition
from edrs_integration.webhooks.signing import new_secret, standard_headers
from edrs_proto.integration.v1 import (
    integration_pb2,
    integration_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from standardwebhooks.webhooks import Webhook

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
TENANT = testing.tenant_metadata(f"tenant-wh-{RUN}")
OTHER = testing.tenant_metadata(f"tenant-wh-other-{RUN}")


@pytest.fixture(scope="module")
async def integration(
    postgres_engine, redis_engine, nats_engine, openbao_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_webhooks_service", redis_db=7
    )
    async with testing.running_service(
        definition,
        **settings,
        vault_address=openbao_engine.url(),
        vault_token=openbao_engine.root_token,
        vault_path_prefix=f"edrs-test-{RUN}",
        outbound_allow=("127.0.0.1",),
    ) as svc:
        yield svc


@pytest.fixture
def hooks(integration) -> webhooks_pb2_grpc.WebhookServiceStub:
    return webhooks_pb2_grpc.WebhookServiceStub(integration.channel)


@pytest.fixture
def connectors(integration) -> integration_pb2_grpc.IntegrationServiceStub:
    return integration_pb2_grpc.IntegrationServiceStub(integration.channel)


async def test_an_event_of_the_fleet_reaches_its_subscriber_signed(hooks, connectors) -> None:
    received: list[RecordedRequest] = []

    async def receive(request: RecordedRequest, out: Responder) -> None:
        received.append(request)
        await out.send(204)

    async with LoopbackHttpServer("127.0.0.1") as server:
        server.routes["/events"] = receive
        made = await hooks.CreateSubscription(
            webhooks_pb2.CreateSubscriptionRequest(
                url=server.url("/events"),
                event_types=["integration.connector_created"],
                enabled=True,
            ),
            metadata=TENANT,
        )
        assert made.secret.startswith("whsec_")
        fetched = await hooks.GetSubscription(
            webhooks_pb2.GetSubscriptionRequest(id=made.subscription.id), metadata=TENANT
        )
        assert made.secret not in str(fetched)
        connector = await connectors.CreateConnector(
            integration_pb2.CreateConnectorRequest(
                name="announced", kind=integration_pb2.CONNECTOR_KIND_MCP
            ),
            metadata=TENANT,
        )

        async def delivered() -> bool:
            return bool(received)

        await testing.wait_until(delivered, 30, "the webhook delivery")
    [request] = received
    body = Webhook(made.secret).verify(request.body, request.headers)
    assert body["type"] == "integration.connector_created"
    assert body["data"]["connector_id"] == connector.id

    log = await hooks.ListDeliveries(
        webhooks_pb2.ListDeliveriesRequest(subscription_id=made.subscription.id),
        metadata=TENANT,
    )
    [delivery] = log.deliveries
    assert delivery.id == request.headers["webhook-id"]
    assert delivery.state == webhooks_pb2.DELIVERY_STATE_SUCCEEDED
    assert [a.status_code for a in delivery.attempts] == [204]
    # Another tenant sees neither the subscription nor its log.
    await testing.expect_rpc_error(
        hooks.ListDeliveries(
            webhooks_pb2.ListDeliveriesRequest(subscription_id=made.subscription.id),
            metadata=OTHER,
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_subscription_to_a_loopback_url_needs_the_operators_rule(hooks) -> None:
    await testing.expect_rpc_error(
        hooks.CreateSubscription(
            webhooks_pb2.CreateSubscriptionRequest(
                url="http://127.0.0.2:9/x", event_types=["*"], enabled=True
            ),
            metadata=TENANT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "url host 127.0.0.2 is a loopback address",
    )
    await testing.expect_rpc_error(
        hooks.CreateSubscription(
            webhooks_pb2.CreateSubscriptionRequest(
                url="https://hooks.example.com/x", event_types=["not a type"]
            ),
            metadata=TENANT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "event_types[0]",
    )


async def inbound_connector(connectors, scheme: str, secret: str) -> integration_pb2.Connector:
    return await connectors.CreateConnector(
        integration_pb2.CreateConnectorRequest(
            name=f"inbound-{scheme}-{uuid.uuid4().hex[:6]}",
            kind=integration_pb2.CONNECTOR_KIND_MCP,
            config={"inbound_secret": secret, "inbound_scheme": scheme},
            enabled=True,
        ),
        metadata=TENANT,
    )


def receive(hooks, connector_id: str, headers: dict[str, str], body: bytes):
    return hooks.ReceiveWebhook(
        webhooks_pb2.ReceiveWebhookRequest(
            connector_id=connector_id, headers={k.lower(): v for k, v in headers.items()}, body=body
        ),
        metadata=TENANT,
    )


async def test_inbound_standard_webhooks_refuse_forged_stale_and_replayed_ones(
    hooks, connectors, integration
) -> None:
    secret = new_secret()
    connector = await inbound_connector(connectors, "standard", secret)
    body = json.dumps({"type": "invoice.paid", "amount": 42}).encode()
    now = int(time.time())

    forged = standard_headers([new_secret()], "msg_forged", now, body)
    await testing.expect_rpc_error(
        receive(hooks, connector.id, forged, body),
        grpc.StatusCode.UNAUTHENTICATED,
        "no webhook-signature matches",
    )
    stale = standard_headers([secret], "msg_stale", now - 301, body)
    await testing.expect_rpc_error(
        receive(hooks, connector.id, stale, body),
        grpc.StatusCode.UNAUTHENTICATED,
        "at most 300 s",
    )
    tampered = standard_headers([secret], "msg_tampered", now, body)
    await testing.expect_rpc_error(
        receive(hooks, connector.id, tampered, body.replace(b"42", b"4200")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    good = standard_headers([secret], "msg_good", now, body)
    accepted = await receive(hooks, connector.id, good, body)
    assert accepted.webhook_id == "msg_good"
    await testing.expect_rpc_error(
        receive(hooks, connector.id, good, body), grpc.StatusCode.ALREADY_EXISTS, "replay"
    )
    # Another tenant cannot post to this tenant's connector.
    await testing.expect_rpc_error(
        hooks.ReceiveWebhook(
            webhooks_pb2.ReceiveWebhookRequest(connector_id=connector.id, headers=good, body=body),
            metadata=OTHER,
        ),
        grpc.StatusCode.NOT_FOUND,
    )

    [event] = await testing.published_events(
        integration, "integration.webhook_received", connector.id
    )
    assert event["event_id"] == accepted.event_id
    assert event["payload"]["webhook_id"] == "msg_good"
    assert event["payload"]["payload"] == {"type": "invoice.paid", "amount": 42}
    assert event["payload"]["topic"] == "invoice.paid"
    assert secret not in json.dumps(event)


async def test_inbound_github_and_stripe_signatures(hooks, connectors, integration) -> None:
    body = json.dumps({"id": "evt_1", "type": "charge.succeeded", "action": "opened"}).encode()
    github = await inbound_connector(connectors, "github", "gh-secret")
    signature = "sha256=" + hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    headers = {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Delivery": "d-1",
        "X-GitHub-Event": "pull_request",
    }
    await testing.expect_rpc_error(
        receive(hooks, github.id, {**headers, "X-Hub-Signature-256": "sha256=00"}, body),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert (await receive(hooks, github.id, headers, body)).webhook_id == "d-1"
    await testing.expect_rpc_error(
        receive(hooks, github.id, headers, body), grpc.StatusCode.ALREADY_EXISTS
    )
    [event] = await testing.published_events(integration, "integration.webhook_received", github.id)
    assert (event["payload"]["topic"], event["payload"]["scheme"]) == ("pull_request", "github")

    stripe = await inbound_connector(connectors, "stripe", "whsec_stripe_style_secret")
    now = int(time.time())

    def stripe_headers(ts: int) -> dict[str, str]:
        mac = hmac.new(b"whsec_stripe_style_secret", f"{ts}.".encode() + body, hashlib.sha256)
        return {"Stripe-Signature": f"t={ts},v1={mac.hexdigest()}"}

    await testing.expect_rpc_error(
        receive(hooks, stripe.id, stripe_headers(now - 301), body),
        grpc.StatusCode.UNAUTHENTICATED,
        "at most 300 s",
    )
    assert (await receive(hooks, stripe.id, stripe_headers(now), body)).webhook_id == "evt_1"
    [event] = await testing.published_events(integration, "integration.webhook_received", stripe.id)
    assert event["payload"]["topic"] == "charge.succeeded"
