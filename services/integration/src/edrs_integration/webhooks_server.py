"""The WebhookService gRPC servicer (protos/edrs/integration/v1/webhooks.proto): the caller's
tenant's subscriptions and their delivery log, and inbound webhooks forwarded by the gateway."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from edrs_core import InvalidArgument, NotFound, ServicerContext, validation
from edrs_core.clock import Clock
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.outbound import OutboundPolicy
from edrs_core.protobuf import timestamp
from edrs_events.subjects import type_filter
from edrs_proto.common.v1 import common_pb2
from edrs_proto.integration.v1 import webhooks_pb2, webhooks_pb2_grpc

from edrs_integration.connectors import http_url
from edrs_integration.store import ConnectorStore
from edrs_integration.webhooks.inbound import InboundWebhooks
from edrs_integration.webhooks.signing import new_secret, secret_key
from edrs_integration.webhooks.store import (
    Delivery,
    Subscription,
    WebhookStore,
    delivery_uuid,
)

MAX_EVENT_TYPES = 50
DESCRIPTION_MAX = 500
DEFAULT_PREVIOUS_TTL = timedelta(days=1)
MAX_PREVIOUS_TTL = timedelta(days=7)
_STATE_TO_PROTO = {
    "pending": webhooks_pb2.DELIVERY_STATE_PENDING,
    "succeeded": webhooks_pb2.DELIVERY_STATE_SUCCEEDED,
    "dead": webhooks_pb2.DELIVERY_STATE_DEAD,
}
_STATE_FROM_PROTO = {number: name for name, number in _STATE_TO_PROTO.items()}
_UPDATABLE = {"url", "event_types", "description", "enabled"}


def subscription_to_proto(s: Subscription) -> webhooks_pb2.Subscription:
    message = webhooks_pb2.Subscription(
        id=str(s.id),
        url=s.url,
        event_types=list(s.event_types),
        description=s.description,
        enabled=s.enabled,
        create_time=timestamp(s.created_at),
        update_time=timestamp(s.updated_at),
    )
    if s.previous_secret_expires_at is not None:
        message.previous_secret_expire_time.CopyFrom(timestamp(s.previous_secret_expires_at))
    return message


def delivery_to_proto(d: Delivery) -> webhooks_pb2.Delivery:
    message = webhooks_pb2.Delivery(
        id=d.webhook_id,
        subscription_id=str(d.subscription_id),
        event_id=d.event_id,
        event_type=d.event_type,
        state=_STATE_TO_PROTO[d.state],
        attempts=[
            webhooks_pb2.DeliveryAttempt(
                number=a.number,
                attempt_time=timestamp(a.attempted_at),
                status_code=a.status_code,
                error=a.error,
                latency_ms=a.latency_ms,
            )
            for a in d.attempts
        ],
        create_time=timestamp(d.created_at),
    )
    if d.state == "pending":
        message.next_attempt_time.CopyFrom(timestamp(d.next_attempt_at))
    return message


def event_types(values: Sequence[str]) -> list[str]:
    if not values:
        raise InvalidArgument("event_types needs at least one event type", field="event_types")
    if len(values) > MAX_EVENT_TYPES:
        raise InvalidArgument(
            f"event_types has {len(values)} entries; the limit is {MAX_EVENT_TYPES}",
            field="event_types",
        )
    for i, value in enumerate(values):
        try:
            type_filter(value)
        except ValueError as exc:
            raise InvalidArgument(f"event_types[{i}]: {exc}", field=f"event_types[{i}]") from None
    return list(dict.fromkeys(values))


def given_secret(value: str, field: str) -> str:
    if not value:
        return new_secret()
    try:
        secret_key(value)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {exc}", field=field) from None
    return value


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(
        self,
        store: WebhookStore,
        connectors: ConnectorStore,
        inbound: InboundWebhooks,
        outbound: OutboundPolicy,
        clock: Clock,
    ) -> None:
        self.store = store
        self.connectors = connectors
        self.inbound = inbound
        self.outbound = outbound
        self.clock = clock

    async def _subscription(self, client_id: str, raw_id: str) -> Subscription:
        found = await self.store.get_subscription(client_id, parse_id(raw_id))
        if found is None:
            raise NotFound(f"webhook subscription {raw_id} not found")
        return found

    async def CreateSubscription(  # noqa: N802 (gRPC method name)
        self, request: webhooks_pb2.CreateSubscriptionRequest, context: ServicerContext
    ) -> webhooks_pb2.CreateSubscriptionResponse:
        client_id = require_client_id()
        url = http_url(request.url, "url", self.outbound)
        types = event_types(request.event_types)
        description = validation.text(
            request.description, "description", max_length=DESCRIPTION_MAX, required=False
        )
        secret = given_secret(request.secret, "secret")
        created = await self.store.create_subscription(
            client_id,
            url=url,
            event_types=types,
            description=description,
            enabled=request.enabled,
            secret=secret,
            now=self.clock.now(),
        )
        return webhooks_pb2.CreateSubscriptionResponse(
            subscription=subscription_to_proto(created), secret=secret
        )

    async def GetSubscription(  # noqa: N802
        self, request: webhooks_pb2.GetSubscriptionRequest, context: ServicerContext
    ) -> webhooks_pb2.Subscription:
        return subscription_to_proto(await self._subscription(require_client_id(), request.id))

    async def ListSubscriptions(  # noqa: N802
        self, request: webhooks_pb2.ListSubscriptionsRequest, context: ServicerContext
    ) -> webhooks_pb2.ListSubscriptionsResponse:
        found, token = await self.store.list_subscriptions(
            require_client_id(), request.page.page_token, request.page.page_size
        )
        return webhooks_pb2.ListSubscriptionsResponse(
            subscriptions=[subscription_to_proto(s) for s in found],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def UpdateSubscription(  # noqa: N802
        self, request: webhooks_pb2.UpdateSubscriptionRequest, context: ServicerContext
    ) -> webhooks_pb2.Subscription:
        client_id = require_client_id()
        mask = set(request.update_mask)
        if not mask or mask - _UPDATABLE:
            raise InvalidArgument(
                f"update_mask must name some of {', '.join(sorted(_UPDATABLE))}",
                field="update_mask",
            )
        updated = await self.store.update_subscription(
            client_id,
            parse_id(request.id),
            url=http_url(request.url, "url", self.outbound) if "url" in mask else None,
            event_types=event_types(request.event_types) if "event_types" in mask else None,
            description=validation.text(
                request.description, "description", max_length=DESCRIPTION_MAX, required=False
            )
            if "description" in mask
            else None,
            enabled=request.enabled if "enabled" in mask else None,
            now=self.clock.now(),
        )
        if updated is None:
            raise NotFound(f"webhook subscription {request.id} not found")
        return subscription_to_proto(updated)

    async def DeleteSubscription(  # noqa: N802
        self, request: webhooks_pb2.DeleteSubscriptionRequest, context: ServicerContext
    ) -> webhooks_pb2.DeleteSubscriptionResponse:
        if not await self.store.delete_subscription(require_client_id(), parse_id(request.id)):
            raise NotFound(f"webhook subscription {request.id} not found")
        return webhooks_pb2.DeleteSubscriptionResponse()

    async def RotateSubscriptionSecret(  # noqa: N802
        self, request: webhooks_pb2.RotateSubscriptionSecretRequest, context: ServicerContext
    ) -> webhooks_pb2.RotateSubscriptionSecretResponse:
        client_id = require_client_id()
        ttl = (
            timedelta(seconds=request.previous_secret_ttl_seconds)
            if request.previous_secret_ttl_seconds
            else DEFAULT_PREVIOUS_TTL
        )
        if not timedelta(0) < ttl <= MAX_PREVIOUS_TTL:
            raise InvalidArgument(
                f"previous_secret_ttl_seconds must be within 1..{int(MAX_PREVIOUS_TTL.total_seconds())}",
                field="previous_secret_ttl_seconds",
            )
        secret = given_secret(request.secret, "secret")
        rotated = await self.store.rotate_secret(
            client_id, parse_id(request.id), secret=secret, previous_ttl=ttl, now=self.clock.now()
        )
        if rotated is None:
            raise NotFound(f"webhook subscription {request.id} not found")
        return webhooks_pb2.RotateSubscriptionSecretResponse(
            subscription=subscription_to_proto(rotated), secret=secret
        )

    async def ListDeliveries(  # noqa: N802
        self, request: webhooks_pb2.ListDeliveriesRequest, context: ServicerContext
    ) -> webhooks_pb2.ListDeliveriesResponse:
        client_id = require_client_id()
        sub = await self._subscription(client_id, request.subscription_id)
        state = None
        if request.state != webhooks_pb2.DELIVERY_STATE_UNSPECIFIED:
            state = validation.enum_value(
                request.state, "state", _STATE_FROM_PROTO, webhooks_pb2.DeliveryState
            )
        found, token = await self.store.list_deliveries(
            client_id, sub.id, state, request.page.page_token, request.page.page_size
        )
        return webhooks_pb2.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in found],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def ReplayDelivery(  # noqa: N802
        self, request: webhooks_pb2.ReplayDeliveryRequest, context: ServicerContext
    ) -> webhooks_pb2.Delivery:
        client_id = require_client_id()
        sub = await self._subscription(client_id, request.subscription_id)
        delivery_id = delivery_uuid(request.delivery_id)
        if delivery_id is None:
            raise InvalidArgument(
                "delivery_id is a webhook-id such as msg_0190...", field="delivery_id"
            )
        replayed = await self.store.replay(client_id, sub.id, delivery_id, self.clock.now())
        if replayed is None:
            raise NotFound(f"delivery {request.delivery_id} not found")
        return delivery_to_proto(replayed)

    async def ReceiveWebhook(  # noqa: N802
        self, request: webhooks_pb2.ReceiveWebhookRequest, context: ServicerContext
    ) -> webhooks_pb2.ReceiveWebhookResponse:
        client_id = require_client_id()
        connector = await self.connectors.get(client_id, parse_id(request.connector_id))
        if connector is None:
            raise NotFound(f"connector {request.connector_id} not found")
        webhook_id, event_id = await self.inbound.receive(
            client_id, connector, dict(request.headers), request.body, self.clock.now()
        )
        return webhooks_pb2.ReceiveWebhookResponse(webhook_id=webhook_id, event_id=event_id)
