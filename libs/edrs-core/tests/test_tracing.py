"""Spans are recorded only once something receives them; trace context exists and travels either way."""

from __future__ import annotations

from edrs_core.tracing import configure_tracing, extract_context
from opentelemetry import propagate
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_without_an_exporter_spans_keep_and_pass_on_trace_context_but_record_nothing() -> None:
    # The provider itself, not the process-wide one (which a process installs once).
    tracer = configure_tracing("tracetest", None).get_tracer("test")
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
        context = root.get_span_context()
        assert context.is_valid  # a trace id and a span id for the log lines
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    assert carrier["traceparent"].split("-")[1:3] == [
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
    ]
    # A caller's trace is continued, under a span id of this hop's own.
    parent = extract_context({"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"})
    with tracer.start_as_current_span("served", context=parent) as served:
        assert format(served.get_span_context().trace_id, "032x") == CALLER_TRACE
        assert served.get_span_context().span_id != 0x00F067AA0BA902B7


def test_spans_are_recorded_once_an_exporter_is_added() -> None:
    provider = configure_tracing("tracetest", None)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    parent = extract_context({"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"})
    with tracer.start_as_current_span("served", context=parent) as served:
        assert served.is_recording()
        with tracer.start_as_current_span("inner"):
            pass
    finished = {span.name: span for span in exporter.get_finished_spans()}
    assert set(finished) == {"served", "inner"}
    assert format(finished["inner"].context.trace_id, "032x") == CALLER_TRACE
    assert finished["inner"].parent is not None
    assert finished["inner"].parent.span_id == finished["served"].context.span_id
    assert finished["served"].resource.attributes["service.name"] == "edrs-tracetest"
    # A caller that chose not to sample is still followed (the SDK's default, parent-based).
    unsampled = extract_context({"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-00"})
    with tracer.start_as_current_span("skipped", context=unsampled) as skipped:
        assert not skipped.is_recording()
