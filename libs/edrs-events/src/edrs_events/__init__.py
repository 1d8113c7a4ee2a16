"""EDRS events: envelope, schema catalog, bus adapters, outbox and inbox (integrators' SDK)."""

from edrs_events.bus import (
    BusObserver,
    ConsumerOptions,
    DeadLetter,
    DeliverFrom,
    EventBus,
    Handler,
    SequencedEvent,
    Subscription,
    WireMessage,
    check_bus_url,
    connect_bus,
    decode_event,
)
from edrs_events.catalog import (
    EventType,
    EventValidationError,
    SchemaCatalog,
    UnknownEventTypeError,
    default_catalog,
)
from edrs_events.envelope import (
    BaseEvent,
    Priority,
    envelope_json_schema,
    from_cloudevent,
    to_cloudevent,
)
from edrs_events.errors import BusError, BusUnavailable, MalformedEvent, PublishError
from edrs_events.memory_bus import InMemoryBus
from edrs_events.subjects import Subjects

__all__ = [
    "BaseEvent",
    "BusError",
    "BusObserver",
    "BusUnavailable",
    "ConsumerOptions",
    "DeadLetter",
    "DeliverFrom",
    "EventBus",
    "EventType",
    "EventValidationError",
    "Handler",
    "InMemoryBus",
    "MalformedEvent",
    "Priority",
    "PublishError",
    "SchemaCatalog",
    "SequencedEvent",
    "Subjects",
    "Subscription",
    "UnknownEventTypeError",
    "WireMessage",
    "check_bus_url",
    "connect_bus",
    "decode_event",
    "default_catalog",
    "envelope_json_schema",
    "from_cloudevent",
    "to_cloudevent",
]
