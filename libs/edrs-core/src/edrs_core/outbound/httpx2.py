"""The outbound policy for libraries built on `httpx2` (the `mcp` SDK's HTTP client): an httpx2
transport whose every request goes through `OutboundTransport`, so the URL check, the pinned
address and the refusals are the very same code as for every other outbound call.

Imported on its own (`from edrs_core.outbound.httpx2 import Httpx2OutboundTransport`) by services
that have `httpx2`; edrs-core itself does not need it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import httpx2

from edrs_core.outbound._policy import OutboundPolicy
from edrs_core.outbound._transport import OutboundTransport


class _Body(httpx2.AsyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class Httpx2OutboundTransport(httpx2.AsyncBaseTransport):
    """Checks and sends httpx2 requests as `OutboundTransport` does httpx ones; refusals and
    failures are raised as `OutboundError`s. Request bodies are read whole before sending (the
    callers send JSON messages); response bodies stream."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._inner = OutboundTransport(policy)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        timeout = request.extensions.get("timeout")
        outgoing = httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.raw,
            content=body,
            extensions={"timeout": timeout} if timeout else {},
        )
        response = await self._inner.handle_async_request(outgoing)
        wrapped = httpx.Response(
            response.status_code, headers=response.headers, stream=response.stream
        )
        return httpx2.Response(
            response.status_code, headers=response.headers.raw, stream=_Body(wrapped)
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
