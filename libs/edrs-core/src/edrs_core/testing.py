"""Run a service inside the test process, on free ports, against real engines, trusting a real test
identity issuer (`test_issuer()`): calls carry tokens it signs (`tenant_metadata`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import httpx
from edrs_proto.common.v1 import common_pb2

from edrs_core._test_identity import TestIssuer, test_issuer
from edrs_core.runtime import ServiceDefinition, ServiceRunner
from edrs_core.settings import load_settings

# HTTP clients of the servers a test starts. httpx's default (5 s) races the clock on a loaded
# 2-core CI machine, where a password hash or a first request may take seconds: a test must fail
# on what it checks, never on a client timeout (issue 18).
HTTP_TIMEOUT = httpx.Timeout(120.0)


async def unthrottled(send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """`send()`'s answer, sent again after `Retry-After` while it is 429, as a client told to
    retry would (30 tries at most, each wait a minute at most, as `edrs knowledge`'s). A test
    gateway limits its tenants and anonymous callers like any other: a standard tenant may send
    60 requests a minute (10 at once), anonymous callers the same per client IP in the session's
    shared Redis, and every test client is 127.0.0.1. A test that is not about rate limits, but
    sends many requests (or its CLI does), asks through this rather than failing on a 429 that
    only says the machine was slow."""
    tries = 30
    for tried in range(1, tries + 1):
        reply = await send()
        if reply.status_code != 429 or tried == tries:
            break
        await asyncio.sleep(min(float(reply.headers.get("Retry-After", "1") or 1), 60.0))
    return reply


if TYPE_CHECKING:
    import httpx
    from edrs_events import BaseEvent, EventBus

__all__ = ["TestIssuer", "test_issuer"]


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.05
) -> None:
    """Poll an async condition until it holds; fail naming `what` after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def listening_process(
    argv: Sequence[str], port: int, what: str, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` started as a process, once something accepts connections on 127.0.0.1:`port`;
    terminated on exit. A process that exits before it listens fails the wait at once."""
    process = subprocess.Popen(list(argv), env=dict(env) if env is not None else None)
    try:

        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                assert process.poll() is None, f"{what} exited"
                return False
            writer.close()
            return True

        asyncio.run(wait_until(listening, 30, f"{what} to listen"))
        yield process
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class RunningService:
    runner: ServiceRunner[Any]
    channel: grpc.aio.Channel

    @property
    def grpc_address(self) -> str:
        assert self.runner.grpc is not None
        return f"127.0.0.1:{self.runner.grpc.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.runner.servers[1].port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.runner.servers[0].port}"

    def servicer(self, service: str) -> Any:
        """The servicer object behind `service` (its proto name, e.g. "ReasoningService"), for a
        test that must hold something the service owns, such as a generation slot."""
        assert self.runner.grpc is not None
        found = [
            s.servicer for s in self.runner.grpc.services if s.full_name.endswith(f".{service}")
        ]
        if len(found) != 1:
            raise LookupError(f"{self.runner.name} serves no {service!r}")
        return found[0]


@contextlib.asynccontextmanager
async def running_service(
    definition: ServiceDefinition[Any], *, start_timeout: float = 30.0, **settings: Any
) -> AsyncIterator[RunningService]:
    """Start `definition` with `settings` (ports default to 0, i.e. free) and stop it afterwards.

    The service trusts the test issuer's JWKS unless `settings` say otherwise; a service that
    publishes the fleet JWKS (the gateway) has its keys added to the issuer's while it runs."""
    values: dict[str, Any] = {
        "EDRS_ENVIRONMENT": "test",
        "grpc_port": 0,
        "http_port": 0,
        "metrics_port": 0,
        "shutdown_grace_seconds": 2.0,
        "readiness_cache_seconds": 0.0,
        **test_issuer().settings(definition.settings_cls.service_name),
    }
    values.update(settings)
    config = load_settings(definition.settings_cls, **values)
    runner = ServiceRunner(definition, config, handle_signals=False)
    task = asyncio.create_task(runner.run())
    started = asyncio.ensure_future(runner.started.wait())
    done, _ = await asyncio.wait(
        {task, started}, timeout=start_timeout, return_when="FIRST_COMPLETED"
    )
    if started not in done:
        started.cancel()
        runner.stop_requested.set()
        code = await task if task.done() else None
        raise RuntimeError(f"{config.service_name} did not start (exit code {code})")
    assert runner.grpc is not None
    tls = config.tls
    address = f"127.0.0.1:{runner.grpc.port}"
    channel = (
        grpc.aio.secure_channel(address, tls.channel_credentials())
        if tls is not None
        else grpc.aio.insecure_channel(address)
    )
    published = runner.published_jwks_url()
    if published is not None:
        test_issuer().trust(published)
    try:
        yield RunningService(runner, channel)
    finally:
        if published is not None:
            test_issuer().distrust(published)
        await channel.close()
        runner.stop_requested.set()
        await task


async def published_events(
    service: RunningService, event_type: str, aggregate_id: str, *, within: float = 30.0
) -> list[dict[str, Any]]:
    """The events of `event_type` about `aggregate_id` that `service` wrote to its outbox, once
    its relay has published every one of them to the bus (waited for, with a deadline)."""
    assert service.runner.runtime is not None
    db = service.runner.runtime.db
    rows: list[Any] = []

    async def relayed() -> bool:
        nonlocal rows
        rows = await db.fetch(
            "SELECT body, sent_at FROM edrs_outbox WHERE event_type = $1 AND aggregate_id = $2 "
            "ORDER BY position",
            event_type,
            aggregate_id,
        )
        return bool(rows) and all(r["sent_at"] is not None for r in rows)

    await wait_until(relayed, within, f"{event_type} of {aggregate_id} to be published")
    return [json.loads(bytes(r["body"])) for r in rows]


class _PostgresUrls(Protocol):
    def url(self, database: str = ...) -> str: ...


class _RedisUrls(Protocol):
    def url(self, db: int = ...) -> str: ...


class _NatsUrls(Protocol):
    def url(self) -> str: ...


def engine_settings(
    postgres_engine: _PostgresUrls,
    redis_engine: _RedisUrls,
    nats_engine: _NatsUrls,
    *,
    database: str,
    redis_db: int,
) -> dict[str, str]:
    """The `running_service` settings that point a service at the three test engines.

    Each service gets its own `database` and `redis_db` so suites never see each other's data."""
    return {
        "database_url": postgres_engine.url(database),
        "redis_url": redis_engine.url(redis_db),
        "bus_url": nats_engine.url(),
    }


@dataclass
class SseStream:
    """Reads a text/event-stream response one event at a time (comments are kept apart)."""

    response: httpx.Response
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)

    async def next_event(self, within: float = 30.0) -> dict[str, str]:
        return await asyncio.wait_for(self._read(), within)

    async def _read(self) -> dict[str, str]:
        event: dict[str, str] = {}
        async for line in self.lines:
            if not line:
                if event:
                    return event
                continue
            name, _, value = line.partition(":")
            if name == "":
                self.comments.append(value.strip())
            else:
                event[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")


Metadata = Sequence[tuple[str, str]]
# The tenant header services once believed; a call carrying only it is refused.
TENANT_HEADER = "x-edrs-client-id"


def tenant_metadata(tenant: str, **claims: Any) -> list[tuple[str, str]]:
    """Metadata of a call made by a user of `tenant`: a real token signed by the test issuer."""
    return test_issuer().metadata(tenant, **claims)


def tenant_of(metadata: Metadata) -> str:
    """The tenant that `metadata` (from `tenant_metadata`) names: its token's `tid` claim."""
    import jwt

    token = dict(metadata)["authorization"].removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["tid"])


def operator_metadata() -> list[tuple[str, str]]:
    """Metadata of a call made by an operator (tenant administration)."""
    return test_issuer().operator_metadata()


def _with_metadata(details: grpc.aio.ClientCallDetails, metadata: Metadata) -> Any:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*(details.metadata or ()), *metadata),
        details.credentials,
        details.wait_for_ready,
    )


# grpc.aio files an interceptor under the first call kind it implements: one class per kind.
class _AddToUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: Metadata) -> None:
        self.metadata = list(metadata)

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self.metadata), request)


class _AddToServerStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, metadata: Metadata) -> None:
        self.metadata = list(metadata)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self.metadata), request)


class _AddToClientStream(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, metadata: Metadata) -> None:
        self.metadata = list(metadata)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self.metadata), requests)


def channel_with(address: str, metadata: Metadata) -> grpc.aio.Channel:
    """A plaintext channel whose every call carries `metadata` (an identity, say)."""
    interceptors: list[grpc.aio.ClientInterceptor] = [
        _AddToUnary(metadata),
        _AddToServerStream(metadata),
        _AddToClientStream(metadata),
    ]
    return grpc.aio.insecure_channel(address, interceptors=interceptors)


async def collect_pages(
    list_call: Callable[..., Awaitable[Any]],
    make_request: Callable[..., Any],
    items_field: str,
    *,
    page_size: int,
    metadata: Metadata | None = None,
) -> list[Any]:
    """Follow `next_page_token` from the first page to the last and return every item in order.

    `make_request` is called as `make_request(page=PageRequest(...))`, so the list call's request
    class itself will do; `items_field` names the repeated field of the response. Fails if a page
    holds more than `page_size` items."""
    items: list[Any] = []
    token = ""
    while True:
        page = await list_call(
            make_request(page=common_pb2.PageRequest(page_size=page_size, page_token=token)),
            metadata=metadata,
        )
        found = list(getattr(page, items_field))
        if len(found) > page_size:
            raise AssertionError(
                f"a page of {items_field} holds {len(found)} items, more than page_size={page_size}"
            )
        items += found
        token = page.page.next_page_token
        if not token:
            return items


async def expect_rpc_error(
    call: Awaitable[object], code: grpc.StatusCode, *details: str
) -> grpc.aio.AioRpcError:
    """Await `call`, assert it fails with `code` and that its details contain each of `details`."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() != code:
            raise AssertionError(
                f"expected {code.name}, got {error.code().name}: {error}"
            ) from None
        missing = [part for part in details if part not in (error.details() or "")]
        if missing:
            raise AssertionError(
                f"expected {missing!r} in the {code.name} details, got {error.details()!r}"
            ) from None
        return error
    raise AssertionError(f"expected the call to fail with {code.name}, but it succeeded")


async def expect_refused_without_tenant(*calls: Awaitable[object]) -> None:
    """Assert each call, made without an identity (which is what names the tenant now), is
    UNAUTHENTICATED saying the identity token is missing."""
    for call in calls:
        await expect_rpc_error(call, grpc.StatusCode.UNAUTHENTICATED, "no identity token")


_THROWAWAY_APP = '''"""A throw-away service written by a test: health, readiness, and the peers it was given."""

from typing import ClassVar

from edrs_core import Runtime, ServiceDefinition, ServiceSettings
from pydantic_settings import SettingsConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class {cls}Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_{upper}_")
    service_name: ClassVar[str] = "{name}"
    uses_redis: ClassVar[bool] = False


async def build(rt: Runtime[{cls}Settings]) -> list:
    return []


def http_routes(rt: Runtime[{cls}Settings]) -> list[Route]:
    async def peers(request: Request) -> JSONResponse:
        return JSONResponse({{"service": rt.settings.service_name, "peers": rt.settings.peers}})

    return [Route("/{name}/peers", peers)]


definition = ServiceDefinition(settings_cls={cls}Settings, build=build, http_routes=http_routes)
'''


def write_service_folder(services_dir: Path, name: str) -> Path:
    """Write a tiny real service, as a new service's folder looks, under ``services_dir/<name>``.

    It declares itself in its pyproject.toml and nowhere else; it serves health, metrics, gRPC
    health and ``GET /<name>/peers`` (its name and the peers it was given). Returns the folder.
    """
    folder = services_dir / name
    package = folder / "src" / f"edrs_{name}"
    package.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "edrs-{name}"\nversion = "0.0.1"\ndependencies = ["edrs-core"]\n\n'
        f'[project.entry-points."edrs.services"]\n{name} = "edrs_{name}.app:definition"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        f"from edrs_core import run_service\n\nfrom edrs_{name}.app import definition\n\n"
        "run_service(definition)\n"
    )
    (package / "app.py").write_text(
        _THROWAWAY_APP.format(name=name, upper=name.upper(), cls=name.capitalize())
    )
    return folder


async def publish_redelivered(bus: EventBus, event: BaseEvent) -> None:
    """Publish `event` twice under two dedup ids: a redelivery the broker cannot drop (as after a
    publisher's retry outside the dedup window), to prove a consumer's effects happen once."""
    first = bus.encode(event)
    await bus.publish_wire([first, replace(first, msg_id=f"{first.event_id}:again")])


async def metric_value(service: RunningService, name: str, **labels: str) -> float:
    """The sum of a running service's Prometheus samples `name` whose labels include `labels`
    (0 when there are none)."""
    import httpx

    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{service.metrics_url}/metrics")).text
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


# The browser the console's tests and benchmark drive: Debian's chromium (`make install` puts it
# there), never a browser downloaded by Playwright. Headless, and quiet: no update checks, no
# background fetches that would reach for the network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
)
