"""`/api/v1/events`: integrators publish events into the fleet and follow their tenant's events (SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from edrs_events import (
    BaseEvent,
    BusError,
    EventBus,
    EventType,
    EventValidationError,
    Priority,
    default_catalog,
)
from edrs_events.envelope import EVENT_TYPE_PATTERN, to_cloudevent
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from edrs_gateway.api.common import AUTHENTICATED, problem_responses
from edrs_gateway.api.models import SINGLE_LINE, ApiModel
from edrs_gateway.api.problems import PROBLEM_JSON, ApiError
from edrs_gateway.auth.dependencies import require
from edrs_gateway.auth.permissions import Permission
from edrs_gateway.auth.principal import Principal, Role

SOURCE = "gateway"
router = APIRouter(prefix="/events", tags=["events"])

# Module-level so tests (and only tests) can swap them with `app.dependency_overrides`.
publish_events = require(Permission.EVENTS_PUBLISH)
read_events = require(Permission.EVENTS_READ)

# Which event types each role may publish, by the service that owns the type in the catalog
# (None: every type). An event states a fact in its owner's name, so a client may only state
# facts about the outside world: integrators publish what the integration service would (a
# webhook arrived, a connector exists). Facts of the other services (a task completed, a
# persona created) come only from those services, or from an admin repairing the record.
# Members and viewers hold no `events:publish` permission, so they never get this far.
PUBLISHABLE_OWNERS: dict[Role, frozenset[str] | None] = {
    "admin": None,
    "integrator": frozenset({"integration"}),
    "member": frozenset(),
    "viewer": frozenset(),
}

# SSE: a comment line this often keeps proxies from closing an idle stream.
HEARTBEAT_SECONDS = 15.0
# SSE `retry:`: how long a client waits before reconnecting with Last-Event-ID.
RECONNECT_MILLISECONDS = 2000
# A client that stops reading for this long is dropped rather than buffered for.
SEND_TIMEOUT_SECONDS = 30.0
# `<domain>.<action>` where either part may be `*`, or `*` / `>` for all (edrs_events.subjects).
TYPE_PATTERN = r"^(?:>|\*|(?:\*|[a-z][a-z0-9_]*)\.(?:\*|[a-z][a-z0-9_]*))$"
# The SDK's own bus errors, whichever broker EDRS_GATEWAY_BUS_URL names.
_BUS_FAILURES = (BusError, TimeoutError)


def may_publish(role: Role, event_type: EventType) -> bool:
    owners = PUBLISHABLE_OWNERS[role]
    return owners is None or event_type.owner in owners


async def get_event_bus(request: Request) -> EventBus:
    """FastAPI dependency: the runtime's bus (`Runtime.bus`), set as `app.state.event_bus`."""
    bus: EventBus | None = getattr(request.app.state, "event_bus", None)
    if bus is None:
        raise RuntimeError("no event bus: create_api(ctx, runtime.bus) sets app.state.event_bus")
    return bus


Bus = Annotated[EventBus, Depends(get_event_bus)]


class PublishEvent(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "integration.webhook_received",
                    "payload": {"webhook_id": "wh-1", "delivery_id": "d-42", "topic": "orders"},
                    "priority": "normal",
                    "correlationId": "order-1001",
                }
            ]
        }
    )

    type: str = Field(
        max_length=120,
        pattern=EVENT_TYPE_PATTERN,
        description="A catalog event type, `<domain>.<action>`; your role decides which",
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="Checked against the type's JSON Schema in the catalog"
    )
    priority: Priority = Field(default=Priority.NORMAL, description="Delivery lane")
    correlation_id: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=SINGLE_LINE, description="Groups events"
    )
    causation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=SINGLE_LINE,
        description="eventId of the event that caused this one",
    )


class EventAccepted(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"eventId": "0190d6a0-0000-7000-8000-0000000000e1"}]}
    )

    event_id: str = Field(description="UUIDv7 of the stored event")


class StreamFilter(ApiModel):
    type: str = Field(
        default="*",
        max_length=120,
        pattern=TYPE_PATTERN,
        description="Event types to follow: a type, `<domain>.*`, `*.<action>` or `*` for all",
    )
    priority: Priority | None = Field(default=None, description="Only this lane")


def _pointer(field: str) -> str:
    # EventValidationError names "event_type" or a dotted payload path ("payload.items.0.id").
    if field == "event_type":
        return "/type"
    return "/" + field.replace(".", "/")


def _invalid(exc: EventValidationError) -> ApiError:
    pointer = _pointer(exc.field)
    detail = f"{pointer}: {exc.reason}"
    return ApiError(
        422,
        "validation_failed",
        detail,
        errors=[{"in": "body", "pointer": pointer, "detail": exc.reason}],
    )


def _bus_unavailable() -> ApiError:
    return ApiError(
        503,
        "event_bus_unavailable",
        "the event bus is unavailable; try again shortly",
        headers={"Retry-After": "1"},
    )


