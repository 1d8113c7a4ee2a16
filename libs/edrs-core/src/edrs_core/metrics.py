"""Prometheus metrics shared by every service: per-RPC and per-route counts, errors and latency."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
