"""Calls to peer services: typed stubs (`PeerChannels.stub`) whose failures reach the caller as
ServiceErrors (`edrs_core.errors.peer_error`, the one mapping), on one channel per peer with a
deadline on every call, retries with backoff and jitter for idempotent methods only, a circuit
breaker per peer, and identity, request id and trace context passed along."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from opentelemetry import trace
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from edrs_core.context import client_id_var, identity_var, outgoing_metadata, remaining_time
from edrs_core.errors import PeerNotConfigured, peer_error
from edrs_core.identity import AUTHORIZATION_KEY, ServiceTokens, bearer
from edrs_core.tls import TlsFiles
from edrs_core.tracing import inject_metadata

if TYPE_CHECKING:
    from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

# Status codes that say "the peer is unhealthy", as opposed to "your request was wrong".
_TRANSPORT_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# Per-request lookups of the tracer cost more than the span: one proxy, resolved once the
# process installs its tracer provider.
_TRACER = trace.get_tracer("edrs_core.grpc")

# The longest wait between two attempts to reach a peer that is down (docs/operations.md).
MAX_RECONNECT_BACKOFF_SECONDS = 5.0

_SAFE_TO_RETRY = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)


def is_idempotent(method: MethodDescriptor) -> bool:
    """A method is retried only when its proto declares `option idempotency_level`."""
    return method.GetOptions().idempotency_level in _SAFE_TO_RETRY


def peer_service_descriptors(peer: str) -> list[ServiceDescriptor]:
    """The proto services a peer serves, found by the layout rule `edrs_proto.<peer>.v1.*_pb2`
    (`<peer>_pb2`, and any further service file of the area, e.g. integration's `tools_pb2`)."""
    try:
        package = importlib.import_module(f"edrs_proto.{peer}.v1")
    except ModuleNotFoundError:
        return []
    services: list[ServiceDescriptor] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            services += module.DESCRIPTOR.services_by_name.values()
    return services


def retry_service_config(
    services: list[ServiceDescriptor],
    *,
    max_attempts: int = 4,
    initial_backoff: float = 0.05,
    max_backoff: float = 1.0,
) -> str:
    """gRPC service config retrying idempotent methods on UNAVAILABLE.

    gRPC's own retry implementation applies exponential backoff with full jitter
    (each delay is random in [0, current backoff]), so none is added here.
    """
    names = [
        {"service": svc.full_name, "method": m.name}
        for svc in services
        for m in svc.methods
        if is_idempotent(m)
    ]
    config: dict[str, Any] = {"methodConfig": []}
    if names:
        config["methodConfig"].append(
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": f"{initial_backoff}s",
                    "maxBackoff": f"{max_backoff}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        )
    return json.dumps(config)


class CircuitOpenError(grpc.aio.AioRpcError):
    """Raised instead of calling a peer whose breaker is open; callers see plain UNAVAILABLE."""

    def __init__(self, peer: str) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=f"circuit breaker open for peer '{peer}'",
        )


def _not_a_peer_failure(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in _TRANSPORT_FAILURES


def identity_token(service_tokens: ServiceTokens | None) -> str | None:
    """The identity the next hop receives: the token of the caller being served, forwarded as is;
    else (event handlers, jobs: work that belongs to no user) this service's own token for the
    tenant in context. None when there is neither (no SERVICE_KEY): the peer refuses the call."""
    identity = identity_var.get()
    tenant = client_id_var.get()
    if identity is not None and (identity.tenant_id or None) == tenant:
        return identity.token
    if service_tokens is None:
        return None
    return service_tokens.token_for(tenant or "")


class _ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(
        self,
        caller: str,
        peer: str,
        timeout: float,
        breakers: AsyncCircuitBreakerFactory,
        service_tokens: ServiceTokens | None,
    ) -> None:
        self.caller = caller
        self.peer = peer
        self.timeout = timeout
        self.breakers = breakers
        self.service_tokens = service_tokens
        self._breaker: AsyncCircuitBreaker | None = None

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        present = {key for key, _ in metadata}
        own: list[tuple[str, str]] = []
        if AUTHORIZATION_KEY not in present:
            token = identity_token(self.service_tokens)
            if token is not None:
                own.append((AUTHORIZATION_KEY, bearer(token)))
        for key, value in (*own, *outgoing_metadata(), *inject_metadata()):
            if key not in present:
                metadata.add(key, value)
        timeout = details.timeout if details.timeout is not None else self.timeout
        remaining = remaining_time()
        if remaining is not None:
            timeout = min(timeout, remaining)  # never outlive the call being served
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    def _span(self, details: grpc.aio.ClientCallDetails) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        return _TRACER.start_as_current_span(
            f"{self.caller}.call.{method.rsplit('/', 1)[-1]}",
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": method, "peer.service": self.peer},
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        with self._span(details):
            try:
                async with self._breaker or await self._first_breaker():
                    call = await continuation(self._details(details), request)
                    await call  # surfaces the status inside the breaker
                    return call
            except OpenedState:
                raise CircuitOpenError(self.peer) from None

    async def _first_breaker(self) -> AsyncCircuitBreaker:
        # The factory keeps breakers in memory and hands out a wrapper of the same state object
        # each time; asking it on every call (a unit of work, a lookup, a new wrapper) cost more
        # than the breaker itself, so the wrapper is kept.
        self._breaker = await self.breakers.get_breaker(
            self.peer, exclude=[(grpc.aio.AioRpcError, _not_a_peer_failure)]
        )
        return self._breaker

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        with self._span(details):
            return await continuation(self._details(details), request)


class _StreamClientInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """The same interceptor for server-streaming calls: a grpc.aio channel files each interceptor
    under the first call kind it implements, so one object cannot serve both kinds."""

    def __init__(self, inner: _ClientInterceptor) -> None:
        self.inner = inner

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self.inner.intercept_unary_stream(continuation, details, request)


class _ClientStreamInterceptor(grpc.aio.StreamUnaryClientInterceptor):
    """The same for client-streaming calls (an upload, e.g. audio to transcribe): identity,
    deadline and trace context on the call, as for server-streaming calls."""

    def __init__(self, inner: _ClientInterceptor) -> None:
        self.inner = inner

    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        with self.inner._span(details):
            return await continuation(self.inner._details(details), request_iterator)


S = TypeVar("S")


def peer_of(stub_class: Callable[..., object]) -> str:
    """The peer serving a generated stub, by the layout rule `edrs_proto.<peer>.v1.*_pb2_grpc`."""
    parts = getattr(stub_class, "__module__", "").split(".")
    if len(parts) == 4 and parts[0] == "edrs_proto" and parts[3].endswith("_pb2_grpc"):
        return parts[1]
    raise ValueError(
        f"cannot tell which peer serves {stub_class!r}: pass peer= to PeerChannels.stub"
    )


class _MappedCall:
    """A call in flight: awaiting it (unary) or iterating it (streaming) raises the mapped
    ServiceError instead of grpc's AioRpcError; everything else (cancel(), code(), metadata) is
    the grpc call's own."""

    def __init__(self, call: Any, peer: str) -> None:
        self._call = call
        self._peer = peer

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from self._call.__await__())
        except grpc.aio.AioRpcError as exc:
            raise peer_error(self._peer, exc.code(), exc.details() or "") from exc

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        try:
            async for response in self._call:
                yield response
        except grpc.aio.AioRpcError as exc:
            raise peer_error(self._peer, exc.code(), exc.details() or "") from exc

    async def read(self) -> Any:
        try:
            return await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise peer_error(self._peer, exc.code(), exc.details() or "") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _MappedMethod:
    def __init__(self, method: Callable[..., Any], peer: str) -> None:
        self._method = method
        self._peer = peer

    def __call__(self, *args: Any, **kwargs: Any) -> _MappedCall:
        return _MappedCall(self._method(*args, **kwargs), self._peer)


class _PeerStub:
    """A generated stub made on its first call, so a service starts (and its other RPCs work)
    without an address for a peer it may never call; a call then fails with PeerNotConfigured."""

    def __init__(self, channels: PeerChannels, peer: str, stub_class: Callable[..., Any]) -> None:
        self._channels = channels
        self._peer = peer
        self._stub_class = stub_class
        self._methods: dict[str, _MappedMethod] = {}

    def __getattr__(self, name: str) -> _MappedMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        method = self._methods.get(name)
        if method is None:
            stub = self._stub_class(self._channels.channel(self._peer))
            method = self._methods[name] = _MappedMethod(getattr(stub, name), self._peer)
        return method


class PeerChannels:
    """One channel per peer, created on first use and closed with the service; typed stubs on
    them (`stub`) for the service's code."""

    def __init__(
        self,
        caller: str,
        peers: Mapping[str, str],
        *,
        timeout: float = 5.0,
        breaker_threshold: int = 5,
        breaker_ttl: float = 30.0,
        service_tokens: ServiceTokens | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.caller = caller
        self.peers = dict(peers)
        self.timeout = timeout
        self.service_tokens = service_tokens
        self.tls = tls
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=breaker_threshold, default_ttl=breaker_ttl
        )
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[object, str], _PeerStub] = {}

    def stub(
        self,
        stub_class: Callable[[grpc.aio.Channel], S],
        *,
        peer: str | None = None,
        required: bool = False,
    ) -> S:
        """The way to call another service:

            persona = rt.peers.stub(persona_pb2_grpc.PersonaServiceStub)
            reply = await persona.GetPersona(persona_pb2.GetPersonaRequest(id=...))

        Typed as the generated async stub. Its calls go through this peer's channel (deadline,
        retries of idempotent methods, breaker, tenant/request id/trace context), and a failed call
        raises the ServiceError `peer_error` maps its status to, for unary calls when awaited and
        for streaming calls while iterating. The peer is found from the stub's module
        (`edrs_proto.<peer>.v1`) unless named. A peer without an address fails each call with
        PeerNotConfigured, or, when `required`, right here (so at start-up)."""
        name = peer or peer_of(stub_class)
        if required:
            self.channel(name)
        key = (stub_class, name)
        made = self._stubs.get(key)
        if made is None:
            made = self._stubs[key] = _PeerStub(self, name, stub_class)
        # The proxy answers every attribute of the generated stub with a mapped method of it.
        return cast(S, made)

    def channel(self, peer: str) -> grpc.aio.Channel:
        """The raw channel to `peer`: for edrs-core and tests. Service code calls `stub()`."""
        if peer not in self._channels:
            address = self.peers.get(peer)
            if not address:
                raise PeerNotConfigured(
                    peer,
                    f"no address configured for peer '{peer}' (set it in the PEERS setting of "
                    f"'{self.caller}')",
                )
            interceptor = _ClientInterceptor(
                self.caller, peer, self.timeout, self.breakers, self.service_tokens
            )
            interceptors = [
                interceptor,
                _StreamClientInterceptor(interceptor),
                _ClientStreamInterceptor(interceptor),
            ]
            options = [
                # A peer that was down is tried again within 5 s of its return: gRPC's default
                # reconnect backoff grows to 120 s, and until it ends every call fails at once.
                ("grpc.max_reconnect_backoff_ms", int(MAX_RECONNECT_BACKOFF_SECONDS * 1000)),
                ("grpc.enable_retries", 1),
                ("grpc.service_config", retry_service_config(peer_service_descriptors(peer))),
            ]
            self._channels[peer] = (
                grpc.aio.secure_channel(
                    address,
                    self.tls.channel_credentials(),
                    interceptors=interceptors,
                    options=options,
                )
                if self.tls is not None
                else grpc.aio.insecure_channel(address, interceptors=interceptors, options=options)
            )
        return self._channels[peer]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
