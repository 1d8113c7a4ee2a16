"""What the benchmarks share: engines and services started as processes, the development admin."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
from edrs_core.engines.ports import free_port
from edrs_core.testing import test_issuer
from edrs_gateway.identity.bootstrap import DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc

API = "/api/v1"
# Same as the test engines: the figures are about the gateway, not about disk flushes.
POSTGRES_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """A SIGTERM (a `kill`, a CI job's timeout) ends a benchmark as Ctrl-C does: its `with`
    blocks unwind and stop the services and engines it started, rather than leaving them running
    without their parent."""
    raise SystemExit(128 + signum)


# Every benchmark imports this module; a benchmark's own child processes that handle SIGTERM
# themselves (bench_events' consumers) install their handler after it.
signal.signal(signal.SIGTERM, _stop_on_sigterm)


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    http_url: str
    grpc_address: str


@contextmanager
def service(
    name: str, env: dict[str, str], log_dir: Path, *, start_within: float = 60.0
) -> Iterator[Service]:
    """`python -m edrs_<name>` on free ports, in development mode; stopped with SIGTERM.

    Services trust the test identity issuer (edrs_core.testing), whose tokens the benchmarks
    send; a gateway's own keys join that issuer's JWKS once it runs."""
    prefix = f"EDRS_{name.upper()}_"
    grpc_port, http_port = free_port(), free_port()
    identity = test_issuer().settings(name)
    values = {
        "EDRS_ENVIRONMENT": "development",
        f"{prefix}GRPC_PORT": str(grpc_port),
        f"{prefix}HTTP_PORT": str(http_port),
        f"{prefix}METRICS_PORT": str(free_port()),
        f"{prefix}LOG_LEVEL": "WARNING",
        **{f"{prefix}{key.upper()}": str(value) for key, value in identity.items()},
        **{f"{prefix}{key}": value for key, value in env.items()},
    }
    log = (log_dir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", f"edrs_{name}"],
        env={**os.environ, **values},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    svc = Service(name, process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    try:
        wait_started(svc, log_dir / f"{name}.log", start_within)
        if name == "gateway":
            test_issuer().trust(f"{svc.http_url}{API}/.well-known/fleet-jwks.json")
        yield svc
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def fleet_service(
    stack: ExitStack,
    name: str,
    root: Path,
    env: dict[str, str],
    peers: Sequence[Service] = (),
) -> Service:
    """`service(name, ...)` entered on `stack`, with `env` and the given peers (PEERS)."""
    if peers:
        env = {**env, "PEERS": json.dumps({p.name: p.grpc_address for p in peers})}
    return stack.enter_context(service(name, env, root))


def memory_service(
    stack: ExitStack, root: Path, bus_url: str, postgres: Any, redis: Any, reasoning: Service
) -> Service:
    """The memory service on the benchmark's engines (database `bench_memory`, Redis db 2)."""
    env = {"BUS_URL": bus_url, "DATABASE_URL": postgres.url("bench_memory")}
    return fleet_service(stack, "memory", root, {**env, "REDIS_URL": redis.url(2)}, [reasoning])


def persona_and_gateway(
    stack: ExitStack,
    root: Path,
    bus_url: str,
    postgres: Any,
    redis: Any,
    reasoning: Service,
    memory: Service,
    others: Sequence[Service] = (),
) -> tuple[Service, Service]:
    """The persona service and the gateway in front of the fleet (Redis dbs 1 and 0); `others`
    (knowledge, say) are peers of both too."""
    persona = fleet_service(
        stack,
        "persona",
        root,
        {
            "BUS_URL": bus_url,
            "DATABASE_URL": postgres.url("bench_persona"),
            "REDIS_URL": redis.url(1),
        },
        [memory, reasoning, *others],
    )
    gateway = fleet_service(
        stack,
        "gateway",
        root,
        {
            "BUS_URL": bus_url,
            "DATABASE_URL": postgres.url("bench_gateway"),
            "REDIS_URL": redis.url(0),
        },
        [persona, memory, reasoning, *others],
    )
    return persona, gateway


def wait_started(svc: Service, log_path: Path, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if svc.process.poll() is not None:
            raise SystemExit(f"{svc.name} exited at start:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{svc.http_url}/health/startup", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a child process's start-up; there is nothing to await
    raise SystemExit(f"{svc.name} did not start within {within}s:\n{log_path.read_text()[-3000:]}")


async def dev_admin_headers(gateway: Service) -> dict[str, str]:
    """A bearer token of the development admin, whom the gateway creates on its first start."""
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        tenants = await gateway_pb2_grpc.TenantServiceStub(channel).ListTenants(
            gateway_pb2.ListTenantsRequest(), metadata=test_issuer().operator_metadata()
        )
    tenant_id = tenants.tenants[0].id
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        reply = await client.post(
            f"{API}/auth/token",
            json={
                "grantType": "password",
                "tenantId": tenant_id,
                "email": DEV_ADMIN_EMAIL,
                "password": DEV_ADMIN_PASSWORD,
            },
        )
    if reply.status_code != 200:
        raise SystemExit(f"could not get a token: {reply.status_code} {reply.text}")
    return {"Authorization": f"Bearer {reply.json()['accessToken']}"}


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 of `samples` (seconds), in milliseconds."""
    cuts = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p95": cuts[94] * 1000, "p99": cuts[98] * 1000}


@contextmanager
def peak_rss(pids: dict[str, int]) -> Iterator[dict[str, float]]:
    """Samples the processes' resident memory every 100 ms; yields name → peak MiB."""
    peak = {name: 0.0 for name in pids}
    stop = threading.Event()

    def sample() -> None:
        while True:
            for name, pid in pids.items():
                with suppress(psutil.NoSuchProcess):
                    rss = psutil.Process(pid).memory_info().rss / 2**20
                    peak[name] = max(peak[name], rss)
            if stop.wait(0.1):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
