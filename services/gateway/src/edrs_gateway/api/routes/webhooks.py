"""`/api/v1/webhooks` (subscriptions, their delivery log, replay, secret rotation) and
`/api/v1/hooks/{tenantId}/{connectorId}` (webhooks in), served by the integration service;
docs/integration.md, "Webhooks out" and "Webhooks in"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from edrs_core.context import acting_as
from edrs_proto.integration.v1 import webhooks_pb2, webhooks_pb2_grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ConfigDict, Field, StrictBool

from edrs_gateway.api.common import (
    AUTHENTICATED,
    PageRequest,
    page_request,
    problem_responses,
    upstream_responses,
)
from edrs_gateway.api.models import SINGLE_LINE, ApiModel, PageOf
from edrs_gateway.api.problems import ApiError
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal
from edrs_gateway.context import Ctx, GatewayContext

router = APIRouter(tags=["webhooks"])

read_webhooks = require(Permission.WEBHOOKS_READ)
write_webhooks = require(Permission.WEBHOOKS_WRITE)

State = Literal["pending", "succeeded", "dead"]
_STATE: dict[State, webhooks_pb2.DeliveryState.ValueType] = {
    "pending": webhooks_pb2.DELIVERY_STATE_PENDING,
    "succeeded": webhooks_pb2.DELIVERY_STATE_SUCCEEDED,
    "dead": webhooks_pb2.DELIVERY_STATE_DEAD,
}
_STATE_NAME = {number: name for name, number in _STATE.items()}
EventType = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[a-z0-9_.*>]+$")]
Secret = Annotated[str, Field(max_length=200, pattern=r"^(whsec_[A-Za-z0-9+/=]+)?$")]
WebhookId = Annotated[UUID, Path(alias="webhookId", description="The subscription's id")]
# Inbound webhooks: headers forwarded to the integration service, at most this many.
MAX_INBOUND_HEADERS = 100


def webhook_stub(ctx: GatewayContext) -> webhooks_pb2_grpc.WebhookServiceAsyncStub:
    return ctx.runtime.peers.stub(webhooks_pb2_grpc.WebhookServiceStub)


def _time(ts: object) -> datetime | None:
    seconds = getattr(ts, "seconds", 0)
    return ts.ToDatetime(tzinfo=UTC) if seconds else None  # type: ignore[attr-defined]


class CreateWebhook(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/edrs",
                    "eventTypes": ["task.task_completed", "knowledge.*"],
                    "description": "Ops dashboard",
                }
            ]
        }
    )

    url: str = Field(min_length=1, max_length=2000)
    event_types: list[EventType] = Field(min_length=1, max_length=50)
    description: str = Field(default="", max_length=500, pattern=SINGLE_LINE)
    enabled: StrictBool = True
    secret: Secret = Field(default="", description="Your own `whsec_` secret; generated if empty")


class UpdateWebhook(ApiModel):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[EventType] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500, pattern=SINGLE_LINE)
    enabled: StrictBool | None = None


class RotateSecret(ApiModel):
    previous_secret_ttl_seconds: int = Field(
        default=86_400, ge=1, le=7 * 86_400, description="How long the old secret still signs"
    )
    secret: Secret = ""


class WebhookOut(ApiModel):
    id: UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: webhooks_pb2.Subscription) -> WebhookOut:
        return cls(
            id=UUID(s.id),
            url=s.url,
            event_types=list(s.event_types),
            description=s.description,
            enabled=s.enabled,
            previous_secret_expires_at=_time(s.previous_secret_expire_time),
            created_at=s.create_time.ToDatetime(tzinfo=UTC),
            updated_at=s.update_time.ToDatetime(tzinfo=UTC),
        )


class WebhookWithSecret(ApiModel):
    webhook: WebhookOut
    secret: str = Field(description="The signing secret, shown this once")


class WebhookList(PageOf):
    webhooks: list[WebhookOut]


class AttemptOut(ApiModel):
    number: int
    attempted_at: datetime
    status_code: int = Field(description="0 when no answer came")
    error: str
    latency_ms: int


class DeliveryOut(ApiModel):
    id: str = Field(description="The webhook-id header of every attempt")
    event_id: str
    event_type: str
    state: State
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, d: webhooks_pb2.Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            event_id=d.event_id,
            event_type=d.event_type,
            state=_STATE_NAME[d.state],
            attempts=[
                AttemptOut(
                    number=a.number,
                    attempted_at=a.attempt_time.ToDatetime(tzinfo=UTC),
                    status_code=a.status_code,
                    error=a.error,
                    latency_ms=a.latency_ms,
                )
                for a in d.attempts
            ],
            next_attempt_at=_time(d.next_attempt_time),
            created_at=d.create_time.ToDatetime(tzinfo=UTC),
        )


class DeliveryList(PageOf):
    deliveries: list[DeliveryOut]


class Received(ApiModel):
    webhook_id: str
    event_id: str


_ERRORS = {**problem_responses(*AUTHENTICATED), **upstream_responses()}
_ONE = {**_ERRORS, **problem_responses(404)}


@router.post(
    "/webhooks",
    response_model=WebhookWithSecret,
    status_code=201,
    summary="Subscribe a URL to event types",
    responses=_ERRORS,
)
async def create_webhook(
    body: CreateWebhook, ctx: Ctx, caller: Annotated[Principal, Depends(write_webhooks)]
) -> WebhookWithSecret:
    made = await webhook_stub(ctx).CreateSubscription(
        webhooks_pb2.CreateSubscriptionRequest(
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            enabled=body.enabled,
            secret=body.secret,
        )
    )
    return WebhookWithSecret(webhook=WebhookOut.of(made.subscription), secret=made.secret)


@router.get("/webhooks", response_model=WebhookList, summary="List webhooks", responses=_ERRORS)
async def list_webhooks(
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_webhooks)],
) -> WebhookList:
    request = webhooks_pb2.ListSubscriptionsRequest()
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await webhook_stub(ctx).ListSubscriptions(request)
    return WebhookList(
        webhooks=[WebhookOut.of(s) for s in reply.subscriptions],
        next_page_token=reply.page.next_page_token,
    )


@router.get(
    "/webhooks/{webhookId}", response_model=WebhookOut, summary="Get a webhook", responses=_ONE
)
async def get_webhook(
    webhook_id: WebhookId, ctx: Ctx, caller: Annotated[Principal, Depends(read_webhooks)]
) -> WebhookOut:
    return WebhookOut.of(
        await webhook_stub(ctx).GetSubscription(
            webhooks_pb2.GetSubscriptionRequest(id=str(webhook_id))
        )
    )


@router.patch(
    "/webhooks/{webhookId}", response_model=WebhookOut, summary="Update a webhook", responses=_ONE
)
async def update_webhook(
    webhook_id: WebhookId,
    body: UpdateWebhook,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_webhooks)],
) -> WebhookOut:
    fields = body.model_dump(exclude_none=True)
    if not fields:
        raise ApiError(422, "validation_failed", "give at least one field to change")
    return WebhookOut.of(
        await webhook_stub(ctx).UpdateSubscription(
            webhooks_pb2.UpdateSubscriptionRequest(
                id=str(webhook_id),
                update_mask=list(fields),
                url=body.url or "",
                event_types=body.event_types or [],
                description=body.description or "",
                enabled=bool(body.enabled),
            )
        )
    )


@router.delete(
    "/webhooks/{webhookId}",
    status_code=204,
    response_class=Response,
    summary="Delete a webhook, its deliveries and its secret",
    responses=_ONE,
)
async def delete_webhook(
    webhook_id: WebhookId, ctx: Ctx, caller: Annotated[Principal, Depends(write_webhooks)]
) -> Response:
    await webhook_stub(ctx).DeleteSubscription(
        webhooks_pb2.DeleteSubscriptionRequest(id=str(webhook_id))
    )
    return Response(status_code=204)


@router.post(
    "/webhooks/{webhookId}/rotate-secret",
    response_model=WebhookWithSecret,
    summary="Rotate a webhook's signing secret",
    description="The new secret signs from now on; the previous one signs beside it until "
    "`previousSecretExpiresAt`, so receivers can switch without losing a message.",
    responses=_ONE,
)
async def rotate_secret(
    webhook_id: WebhookId,
    body: RotateSecret,
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_webhooks)],
) -> WebhookWithSecret:
    rotated = await webhook_stub(ctx).RotateSubscriptionSecret(
        webhooks_pb2.RotateSubscriptionSecretRequest(
            id=str(webhook_id),
            previous_secret_ttl_seconds=body.previous_secret_ttl_seconds,
            secret=body.secret,
        )
    )
    return WebhookWithSecret(webhook=WebhookOut.of(rotated.subscription), secret=rotated.secret)


@router.get(
    "/webhooks/{webhookId}/deliveries",
    response_model=DeliveryList,
    summary="A webhook's delivery log",
    description="Newest first, each with its attempts; `state=dead` lists the dead letters.",
    responses=_ONE,
)
async def list_deliveries(
    webhook_id: WebhookId,
    ctx: Ctx,
    page: Annotated[PageRequest, Depends(page_request)],
    caller: Annotated[Principal, Depends(read_webhooks)],
    state: Annotated[State | None, Query()] = None,
) -> DeliveryList:
    request = webhooks_pb2.ListDeliveriesRequest(
        subscription_id=str(webhook_id),
        state=_STATE[state] if state else webhooks_pb2.DELIVERY_STATE_UNSPECIFIED,
    )
    request.page.page_size = page.page_size
    request.page.page_token = page.page_token
    reply = await webhook_stub(ctx).ListDeliveries(request)
    return DeliveryList(
        deliveries=[DeliveryOut.of(d) for d in reply.deliveries],
        next_page_token=reply.page.next_page_token,
    )


@router.post(
    "/webhooks/{webhookId}/deliveries/{deliveryId}/replay",
    response_model=DeliveryOut,
    summary="Send a delivery again",
    description="From the first step of the retry schedule, with the same webhook-id.",
    responses=_ONE,
)
async def replay_delivery(
    webhook_id: WebhookId,
    delivery_id: Annotated[str, Path(alias="deliveryId", pattern=r"^msg_[0-9a-f]{32}$")],
    ctx: Ctx,
    caller: Annotated[Principal, Depends(write_webhooks)],
) -> DeliveryOut:
    return DeliveryOut.of(
        await webhook_stub(ctx).ReplayDelivery(
            webhooks_pb2.ReplayDeliveryRequest(
                subscription_id=str(webhook_id), delivery_id=delivery_id
            )
        )
    )


@router.post(
    "/hooks/{tenantId}/{connectorId}",
    response_model=Received,
    status_code=202,
    summary="Inbound webhook for a connector",
    description="No EDRS credentials: the request is authenticated by its signature with the "
    "connector's `inbound_secret` (Standard Webhooks, GitHub or Stripe style). 401 for a bad "
    "signature or a timestamp more than 5 minutes off; 409 for an id received before.",
    responses={
        **problem_responses(401, 404, 409, 422, 429),
        **upstream_responses(),
    },
)
async def receive_webhook(
    request: Request,
    tenant_id: Annotated[str, Path(alias="tenantId", min_length=1, max_length=200)],
    connector_id: Annotated[UUID, Path(alias="connectorId")],
    ctx: Ctx,
) -> Received:
    body = await request.body()
    headers = {k.lower(): v for k, v in list(request.headers.items())[:MAX_INBOUND_HEADERS]}
    identity = await ctx.fleet_tokens.webhook_sender(tenant_id, str(connector_id))
    with acting_as(identity):
        reply = await webhook_stub(ctx).ReceiveWebhook(
            webhooks_pb2.ReceiveWebhookRequest(
                connector_id=str(connector_id), headers=headers, body=body
            )
        )
    return Received(webhook_id=reply.webhook_id, event_id=reply.event_id)
