"""An httpx transport that connects only to addresses the policy allows, pinned after the check.

The name is resolved once per connection, inside the connect, and every address it resolved to
is checked; the socket then connects to a checked address, not to the name, so a DNS answer that
changes between the check and the connect (DNS rebinding) changes nothing. TLS still verifies the
certificate against the name (httpcore passes the URL's host as SNI and `server_hostname`), and
the Host header is the URL's host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import httpcore
import httpx

from edrs_core.outbound._addresses import IpAddress
from edrs_core.outbound._errors import (
    OutboundBlocked,
    OutboundConnectionError,
    OutboundError,
    OutboundInvalidUrl,
    OutboundProtocolError,
    OutboundTimeout,
    OutboundTlsError,
)
from edrs_core.outbound._policy import HostRules, OutboundPolicy
from edrs_core.outbound._urls import DEFAULT_PORTS, normalise_host

Resolver = Callable[[str, int], Awaitable[Sequence[IpAddress]]]
"""Resolves a host name (A-label form) to the addresses to connect to, for a port."""

# Request extension carrying a tenant's HostRules to the transport.
HOST_RULES_EXTENSION = "edrs_host_rules"


async def system_resolver(host: str, port: int) -> list[IpAddress]:
    """The operating system's resolver (getaddrinfo), in a thread; addresses in its order."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundConnectionError(
            f"host {host} could not be resolved ({exc.strerror})"
        ) from None
    addresses: list[IpAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def parse_resolve_entries(entries: Iterable[str]) -> dict[str, tuple[IpAddress, ...]]:
    """`host=address` entries (like curl's --resolve) as a map from the canonical host name to its
    addresses, in the order given; a host named twice gets both addresses. ValueError names the
    entry that is not a host name, "=", and an IP address."""
    mapping: dict[str, list[IpAddress]] = {}
    for entry in entries:
        name, sep, address = entry.strip().partition("=")
        problem = (
            f"{entry!r} is not host=address (a host name, '=', an IP address, "
            "e.g. news.example.test=127.0.0.1)"
        )
        if not sep:
            raise ValueError(problem)
        try:
            host, literal = normalise_host(name.strip())
            ip = ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]"))
        except (OutboundError, ValueError):
            raise ValueError(problem) from None
        if literal is not None:
            raise ValueError(f"{entry!r} maps an IP address; only host names are resolved")
        known = mapping.setdefault(host, [])
        if ip not in known:
            known.append(ip)
    return {host: tuple(addresses) for host, addresses in mapping.items()}


def static_resolver(
    mapping: Mapping[str, Sequence[IpAddress]], fallback: Resolver | None = system_resolver
) -> Resolver:
    """A resolver answering the mapped names from `mapping` (canonical host -> addresses) and
    every other name with `fallback` (None: any other name has no address).

    The addresses it gives are checked by the policy like any resolved address: mapping a name to
    loopback lets nothing through unless the operator's allow rules open loopback (or the name).
    """
    fixed = {host: tuple(addresses) for host, addresses in mapping.items()}

    async def resolve(host: str, port: int) -> Sequence[IpAddress]:
        addresses = fixed.get(host)
        if addresses is not None:
            return addresses
        if fallback is None:
            raise OutboundConnectionError(f"host {host} could not be resolved (not mapped)")
        return await fallback(host, port)

    return resolve


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, then connects to a checked address (never the name)."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        name, ip = normalise_host(host)
        if ip is not None:
            addresses: Sequence[IpAddress] = [ip]
        else:
            try:
                async with asyncio.timeout(timeout):
                    addresses = list(await self._resolver(name, port))
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {name} took too long") from None
            if not addresses:
                raise OutboundConnectionError(f"host {name} has no address")
        self._policy.check_addresses(name, addresses)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundBlocked("must not name a Unix socket", rule="scheme")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class OutboundTransport(httpx.AsyncBaseTransport):
    """Checks every request's URL against the policy (and the tenant's `HostRules`, passed as the
    request extension `edrs_host_rules`), then sends it over pinned connections.

    Usable on its own in an `httpx.AsyncClient` (a library that wants one): every request the
    client makes, redirects included, passes the same checks. Refusals and failures are raised as
    `OutboundError`s. Proxies from the environment are never used: a proxy would resolve the
    name itself, after our check.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or ssl.create_default_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_PinnedBackend(policy, resolver or system_resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        rules = request.extensions.get(HOST_RULES_EXTENSION)
        if rules is not None and not isinstance(rules, HostRules):
            raise TypeError(f"{HOST_RULES_EXTENSION} must be HostRules, not {type(rules)}")
        checked = self.policy.check_url(str(request.url), rules)
        sent_host = request.url.raw_host.decode("ascii")
        sent_port = request.url.port or DEFAULT_PORTS.get(request.url.scheme, 0)
        if (checked.host, checked.port) != (sent_host, sent_port):
            raise OutboundInvalidUrl("is read differently by the HTTP client; refused to be safe")
        assert isinstance(request.stream, httpx.AsyncByteStream)
        timeouts = request.extensions.get("timeout", {})
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions={k: v for k, v in request.extensions.items() if k != HOST_RULES_EXTENSION},
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except httpcore.TimeoutException as exc:
            raise _timeout(exc, timeouts) from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _failure(exc, checked.host) from exc
        assert hasattr(response.stream, "__aiter__")
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_MappedStream(response.stream, checked.host, timeouts),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _MappedStream(httpx.AsyncByteStream):
    """The response body, with httpcore's errors raised as OutboundErrors."""

    def __init__(self, stream: Any, host: str, timeouts: dict[str, float | None]) -> None:
        self._stream = stream
        self._host = host
        self._timeouts = timeouts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpcore.TimeoutException as exc:
            raise _timeout(exc, self._timeouts) from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _failure(exc, self._host) from exc

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


def _timeout(exc: httpcore.TimeoutException, timeouts: dict[str, float | None]) -> OutboundTimeout:
    phase = {
        httpcore.ConnectTimeout: "connect",
        httpcore.ReadTimeout: "read",
        httpcore.WriteTimeout: "write",
        httpcore.PoolTimeout: "pool",
    }.get(type(exc), "read")
    return OutboundTimeout(phase, timeouts.get(phase))


def _failure(exc: Exception, host: str) -> OutboundError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpcore.ConnectError):
        if _caused_by(exc, ssl.SSLError):
            return OutboundTlsError(f"host {host} failed the TLS handshake: {detail}")
        return OutboundConnectionError(f"host {host} could not be connected to: {detail}")
    if isinstance(exc, httpcore.NetworkError):
        return OutboundConnectionError(f"host {host} dropped the connection: {detail}")
    return OutboundProtocolError(f"host {host} did not answer in valid HTTP: {detail}")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
