"""Log lines are JSON with the fields operators search by."""

from __future__ import annotations

import io
import json
import logging

from edrs_core.context import request_context
from edrs_core.logging import configure_logging
from edrs_core.tracing import configure_tracing
from opentelemetry import trace


def test_log_line_carries_service_trace_tenant_and_request() -> None:
    stream = io.StringIO()
    configure_tracing("logtest", None)
    configure_logging("logtest", "INFO", stream=stream)
    tracer = trace.get_tracer("test")
    with request_context("tenant-1", "req-1"), tracer.start_as_current_span("op") as span:
        logging.getLogger("edrs.test").info("hello %s", "world", extra={"rows": 3})
        ctx = span.get_span_context()
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["service"] == "logtest"
    assert line["client_id"] == "tenant-1"
    assert line["request_id"] == "req-1"
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert line["rows"] == 3
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]


def test_an_http_request_logs_one_access_line_in_the_callers_trace() -> None:
    from edrs_core.http import HealthState, build_http_app
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    stream = io.StringIO()
    configure_tracing("logtest", None)
    configure_logging("logtest", "INFO", stream=stream)
    app = build_http_app("logtest", HealthState(checks={}, cache_seconds=0))
    app.router.routes.append(Route("/things/{id}", lambda request: PlainTextResponse("ok")))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(app) as client:
        client.get("/health/liveness")
        client.get("/things/7", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line.get("http_route")]
    # The probe is not logged at INFO; the request is, with its route template and status.
    assert [(a["http_method"], a["http_route"], a["status"]) for a in access] == [
        ("GET", "/things/{id}", 200)
    ]
    assert access[0]["trace_id"] == trace_id
