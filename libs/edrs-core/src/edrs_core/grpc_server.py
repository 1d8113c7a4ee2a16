"""The gRPC server every service runs: one interceptor for identity, context, tracing, metrics, logs
and errors; the standard health service and server reflection (the only calls open to anyone)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from edrs_core import metrics
from edrs_core.context import (
    CLIENT_ID_KEY,
    REQUEST_ID_KEY,
    deadline_var,
    request_context,
    request_id_var,
)
from edrs_core.errors import ServiceError, Unauthenticated, Unavailable
from edrs_core.identity import (
    AUTHORIZATION_KEY,
    Identity,
    InvalidIdentity,
    KeysUnavailable,
    TokenVerifier,
    token_from_metadata,
)
from edrs_core.tls import TlsFiles
from edrs_core.tracing import extract_context

# Per-request lookups of the tracer cost more than the span: one proxy, resolved once the
# process installs its tracer provider.
_TRACER = trace.get_tracer("edrs_core.grpc")

log = logging.getLogger("edrs.grpc")

# The context a handler gets. The generated servicers do not say its request and response types,
# so handlers take it as this.
ServicerContext = grpc.aio.ServicerContext[Any, Any]

# Calls that are infrastructure chatter: logged at DEBUG so service logs show the work. They are
# also the only calls served without an identity: probes and tools carry none, and neither
# answers anything about a tenant.
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


@dataclass(frozen=True)
class GrpcService:
    """One servicer to mount: `add(servicer, server)` is the generated `add_XServicer_to_server`."""

    full_name: str
    servicer: Any
    add: Callable[[Any, grpc.aio.Server], None]


class _CallObserver:
    """Wraps one RPC: binds context, opens the server span, records metrics and maps errors."""

    def __init__(
        self,
        service: str,
        method: str,
        metadata: dict[str, str],
        verifier: TokenVerifier | None,
        jwks_setting: str,
    ) -> None:
        self.service = service
        self.method = method
        self.metadata = metadata
        self.verifier = verifier
        self.jwks_setting = jwks_setting
        self.quiet = method.startswith(_QUIET_PREFIXES)
        self.short = method.rsplit("/", 1)[-1]

    async def _identity(self) -> Identity | None:
        """The caller's verified identity; None only for the open infrastructure calls."""
        if self.quiet:
            return None
        try:
            token = token_from_metadata(self.metadata.get(AUTHORIZATION_KEY))
        except InvalidIdentity as exc:
            raise Unauthenticated(str(exc)) from None
        if token is None:
            if CLIENT_ID_KEY in self.metadata:
                raise Unauthenticated(
                    f"'{CLIENT_ID_KEY}' is not trusted: the call needs a signed identity token "
                    f"in the '{AUTHORIZATION_KEY}: Bearer <token>' metadata"
                )
            raise Unauthenticated(
                f"the call carries no identity token: set the '{AUTHORIZATION_KEY}: Bearer "
                "<token>' metadata"
            )
        if self.verifier is None:
            raise Unauthenticated(
                f"{self.service} cannot verify identity tokens: {self.jwks_setting} is not set"
            )
        try:
            return await self.verifier.verify(token)
        except InvalidIdentity as exc:
            raise Unauthenticated(str(exc)) from None
        except KeysUnavailable as exc:
            raise Unavailable(str(exc)) from None

    async def run(self, call: Callable[[], Awaitable[Any]], context: ServicerContext) -> Any:
        request_id = self.metadata.get(REQUEST_ID_KEY) or None
        remaining = context.time_remaining()
        deadline_var.set(None if remaining is None else time.monotonic() + remaining)
        tracer = _TRACER
        with (
            request_context(None, request_id),
            tracer.start_as_current_span(
                f"{self.service}.{self.short}",
                context=extract_context(self.metadata),
                kind=trace.SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.method": self.method},
            ) as span,
        ):
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                identity = await self._identity()
                if identity is None:
                    return await call()
                # The tenant, subject and role of the work come from the verified token only.
                with request_context(None, request_id_var.get(), identity):
                    return await call()
            except ServiceError as exc:
                code = exc.code
                await context.abort(code, exc.details)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", self.method)
                await context.abort(code, f"internal error (request id {request_id_var.get()})")
            finally:
                self._record(code, time.perf_counter() - start, span)

    def _record(self, code: grpc.StatusCode, elapsed: float, span: trace.Span) -> None:
        code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        metrics.GRPC_REQUESTS.labels(self.service, self.method, code_name).inc()
        metrics.GRPC_LATENCY.labels(self.service, self.method).observe(elapsed)
        if code is not grpc.StatusCode.OK:
            metrics.GRPC_ERRORS.labels(self.service, self.method, code_name).inc()
            span.set_status(trace.Status(trace.StatusCode.ERROR, code_name))
        span.set_attribute("rpc.grpc.status_code", code_name)
        level = logging.DEBUG if self.quiet else logging.INFO
        log.log(
            level,
            "rpc %s %s",
            self.method,
            code_name,
            extra={
                "rpc_method": self.method,
                "code": code_name,
                "duration_ms": round(elapsed * 1e3, 3),
            },
        )


