"""W3C trace context in the envelope metadata: inject at publish, extract for the consumer span."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from edrs_events.envelope import BaseEvent

_tracer = trace.get_tracer("edrs_events")


def with_trace_context(event: BaseEvent) -> BaseEvent:
    """`event` with the current span's `traceparent`/`tracestate` in its metadata.

    An event that already carries a `traceparent` keeps it: it was captured where the event was
    created (e.g. in the request that wrote it to the outbox), which is the parent that matters.
    """
    if "traceparent" in event.metadata:
        return event
    carrier = dict(event.metadata)
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        return event
    return event.model_copy(update={"metadata": carrier})


@contextmanager
def publish_span(event: BaseEvent) -> Iterator[BaseEvent]:
    """A PRODUCER span around one publish; yields the event stamped with its trace context."""
    if "traceparent" in event.metadata:
        yield event
        return
    with _tracer.start_as_current_span(
        "edrs_events.publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.destination.name": event.event_type,
            "messaging.message.id": str(event.event_id),
        },
    ):
        yield with_trace_context(event)


@contextmanager
def consume_span(consumer: str, event: BaseEvent) -> Iterator[Span]:
    """A CONSUMER span, child of the publisher's span carried in the event metadata."""
    parent = propagate.extract(event.metadata)
    with _tracer.start_as_current_span(
        f"{consumer}.handle",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.destination.name": event.event_type,
            "messaging.message.id": str(event.event_id),
            "messaging.consumer.group.name": consumer,
        },
    ) as span:
        yield span
