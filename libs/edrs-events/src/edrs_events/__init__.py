"""EDRS events: envelope, schema catalog, bus adapters, outbox and inbox (integrators' SDK)."""

from edrs_events.bus import (
    ConsumerOptions,
    DeadLetter,
    DeliverFrom,
    EventBus,
    Handler,
    SequencedEvent,
    Subscription,
    WireMessage,
    connect_bus,
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
from edrs_events.memory_bus import InMemoryBus
from edrs_events.subjects import Subjects

__all__ = [
    "BaseEvent",
    "ConsumerOptions",
    "DeadLetter",
    "DeliverFrom",
    "EventBus",
    "EventType",
    "EventValidationError",
    "Handler",
    "InMemoryBus",
    "Priority",
    "SchemaCatalog",
    "SequencedEvent",
    "Subjects",
    "Subscription",
    "UnknownEventTypeError",
    "WireMessage",
    "connect_bus",
    "default_catalog",
    "envelope_json_schema",
    "from_cloudevent",
    "to_cloudevent",
]
