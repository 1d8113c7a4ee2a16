"""The outbound HTTP client every service uses to call out: SSRF-safe, bounded in redirects,
size and time. See docs/decisions/0009-outbound-http.md."""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urljoin

import httpx

from edrs_core.outbound._errors import (
    OutboundBlocked,
    OutboundError,
    OutboundProtocolError,
    OutboundResponseTooLarge,
    OutboundTimeout,
    OutboundTooManyRedirects,
)
from edrs_core.outbound._policy import HostRules, OutboundPolicy
from edrs_core.outbound._transport import HOST_RULES_EXTENSION, OutboundTransport, Resolver
from edrs_core.outbound._urls import OutboundUrl

log = logging.getLogger("edrs.outbound")

DEFAULT_USER_AGENT = "EDRS/0.1 (+outbound)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers only the client sets: the Host always names the URL's host, the framing is httpx's.
_CLIENT_OWNED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
)
# What survives a redirect to another origin; credentials of any name (Authorization, X-Api-Key,
# a webhook signature) are dropped there.
_CROSS_ORIGIN_SAFE = frozenset({"accept", "accept-language", "content-type", "user-agent"})


@dataclass(frozen=True)
class OutboundLimits:
    max_redirects: int = 5
    max_response_bytes: int = 10 * 1024 * 1024
    """Largest body read, counted both on the wire and after decompression."""
    timeout_seconds: float = 30.0
    """Whole request: resolution, connections, every redirect and the body."""
    connect_timeout_seconds: float = 10.0
    """Resolution plus TCP and TLS set-up, per connection."""


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str
    """The URL that answered, after redirects."""
    redirects: tuple[str, ...] = field(default=())
    """The URLs that redirected, in order (the first is the one asked for)."""
    truncated: bool = False
    """The body was cut at the size limit (only with `truncate=True`)."""

    @property
    def charset(self) -> str:
        content_type = str(self.headers.get("content-type", ""))
        for part in content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    def text(self) -> str:
        try:
            return self.body.decode(self.charset, errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class OutboundClient:
    """Sends requests through an `OutboundTransport`, following redirects itself so that each one
    is checked again, and reading bodies up to a limit.

    One client per service (it pools connections), built in the service's app.py from its
    settings and passed in; close it on shutdown.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        limits: OutboundLimits | None = None,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self.policy = policy
        self.limits = limits or OutboundLimits()
        self.user_agent = user_agent
        self.transport = OutboundTransport(policy, resolver=resolver, ssl_context=ssl_context)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def get(self, url: str, **kwargs: Any) -> OutboundResponse:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> OutboundResponse:
        return await self.request("POST", url, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
        host_rules: HostRules | None = None,
        follow_redirects: bool = True,
        truncate: bool = False,
        limits: OutboundLimits | None = None,
    ) -> OutboundResponse:
        """Send one request and read its answer, or raise the OutboundError saying why not.

        `host_rules` are the calling tenant's host lists, checked on every hop. With `truncate`, a
        body over the size limit is cut there and returned with `truncated=True`; without it, it
        raises OutboundResponseTooLarge. A 3xx answer is returned as it is when
        `follow_redirects` is false.
        """
        limits = limits or self.limits
        sent_headers = {k: v for k, v in (headers or {}).items() if k.lower() not in _CLIENT_OWNED}
        if json is not None:
            if content is not None:
                raise ValueError("give content or json, not both")
            content = jsonlib.dumps(json, separators=(",", ":")).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        try:
            async with asyncio.timeout(limits.timeout_seconds):
                return await self._follow(
                    method.upper(),
                    self.policy.check_url(url, host_rules),
                    sent_headers,
                    content,
                    host_rules,
                    follow_redirects,
                    truncate,
                    limits,
                )
        except TimeoutError:
            raise OutboundTimeout("total", limits.timeout_seconds) from None
        except OutboundBlocked as exc:
            # The reason names the host and the rule, never the path or query (they may carry
            # tokens), so it is safe in a log line; operators see refusals without a trace.
            log.info("outbound request refused (%s): %s", exc.rule, exc)
            raise

    async def _follow(
        self,
        method: str,
        target: OutboundUrl,
        headers: dict[str, str],
        content: bytes | None,
        host_rules: HostRules | None,
        follow_redirects: bool,
        truncate: bool,
        limits: OutboundLimits,
    ) -> OutboundResponse:
        visited: list[str] = []
        while True:
            hop = len(visited)
            request = httpx.Request(
                method,
                target.url,
                headers={
                    "User-Agent": self.user_agent,
                    "Accept-Encoding": "gzip, deflate",
                    **headers,
                },
                content=content,
                extensions={
                    HOST_RULES_EXTENSION: host_rules,
                    # Reads, writes and waits for a pooled connection are bound by the total
                    # limit around the whole request (a slow drip passes any per-read limit).
                    "timeout": {
                        "connect": limits.connect_timeout_seconds,
                        "read": None,
                        "write": None,
                        "pool": None,
                    },
                },
            )
            try:
                response = await self.transport.handle_async_request(request)
            except OutboundError as exc:
                raise exc.at_redirect(hop) if hop else exc from None
            try:
                location = response.headers.get("location")
                if not (
                    follow_redirects and response.status_code in REDIRECT_STATUSES and location
                ):
                    body, truncated = b"", False
                    # A HEAD answer's Content-Length (and a 204's or 304's) describes no body.
                    if method != "HEAD" and response.status_code not in (204, 304):
                        body, truncated = await _read_body(
                            response, limits.max_response_bytes, truncate
                        )
                    else:
                        # Framed as bodiless, it yields nothing; reading it to its end puts the
                        # connection back in the pool (closed unread, it was dropped, and every
                        # 204 of a webhook receiver cost a new connection).
                        async for _ in response.aiter_raw():
                            pass
                    return OutboundResponse(
                        status=response.status_code,
                        headers=response.headers,
                        body=body,
                        url=target.url,
                        redirects=tuple(visited),
                        truncated=truncated,
                    )
            finally:
                await response.aclose()
            if hop >= limits.max_redirects:
                raise OutboundTooManyRedirects(limits.max_redirects)
            try:
                following = self.policy.check_url(urljoin(target.url, location), host_rules)
            except OutboundError as exc:
                raise exc.at_redirect(hop + 1) from None
            if target.scheme == "https" and following.scheme == "http":
                raise OutboundBlocked(
                    "downgrades https to http", rule="downgrade", redirect=hop + 1
                )
            # Browsers' rules: 303 always, and 301/302 after a POST, become a GET without body.
            status = response.status_code
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, content = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if following.origin != target.origin:
                headers = {k: v for k, v in headers.items() if k.lower() in _CROSS_ORIGIN_SAFE}
            visited.append(target.url)
            target = following


async def _read_body(response: httpx.Response, limit: int, truncate: bool) -> tuple[bytes, bool]:
    """The body, read chunk by chunk and stopped as soon as it passes `limit` bytes."""
    declared = _content_length(response)
    if declared is not None and declared > limit and not truncate:
        raise OutboundResponseTooLarge(limit, 0, declared=declared)
    decoder = _Decoder(response.headers.get("content-encoding", ""))
    body = bytearray()
    wire = 0
    async for chunk in response.aiter_raw():
        wire += len(chunk)
        body += decoder.feed(chunk, limit - len(body) + 1)
        if len(body) > limit or wire > limit:
            if truncate:
                return bytes(body[:limit]), True
            raise OutboundResponseTooLarge(limit, len(body))
    body += decoder.flush(limit - len(body) + 1)
    if len(body) > limit:
        if truncate:
            return bytes(body[:limit]), True
        raise OutboundResponseTooLarge(limit, len(body))
    return bytes(body), False


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise OutboundProtocolError(f"answered with an invalid Content-Length {value!r}") from None


class _Decoder:
    """gzip/deflate decoding that never produces more than it is asked for, so a small
    compressed body cannot expand past the size limit in memory (a decompression bomb)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.strip().lower()
        if self.encoding in ("", "identity"):
            self._zlib = None
        elif self.encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self._zlib = zlib.decompressobj()
        else:
            raise OutboundProtocolError(
                f"answered with content encoding {encoding!r}, which was not asked for"
            )
        self._tail = b""
        self._started = False

    def feed(self, data: bytes, budget: int) -> bytes:
        if self._zlib is None:
            return data[:budget]
        data = self._tail + data
        try:
            out = self._zlib.decompress(data, budget)
        except zlib.error as exc:
            if self.encoding == "deflate" and not self._started:
                # "deflate" is zlib-wrapped by the standard and raw by some servers.
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                self._started = True
                return self.feed(data, budget)
            raise OutboundProtocolError(
                f"sent a body that is not valid {self.encoding}: {exc}"
            ) from None
        self._started = True
        self._tail = self._zlib.unconsumed_tail
        return out

    def flush(self, budget: int) -> bytes:
        if self._zlib is None:
            return b""
        out = self.feed(b"", budget) if self._tail else b""
        return out + self._zlib.flush()[: max(budget - len(out), 0)]
