"""The HTTP side of a service: health endpoints, per-route metrics, and uvicorn servers that leave
signal handling to the service runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from opentelemetry import trace
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edrs_core import metrics
from edrs_core.context import REQUEST_ID_KEY, request_context
from edrs_core.tls import TlsFiles
from edrs_core.tracing import extract_context

log = logging.getLogger("edrs.http")

Check = Callable[[], Awaitable[None]]


@dataclass
class HealthState:
    """What the health endpoints report. Readiness results are cached so probes stay cheap."""

    checks: dict[str, Check]
    cache_seconds: float = 2.0
    check_timeout: float = 1.0
    started: bool = False
    shutting_down: bool = False
    _cached: tuple[float, bool, dict[str, str]] | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        if self.shutting_down:
            return False, {"service": "shutting down"}
        if not self.started:
            return False, {"service": "starting"}
        async with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.cache_seconds:
                return self._cached[1], self._cached[2]
            names = list(self.checks)
            results = await asyncio.gather(
                *(self._run(self.checks[name]) for name in names), return_exceptions=False
            )
            report = dict(zip(names, results, strict=True))
            ready = all(value == "ok" for value in report.values())
            self._cached = (time.monotonic(), ready, report)
            return ready, report

    async def _run(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.check_timeout)
        except TimeoutError:
            return f"timed out after {self.check_timeout}s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok"


def health_routes(state: HealthState) -> list[BaseRoute]:
    async def liveness(_: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def readiness(_: Request) -> JSONResponse:
        ready, report = await state.readiness()
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": report},
            status_code=200 if ready else 503,
        )

    async def startup(_: Request) -> JSONResponse:
        if state.started:
            return JSONResponse({"status": "started"})
        return JSONResponse({"status": "starting"}, status_code=503)

    return [
        Route("/health/liveness", liveness),
        Route("/health/readiness", readiness),
        Route("/health/startup", startup),
    ]


# A proxy until the process installs its tracer provider, then that provider's tracer: looking
# it up per request cost more than the span.
_TRACER = trace.get_tracer("edrs_core.http")


class ObservabilityMiddleware:
    """Per-route metrics, a server span continuing the caller's W3C trace, and request context."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        tracer = _TRACER
        with (
            # The tenant is never taken from an HTTP header: over HTTP it comes only from a verified
            # credential (the gateway's authentication), so a client cannot choose it.
            request_context(None, headers.get(REQUEST_ID_KEY)),
            tracer.start_as_current_span(
                f"{self.service}.http", context=extract_context(headers), kind=trace.SpanKind.SERVER
            ) as span,
        ):
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                span.update_name(f"{self.service}.{scope['method']} {template}")
                elapsed = time.perf_counter() - start
                labels = (self.service, scope["method"], template)
                metrics.HTTP_REQUESTS.labels(*labels, str(status)).inc()
                metrics.HTTP_LATENCY.labels(*labels).observe(elapsed)
                if status >= 500:
                    metrics.HTTP_ERRORS.labels(*labels, str(status)).inc()
                # One JSON access line per request, inside the span so it carries the trace id;
                # probes stay at DEBUG, or they would be most of every log.
                probe = template.startswith(("/health", "/metrics"))
                log.log(
                    logging.DEBUG if probe else logging.INFO,
                    "http %s %s %s",
                    scope["method"],
                    template,
                    status,
                    extra={
                        "http_method": scope["method"],
                        "http_route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1e3, 3),
                    },
                )


async def _http_problem(request: Request, exc: Exception) -> JSONResponse:
    """Errors no route answered (no path matched, say) as RFC 9457 problem+json, like the API's."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {
            "type": "about:blank",
            "title": exc.detail,
            "status": exc.status_code,
            "detail": exc.detail,
            "code": code,
            "instance": request.url.path,
        },
        status_code=exc.status_code,
        media_type="application/problem+json",
        headers=exc.headers,
    )


def build_http_app(service: str, state: HealthState) -> Starlette:
    """Health routes now; a service adds its own with `app.router.routes.extend(...)` once built."""
    return Starlette(
        routes=health_routes(state),
        middleware=[Middleware(ObservabilityMiddleware, service=service)],
        exception_handlers={HTTPException: _http_problem},
    )


class _Server(uvicorn.Server):
    """uvicorn would install its own SIGTERM/SIGINT handlers; the service runtime owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        name: str,
        *,
        graceful_seconds: float = 10.0,
        tls: TlsFiles | None = None,
    ) -> None:
        # With mutual TLS configured the port speaks TLS only; a client certificate is verified
        # when presented but not required (probes and the gateway's public clients have none).
        ssl_options: dict[str, Any] = (
            {
                "ssl_certfile": str(tls.cert),
                "ssl_keyfile": str(tls.key),
                "ssl_ca_certs": str(tls.ca),
                "ssl_cert_reqs": ssl.CERT_OPTIONAL,
            }
            if tls is not None
            else {}
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            # Long-lived responses (SSE streams) are cut after this instead of holding shutdown.
            timeout_graceful_shutdown=math.ceil(graceful_seconds),
            **ssl_options,
        )
        self.name = name
        self.server = _Server(config)
        self.task: asyncio.Task[None] | None = None
        # Bind here so a taken port fails start-up at once with a clear error; uvicorn then
        # serves on the bound socket, and connections wait in its backlog until it does.
        self.socket = socket.create_server((host, port), reuse_port=False, backlog=2048)
        # asyncio turns Nagle off only for sockets created with proto=IPPROTO_TCP, and
        # create_server's (and so its accepted connections') proto is 0: uvicorn's header and
        # body writes then met the client's delayed ACK, 40 ms on every response. Accepted
        # connections inherit TCP_NODELAY from the listener on Linux.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.socket.getsockname()[1]

    async def start(self) -> None:
        self.task = asyncio.create_task(
            self.server.serve(sockets=[self.socket]), name=f"http-{self.name}"
        )

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def metrics_app() -> Any:
    return make_asgi_app()
