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
