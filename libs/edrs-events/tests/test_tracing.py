"""Trace context flows from publisher to consumer over real NATS: the consumer span is a child."""

from __future__ import annotations

import asyncio

from edrs_events import BaseEvent, ConsumerOptions
from edrs_events.nats_bus import NatsBus
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def span_exporter() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_consumer_span_is_a_child_of_the_publisher_span(
    nats_url: str, namespace: str
) -> None:
    exporter = span_exporter()
    bus = await NatsBus.connect(nats_url, namespace=namespace)
    received: asyncio.Queue[BaseEvent] = asyncio.Queue()

    async def handle(event: BaseEvent) -> None:
        await received.put(event)

    try:
        await bus.subscribe("traced", handle, options=ConsumerOptions(ack_wait=5.0))
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("task.create_task") as request_span:
            await bus.publish(
                BaseEvent(
                    event_type="task.task_created",
                    source_container="task",
                    payload={"task_id": "t1", "title": "traced"},
                )
            )
        event = await asyncio.wait_for(received.get(), 10)
    finally:
        await bus.js.delete_stream(bus.subjects.events_stream)
        await bus.js.delete_stream(bus.subjects.dlq_stream)
        await bus.close()

    spans = exporter.get_finished_spans()
    [producer] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [consumer] = [s for s in spans if s.name == "traced.handle"]
    assert event.traceparent is not None
    assert f"{producer.context.span_id:016x}" in event.traceparent
    assert producer.parent is not None
    assert producer.parent.span_id == request_span.get_span_context().span_id
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