def _publish_body_schema() -> dict[str, Any]:
    """The request body as one alternative per catalog type, each with its payload's own schema,
    so the documentation (and any generated client) shows exactly what each type carries."""
    line = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": SINGLE_LINE}
    variants = []
    for entry in sorted(default_catalog(), key=lambda t: t.name):
        payload = {k: v for k, v in entry.payload_schema.items() if k != "$schema"}
        variants.append(
            {
                "title": entry.name,
                "type": "object",
                "properties": {
                    "type": {"type": "string", "const": entry.name},
                    "payload": payload,
                    "priority": {
                        "type": "string",
                        "enum": [p.value for p in Priority],
                        "default": Priority.NORMAL.value,
                    },
                    # null is the same as leaving the field out, as in the model.
                    "correlationId": {
                        "anyOf": [line, {"type": "null"}],
                        "description": "Groups events",
                    },
                    "causationId": {
                        "anyOf": [line, {"type": "null"}],
                        "description": "eventId of the event that caused this one",
                    },
                },
                "required": ["type", "payload"],
                "additionalProperties": False,
                "description": entry.description or f"{entry.name}, owned by {entry.owner}",
            }
        )
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": variants}}},
        }
    }


_BUS_DOWN: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "The event bus is unavailable; retry after `Retry-After` seconds",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}


@router.post(
    "",
    status_code=202,
    openapi_extra=_publish_body_schema(),
    response_model=EventAccepted,
    summary="Publish an event",
    description=(
        "Validates the payload against the event type's schema, stamps your tenant and "
        "`source: gateway`, and stores the event on the bus. Integrators may publish the "
        "`integration.*` types the catalog lists; admins any catalog type. A "
        "`gateway.event_published` receipt follows each event."
    ),
    responses={**problem_responses(*AUTHENTICATED, 413), **_BUS_DOWN},
)
async def publish_event(
    body: PublishEvent, bus: Bus, caller: Annotated[Principal, Depends(publish_events)]
) -> EventAccepted:
    try:
        entry = bus.catalog.get(body.type)
    except EventValidationError as exc:
        raise _invalid(exc) from None
    if not may_publish(caller.role, entry):
        allowed = sorted(t.name for t in bus.catalog if may_publish(caller.role, t))
        raise ApiError(
            403,
            "event_type_forbidden",
            f"the role {caller.role!r} may not publish {body.type!r}; it may publish: "
            + (", ".join(allowed) or "no event types"),
        )
    event = BaseEvent(
        event_type=body.type,
        source_container=SOURCE,
        priority=body.priority,
        client_id=caller.tenant_id,  # the caller's tenant, never one from the body
        correlation_id=body.correlation_id,
        causation_id=body.causation_id,
        payload=body.payload,
    )
    try:
        bus.catalog.validate(event)
    except EventValidationError as exc:
        raise _invalid(exc) from None
    # The broker refuses bigger messages, so refuse them up front.
    if len(event.to_json()) > bus.max_message_bytes:
        raise ApiError(
            413,
            "event_too_large",
            f"the event exceeds the bus limit of {bus.max_message_bytes} bytes",
        )
    receipt = event.caused(
        "gateway.event_published",
        {
            "published_event_id": str(event.event_id),
            "published_event_type": event.event_type,
            **({"api_key_id": caller.subject_id} if caller.subject_kind == "api_key" else {}),
        },
        source_container=SOURCE,
    )
    try:
        await bus.publish_many([event, receipt])
    except _BUS_FAILURES:
        raise _bus_unavailable() from None
    return EventAccepted(event_id=str(event.event_id))


@router.get(
    "/stream",
    summary="Follow events (Server-Sent Events)",
    description=(
        "Your tenant's events as they are published, as `text/event-stream`. Each event has "
        "`event:` its type, `id:` its position on the bus and `data:` the event in CloudEvents "
        "1.0 JSON. Reconnect with `Last-Event-ID` to resume right after the last event you got. "
        f"A `: ping` comment every {HEARTBEAT_SECONDS:g} s keeps the connection open."
    ),
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "An endless event stream",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": (
                        "event: integration.webhook_received\nid: 42\n"
                        'data: {"specversion": "1.0", "id": "0190d6a0-...", '
                        '"type": "integration.webhook_received", ...}\n\n'
                    ),
                }
            },
        },
        **problem_responses(*AUTHENTICATED),
        **_BUS_DOWN,
    },
)
async def stream_events(
    bus: Bus,
    filters: Annotated[StreamFilter, Query()],
    caller: Annotated[Principal, Depends(read_events)],
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=r"^[0-9]{1,18}$",
            description="`id` of the last event received; the stream resumes after it",
        ),
    ] = None,
) -> EventSourceResponse:
    try:
        # Fixing the start now makes "from now on" exact: every event stored after this
        # request was accepted is sent, however long the subscription takes to start.
        start = (
            int(last_event_id) + 1 if last_event_id is not None else await bus.last_sequence() + 1
        )
    except _BUS_FAILURES:
        raise _bus_unavailable() from None
    return EventSourceResponse(
        _follow(bus, caller.tenant_id, filters, start),
        ping=HEARTBEAT_SECONDS,
        send_timeout=SEND_TIMEOUT_SECONDS,
    )


async def _follow(
    bus: EventBus, tenant_id: str, filters: StreamFilter, start: int
) -> AsyncIterator[ServerSentEvent]:
    # The first message tells the client the stream is live and how soon to reconnect.
    yield ServerSentEvent(comment=f"following from {start}", retry=RECONNECT_MILLISECONDS)
    tail = bus.tail_sequenced(
        filters.type, priority=filters.priority, client_id=tenant_id, start_sequence=start
    )
    async with aclosing(tail) as events:
        async for item in events:
            yield ServerSentEvent(
                data=json.dumps(to_cloudevent(item.event)),
                event=item.event.event_type,
                id=str(item.sequence),
            )
