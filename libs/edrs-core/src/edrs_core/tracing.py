"""OpenTelemetry set-up and W3C trace-context propagation over gRPC metadata and HTTP headers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class ExportGatedSampler(Sampler):
    """Records spans only once something will receive them (a span processor: the OTLP exporter,
    or a test's in-memory one); until then every span is a non-recording one.

    A non-recording span still has a trace id and its own span id, taken from the caller's
    `traceparent` or made here, so log lines still carry `trace_id`/`span_id` and every peer call
    and event still carries a `traceparent`. Without an exporter nothing was ever going to read a
    recorded span, and recording one (attributes, timestamps, the end-of-span hand-off) was about
    a tenth of the gateway's CPU per request. The `traceparent` then says "not sampled" (flags
    00), so a next hop that does export follows it and records nothing of this trace either: set
    the exporter on every service alike (the chart's `engines.otel.endpoint` does)."""

    def __init__(self, recording: Sampler = DEFAULT_ON) -> None:
        self.recording = recording
        self.exporting = False

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = self.recording if self.exporting else ALWAYS_OFF
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"ExportGated{{{self.recording.get_description()}}}"


class _GatedTracerProvider(TracerProvider):
    """Turns recording on with the first span processor added (at start-up, or by a test)."""

    def __init__(self, sampler: ExportGatedSampler, resource: Resource) -> None:
        super().__init__(sampler=sampler, resource=resource)
        self._gate = sampler

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self._gate.exporting = True


def configure_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install a tracer provider for this process; spans are recorded and exported over OTLP when
    an endpoint is set, and only trace context is kept and propagated when none is."""
    provider = _GatedTracerProvider(
        ExportGatedSampler(), Resource.create({"service.name": f"edrs-{service}"})
    )
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
