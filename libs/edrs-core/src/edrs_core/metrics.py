"""Prometheus metrics shared by every service: per-RPC and per-route counts, errors and latency."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Buckets from 1 ms to 30 s: RPCs here range from cache hits to model generation.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

GRPC_REQUESTS = Counter(
    "edrs_grpc_server_requests",
    "gRPC calls handled, by method and status code",
    ["service", "method", "code"],
)
GRPC_ERRORS = Counter(
    "edrs_grpc_server_errors",
    "gRPC calls that ended with a status other than OK",
    ["service", "method", "code"],
)
GRPC_LATENCY = Histogram(
    "edrs_grpc_server_duration_seconds",
    "gRPC call duration",
    ["service", "method"],
    buckets=_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "edrs_http_server_requests",
    "HTTP requests handled, by route template and status",
    ["service", "method", "route", "status"],
)
HTTP_ERRORS = Counter(
    "edrs_http_server_errors",
    "HTTP requests answered with a 5xx status",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "edrs_http_server_duration_seconds",
    "HTTP request duration",
    ["service", "method", "route"],
    buckets=_BUCKETS,
)

# Events: what the service's consumers did, and what its bus readers could not parse.
CONSUMER_HANDLED = Counter(
    "edrs_event_consumer_handled",
    "Events a consumer's handler completed (acknowledged), by event type",
    ["service", "consumer", "event_type"],
)
CONSUMER_FAILED = Counter(
    "edrs_event_consumer_failed",
    "Handler calls that raised (the event is retried, or dead-lettered at max_deliver)",
    ["service", "consumer", "event_type"],
)
CONSUMER_DEAD_LETTERED = Counter(
    "edrs_event_consumer_dead_lettered",
    "Events a consumer gave up on after max_deliver failed deliveries",
    ["service", "consumer", "event_type"],
)
CONSUMER_DUPLICATES = Counter(
    "edrs_event_consumer_duplicates",
    "Redelivered events the inbox recognised as handled already (their effects skipped)",
    ["service", "consumer"],
)
CONSUMER_DURATION = Histogram(
    "edrs_event_consumer_duration_seconds",
    "Handler duration, including the inbox transaction",
    ["service", "consumer"],
    buckets=_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "edrs_event_consumer_lag",
    "Events stored for a consumer and not yet acknowledged (refreshed every few seconds)",
    ["service", "consumer"],
)
EVENT_MALFORMED = Counter(
    "edrs_event_malformed",
    "Messages on the bus that were not valid events (unparseable, or headers contradicting the "
    "envelope), skipped by a tail or dead-lettered by a consumer",
    ["service", "reader"],
)
