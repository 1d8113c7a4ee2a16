"""The HTTP server every service runs: access lines in the caller's trace, no Nagle delays."""

from __future__ import annotations

import io
import json

from edrs_core.logging import configure_logging
from edrs_core.tracing import configure_tracing


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


async def test_http_connections_do_not_wait_on_nagles_algorithm() -> None:
    """Responses go out in two writes (headers, body); with Nagle on, the second waited for the
    client's delayed ACK: 40 ms on every request, seen on the gateway before this was set."""
    import socket

    from edrs_core.http import HttpServer
    from starlette.applications import Starlette

    server = HttpServer(Starlette(), "127.0.0.1", 0, "test")
    try:
        assert server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.socket.close()
