"""Transport-level protections: security headers, a request body limit, per-request timeouts, CORS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edrs_gateway.api.problems import problem_response
from edrs_gateway.config import GatewaySettings
from edrs_gateway.edge._asgi import header, is_exempt

log = logging.getLogger("edrs.gateway.security")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

# What FastAPI's get_swagger_ui_html and get_redoc_html load: scripts and CSS from jsDelivr,
# Google Fonts (ReDoc), the FastAPI favicon, data: images (Swagger UI's icons), the OpenAPI
# document from this origin, a blob: web worker (ReDoc's search) and inline styles (both UIs set
# style attributes and ReDoc injects <style>). Inline *scripts* are allowed only by hash, added
# per response from the page actually served.
DOCS_CSP = (
    "default-src 'none'; "
    "script-src https://cdn.jsdelivr.net{hashes}; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com data:; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.jsdelivr.net; "
    "connect-src 'self'; "
    "worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def docs_csp(html: bytes) -> str:
    """The docs CSP allowing exactly the inline scripts of `html`."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return DOCS_CSP.format(hashes=hashes)


class SecurityHeadersMiddleware:
    """Pure ASGI: HSTS, nosniff, frame-deny, no-referrer and a CSP on every response.

    API responses get a CSP that allows nothing; the HTML of `docs_paths` gets one that lets
    Swagger UI and ReDoc load. A header the app set itself is kept."""

    def __init__(
        self, app: ASGIApp, *, docs_paths: Sequence[str] = ("/api/docs", "/api/redoc")
    ) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.docs_paths:
            await self._docs(scope, receive, send)
            return

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _merge(message, API_CSP)}
            await send(message)

        await self.app(scope, receive, add_headers)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The page is a few KiB: hold it to hash its inline scripts into the CSP.
        start: Message | None = None
        body = bytearray()

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                await send({**start, "headers": _merge(start, docs_csp(bytes(body)))})
                await send({"type": "http.response.body", "body": bytes(body)})

        await self.app(scope, receive, hold)


def _merge(start: Message, csp: str) -> list[tuple[bytes, bytes]]:
    headers = list(start.get("headers", []))
    present = {bytes(k).lower() for k, _ in headers}
    for name, value in (*SECURITY_HEADERS, (b"content-security-policy", csp.encode())):
        if name not in present:
            headers.append((name, value))
    return headers


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Pure ASGI: refuse request bodies over `max_bytes` with 413 `payload_too_large`.

    A Content-Length over the limit is refused before reading; a chunked body is counted as it
    streams in and refused when it crosses the limit. `path_limits` gives paths (exact) a limit
    of their own, e.g. audio uploads; `pattern_limits` gives one to the paths a regular
    expression matches in full, e.g. uploads into any knowledge collection. The 413 names the
    limit in its detail and as its `limit` member."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        path_limits: Mapping[str, int] | None = None,
        pattern_limits: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})
        self.pattern_limits = tuple(pattern_limits)

    def _limit(self, scope: Scope) -> int:
        path: str = scope["path"]
        if path in self.path_limits:
            return self.path_limits[path]
        for pattern, limit in self.pattern_limits:
            if pattern.fullmatch(path):
                return limit
        return self.max_bytes

    def _refusal(self, scope: Scope) -> ASGIApp:
        limit = self._limit(scope)
        return problem_response(
            413,
            "payload_too_large",
            f"the request body is larger than {limit} bytes",
            title="Payload too large",
            instance=scope["path"],
            headers={"Connection": "close"},
            extensions={"limit": limit},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refusal(scope)(scope, receive, send)
            return

        received = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await self._refusal(scope)(scope, receive, send)
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # our 413 went out; whatever the app answers to the exception is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            # The app may wrap our exception in its own; once the 413 is out it is noise.
            if not refused:
                raise


class TimeoutMiddleware:
    """Pure ASGI: answer 504 `timeout` when a request runs longer than `timeout_seconds`.

    Paths in `exempt_paths` (prefixes), paths matching one of `exempt_patterns` and responses that start as `text/event-stream` are not
    timed: a stream is meant to stay open."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout_seconds: float,
        exempt_paths: Sequence[str] = ("/api/v1/events/stream",),
        exempt_patterns: Sequence[re.Pattern[str]] = (),
    ) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds
        self.exempt_paths = tuple(exempt_paths)
        self.exempt_patterns = tuple(exempt_patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or is_exempt(scope["path"], self.exempt_paths)
            or any(p.fullmatch(scope["path"]) for p in self.exempt_patterns)
        ):
            await self.app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self.timeout_seconds)

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/event-stream"):
                    deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, watch_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own timeout, not ours
            log.warning("%s %s timed out", scope["method"], scope["path"])
            if started:
                return  # too late for a 504: the connection ends with the partial response
            await problem_response(
                504,
                "timeout",
                f"the request took longer than {self.timeout_seconds:g}s",
                title="Gateway timeout",
                instance=scope["path"],
            )(scope, receive, send)


def cors_middleware(settings: GatewaySettings) -> Middleware | None:
    """CORS for `settings.cors_origins`, or None when the list is empty (no cross-origin access)."""
    if not settings.cors_origins:
        return None
    return Middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "Last-Event-ID",
            "X-Request-ID",
        ],
        expose_headers=[
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
            "Idempotent-Replayed",
            "X-Request-ID",
            "Location",
        ],
        # Bearer tokens travel in Authorization, never in cookies.
        allow_credentials=False,
        max_age=600,
    )
