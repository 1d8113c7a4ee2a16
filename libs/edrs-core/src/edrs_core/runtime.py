"""The life of a service process: connect its datastores and bus, serve gRPC, HTTP health and metrics,
and on SIGTERM stop accepting, drain in-flight work within the grace period and close everything."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import Any, Generic

import asyncpg
from edrs_events import BusUnavailable, EventBus, connect_bus
from redis.asyncio import Redis
from starlette.routing import BaseRoute

from edrs_core.consumers import Consumer, Consumers, PrometheusBusObserver
from edrs_core.db import open_database
from edrs_core.grpc_client import PeerChannels
from edrs_core.grpc_server import GrpcServer, GrpcService
from edrs_core.http import HealthState, HttpServer, build_http_app, metrics_app
from edrs_core.identity import JwksKeys, ServiceTokens, TokenVerifier, load_private_key
from edrs_core.logging import configure_logging
from edrs_core.settings import (
    ServiceSettings,
    SettingsT,
    SettingsT_co,
    load_settings_or_exit,
)
from edrs_core.tracing import configure_tracing

log = logging.getLogger("edrs.runtime")


@dataclass
class Runtime(Generic[SettingsT_co]):
    """Everything a service's handlers may use, built once at start-up and passed in. Generic over
    the service's settings class: `rt.settings` of a `Runtime[GatewaySettings]` is a
    GatewaySettings, with no isinstance check."""

    settings: SettingsT_co
    db: asyncpg.Pool
    redis: Redis | None
    # The one event bus of the process (EDRS_<SERVICE>_BUS_URL): readiness, the outbox relay,
    # consumers and the gateway's event routes all use it.
    bus: EventBus
    peers: PeerChannels
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    # Readiness checks a service adds for engines of its own (the task service's Temporal).
    checks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)

    def add_check(self, name: str, check: Callable[[], Awaitable[None]]) -> None:
        """Make `/health/readiness` also await `check` (it raises when not ready)."""
        self.checks[name] = check

    def on_close(self, closer: Callable[[], Awaitable[Any]]) -> None:
        """Await `closer` at shutdown, after the servers stopped and before the pools close."""
        self.closers.append(closer)

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        """Run `coro` for the life of the service; it is cancelled at shutdown."""
        self.background.append(asyncio.ensure_future(coro))
        self.background[-1].set_name(name)


Build = Callable[[Runtime[SettingsT]], Sequence[GrpcService] | Awaitable[Sequence[GrpcService]]]
HttpRoutes = Callable[[Runtime[SettingsT]], Sequence[BaseRoute] | Awaitable[Sequence[BaseRoute]]]


@dataclass(frozen=True)
class LocalPorts:
    """The ports a service asks for in the local fleet (`edrs dev up`); a taken one is replaced."""

    grpc: int
    http: int
    metrics: int


@dataclass
class ServiceDefinition(Generic[SettingsT]):
    """What makes a service: its settings class, its gRPC services, its migrations, extra routes,
    and the events it consumes (see edrs_core.consumers).

    A service declares its definition once, as an entry point in the ``edrs.services`` group of its
    pyproject.toml; the launcher, the Makefile and the tests find it there (`edrs_core.registry`).
    """

    settings_cls: type[SettingsT]
    build: Build[SettingsT]
    migrations: Traversable | None = None
    http_routes: HttpRoutes[SettingsT] | None = None
    # Where `edrs dev up` runs it on one machine; None: ports after those of the declared ones.
    local_ports: LocalPorts | None = None
    consumers: Sequence[Consumer[SettingsT]] = ()
    # PostgreSQL settings every connection of the service's pool starts with, from its settings
    # (edrs_core.db.open_database's `server_settings`); None: the server's defaults.
    database_settings: Callable[[SettingsT], Mapping[str, str]] | None = None

    @property
    def name(self) -> str:
        """The service's name: its settings' `service_name`."""
        return self.settings_cls.service_name

    @property
    def env_prefix(self) -> str:
        """The prefix of its settings' environment variables, e.g. ``EDRS_GATEWAY_``."""
        return str(self.settings_cls.model_config.get("env_prefix", ""))


class _StartupAborted(Exception):
    pass