async def _stream_out(result: Any, context: ServicerContext) -> None:
    """A streaming handler is either an async generator or a coroutine that calls context.write."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            await context.write(item)
    else:
        await result


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def _aio(behaviour: object) -> Callable[..., Any]:
    """A handler's behaviour as grpc.aio runs it. types-grpcio types RpcMethodHandler for the sync
    server (a function of an Iterator and a sync context); under grpc.aio it is a coroutine or
    async generator function of an AsyncIterator and an aio context."""
    return cast(Callable[..., Any], behaviour)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, service: str, verifier: TokenVerifier | None, jwks_setting: str = "the JWKS URL"
    ) -> None:
        self.service = service
        self.verifier = verifier
        self.jwks_setting = jwks_setting

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails],
            Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None],
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        service, verifier, jwks_setting = self.service, self.verifier, self.jwks_setting

        def observer() -> _CallObserver:
            return _CallObserver(service, method, metadata, verifier, jwks_setting)

        if handler.unary_unary:
            inner_uu = _aio(handler.unary_unary)

            async def unary_unary(request: Any, context: ServicerContext) -> Any:
                return await observer().run(lambda: inner_uu(request, context), context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_us = _aio(handler.unary_stream)

            async def unary_stream(request: Any, context: ServicerContext) -> Any:
                await observer().run(
                    lambda: _stream_out(inner_us(request, context), context), context
                )

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            inner_su = _aio(handler.stream_unary)

            async def stream_unary(requests: AsyncIterator[Any], context: ServicerContext) -> Any:
                return await observer().run(lambda: inner_su(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, handler.request_deserializer, handler.response_serializer
            )
        inner_ss = _aio(handler.stream_stream)

        async def stream_stream(requests: AsyncIterator[Any], context: ServicerContext) -> Any:
            await observer().run(lambda: _stream_out(inner_ss(requests, context), context), context)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer
        )


class GrpcServer:
    """A grpc.aio server with health and reflection, bound to one address; every other call must
    carry an identity token `verifier` accepts. With `tls`, the port speaks only mutual TLS."""

    def __init__(
        self,
        service: str,
        services: Sequence[GrpcService],
        host: str,
        port: int,
        *,
        verifier: TokenVerifier | None,
        jwks_setting: str = "the JWKS URL",
        tls: TlsFiles | None = None,
    ) -> None:
        self.service = service
        self.server = grpc.aio.server(
            interceptors=[ServerInterceptor(service, verifier, jwks_setting)]
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in services]
        for s in services:
            s.add(s.servicer, self.server)
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.names = names
        self.services = list(services)
        address = f"{host}:{port}"
        self.port = (
            self.server.add_secure_port(address, tls.server_credentials())
            if tls is not None
            else self.server.add_insecure_port(address)
        )
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *self.names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Refuse new calls at once and give in-flight calls up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
