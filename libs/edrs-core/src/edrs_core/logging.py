"""JSON-lines logging with the trace, tenant and request of the current call on every line."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from edrs_core.context import client_id_var, request_id_var


class _ContextFilter(logging.Filter):
    """Adds trace_id, span_id, client_id and request_id from the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_ctx = trace.get_current_span().get_span_context()
        if span_ctx.is_valid:
            record.trace_id = format(span_ctx.trace_id, "032x")
            record.span_id = format(span_ctx.span_id, "016x")
        else:
            record.trace_id = None
            record.span_id = None
        record.client_id = client_id_var.get()
        record.request_id = request_id_var.get()
        return True


class _Formatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # ISO 8601 in UTC with millisecond precision and a Z suffix.
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(service: str, level: str = "INFO", stream: Any = None) -> None:
    """Route every logger of the process to one JSON-lines handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        _Formatter(
            "{asctime}{levelname}{trace_id}{span_id}{client_id}{request_id}{message}{name}",
            style="{",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn installs its own handlers; make it use ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