class ServiceRunner(Generic[SettingsT]):
    def __init__(
        self,
        definition: ServiceDefinition[SettingsT],
        settings: SettingsT,
        *,
        handle_signals: bool = True,
    ) -> None:
        self.definition = definition
        self.handle_signals = handle_signals
        self.started = asyncio.Event()
        self.settings = settings
        self.name = settings.service_name
        self.stop_requested = asyncio.Event()
        self.runtime: Runtime[SettingsT] | None = None
        self.health = HealthState(checks={}, cache_seconds=settings.readiness_cache_seconds)
        self.grpc: GrpcServer | None = None
        self.servers: list[HttpServer] = []
        self.consumers: Consumers[SettingsT] | None = None

    async def run(self) -> int:
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop_requested.set)
        s = self.settings
        try:
            # Health and metrics answer first, so probes see "starting" rather than nothing.
            app = build_http_app(self.name, self.health)
            self.servers = [
                HttpServer(
                    metrics_app(),
                    s.host,
                    s.metrics_port,
                    "metrics",
                    graceful_seconds=s.shutdown_grace_seconds,
                ),
                HttpServer(
                    app,
                    s.host,
                    s.http_port,
                    "http",
                    graceful_seconds=s.shutdown_grace_seconds,
                    tls=s.tls,
                ),
            ]
            for server in self.servers:
                await server.start()
            self.runtime = await self._connect()
            services = self.definition.build(self.runtime)
            if inspect.isawaitable(services):
                services = await services
            self.health.checks.update(self.runtime.checks)
            if self.definition.http_routes:
                routes = self.definition.http_routes(self.runtime)
                if inspect.isawaitable(routes):
                    routes = await routes
                app.router.routes.extend(routes)
            self.grpc = GrpcServer(
                self.name,
                list(services),
                s.host,
                s.grpc_port,
                verifier=self._verifier(),
                jwks_setting=s.env_name("jwks_url"),
                tls=s.tls,
            )
            await self.grpc.start()
            self.consumers = Consumers(self.runtime, self.definition.consumers)
            await self.consumers.start()
            self.health.checks.update(self.consumers.checks())
        except _StartupAborted:
            await self._close()
            return 0
        except Exception as exc:
            log.error("start-up failed: %s", exc, exc_info=True)
            await self._close()
            return 1
        self.health.started = True
        self.started.set()
        log.info(
            "%s started",
            self.name,
            extra={
                "grpc": f"{s.host}:{self.grpc.port}",
                "http": f"{s.host}:{self.servers[1].port}",
                "metrics": f"{s.host}:{self.servers[0].port}",
            },
        )
        await self.stop_requested.wait()
        await self._shutdown()
        return 0

    def published_jwks_url(self) -> str | None:
        """Where this service publishes the fleet JWKS (the gateway), once its HTTP port is bound."""
        s = self.settings
        if s.jwks_path is None or len(self.servers) < 2:
            return None
        scheme = "https" if s.tls is not None else "http"
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
        return f"{scheme}://{host}:{self.servers[1].port}{s.jwks_path}"

    def jwks_url(self) -> str | None:
        """JWKS_URL; else, for the service that publishes the fleet JWKS, its own."""
        return self.settings.jwks_url or self.published_jwks_url()

    def _verifier(self) -> TokenVerifier | None:
        s = self.settings
        url = self.jwks_url()
        if url is None:
            log.warning(
                "%s is not set: every gRPC call but health and reflection will be refused",
                s.env_name("jwks_url"),
            )
            return None
        tls = s.tls
        keys = JwksKeys(
            url,
            cache_seconds=s.jwks_cache_seconds,
            min_refresh_seconds=s.jwks_min_refresh_seconds,
            tls=tls.client_context() if tls is not None and url.startswith("https:") else None,
        )
        return TokenVerifier(keys, issuer=s.identity_issuer, audience=s.identity_audience)

    def _service_tokens(self) -> ServiceTokens | None:
        s = self.settings
        if s.service_key is None:
            return None
        return ServiceTokens(
            self.name,
            load_private_key(s.service_key.get_secret_value(), s.env_name("service_key")),
            audience=s.identity_audience,
            ttl_seconds=s.service_token_ttl_seconds,
        )

    async def _retry(
        self, what: str, attempt: Callable[[], Awaitable[Any]], deadline: float
    ) -> Any:
        """Retry a start-up connection with capped exponential backoff until the deadline."""
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            try:
                return await attempt()
            except (OSError, asyncpg.PostgresError, BusUnavailable, TimeoutError) as exc:
                if loop.time() + delay > deadline:
                    raise RuntimeError(f"could not reach {what}: {exc}") from exc
                log.warning("waiting for %s: %s", what, exc)
            stop = asyncio.ensure_future(self.stop_requested.wait())
            done, _ = await asyncio.wait({stop}, timeout=delay)
            stop.cancel()
            if done:
                raise _StartupAborted
            delay = min(delay * 2, 2.0)

    async def _connect(self) -> Runtime[SettingsT]:
        s = self.settings
        deadline = asyncio.get_running_loop().time() + s.startup_timeout_seconds
        settings_of = self.definition.database_settings
        database_settings = settings_of(s) if settings_of is not None else None
        db = await self._retry(
            "PostgreSQL",
            lambda: open_database(
                s.database_url,
                self.definition.migrations,
                s.database_pool_size,
                server_settings=database_settings,
            ),
            deadline,
        )
        redis: Redis | None = None
        if s.uses_redis and s.redis_url:
            redis = Redis.from_url(s.redis_url, socket_timeout=2, socket_connect_timeout=2)
            await self._retry("Redis", redis.ping, deadline)
        bus = await self._retry(
            "the event bus", lambda: connect_bus(s.bus_url, name=f"edrs-{self.name}"), deadline
        )
        bus.observer = PrometheusBusObserver(self.name)
        runtime = Runtime(
            settings=s,
            db=db,
            redis=redis,
            bus=bus,
            peers=PeerChannels(
                self.name,
                s.peers,
                timeout=s.rpc_timeout_seconds,
                service_tokens=self._service_tokens(),
                tls=s.tls,
            ),
        )
        self.health.checks = self._checks(runtime)
        return runtime

    @staticmethod
    def _checks(rt: Runtime[ServiceSettings]) -> dict[str, Callable[[], Awaitable[None]]]:
        async def postgres() -> None:
            async with rt.db.acquire(timeout=1) as conn:
                await conn.fetchval("SELECT 1")

        async def redis() -> None:
            assert rt.redis is not None
            await rt.redis.ping()

        checks: dict[str, Callable[[], Awaitable[None]]] = {
            "postgres": postgres,
            "bus": rt.bus.check,
        }
        if rt.redis is not None:
            checks["redis"] = redis
        return checks

    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace_seconds
        log.info("SIGTERM received: refusing new calls, draining for up to %ss", grace)
        self.health.shutting_down = True
        # Calls and event handlers drain side by side, within one grace period.
        drains = [self.grpc.stop(grace)] if self.grpc is not None else []
        if self.consumers is not None:
            drains.append(self.consumers.drain(grace))
        await asyncio.gather(*drains)
        await self._close()
        log.info("%s stopped", self.name)

    async def _close(self) -> None:
        for server in reversed(self.servers):
            await server.stop()
        rt = self.runtime
        if rt is None:
            return
        if self.consumers is not None:
            await self.consumers.drain(0)
        for task in rt.background:
            task.cancel()
        await asyncio.gather(*rt.background, return_exceptions=True)
        for closer in reversed(rt.closers):
            try:
                await closer()
            except Exception:
                log.warning("error while closing", exc_info=True)
        await rt.peers.close()
        try:
            await rt.bus.close()
        except Exception:
            log.warning("error while closing the event bus", exc_info=True)
        if rt.redis is not None:
            await rt.redis.aclose()
        await rt.db.close()


def run_service(definition: ServiceDefinition[SettingsT]) -> None:
    """Entry point of a service process (`python -m edrs_<name>`)."""
    settings = load_settings_or_exit(definition.settings_cls)
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otlp_endpoint)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        code = runner.run(ServiceRunner(definition, settings).run())
    sys.exit(code)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (Linux and macOS), else asyncio's own: the same
    code, with less CPU per request, task and socket operation."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
