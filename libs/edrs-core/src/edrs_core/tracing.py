"""OpenTelemetry set-up and W3C trace-context propagation over gRPC metadata and HTTP headers."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install a tracer provider for this process; spans are exported over OTLP when an endpoint is set."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"edrs-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def extract_context(carrier: Mapping[str, str]) -> otel_context.Context:
    """The remote parent described by `traceparent`/`tracestate` in `carrier` (lower-case keys)."""
    return propagate.extract(dict(carrier))


def inject_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata / HTTP headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
