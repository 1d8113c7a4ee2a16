"""The service runtime as a real process and in-process: health, metrics, shutdown, readiness."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from edrs_core.engines.ports import free_port
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.testing import (
    HTTP_TIMEOUT,
    running_service,
    tenant_metadata,
    test_issuer,
    wait_until,
)
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


async def http_status(url: str) -> int | None:
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            return (await client.get(url)).status_code
    except httpx.HTTPError:
        return None


AS_USER = tenant_metadata("tenant-slow")


@pytest.fixture
def slow_service(postgres_engine, redis_engine, nats_engine, tmp_path):
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    env = {
        **os.environ,
        "EDRS_ENVIRONMENT": "development",
        "EDRS_SLOW_GRPC_PORT": str(ports["grpc"]),
        "EDRS_SLOW_HTTP_PORT": str(ports["http"]),
        "EDRS_SLOW_METRICS_PORT": str(ports["metrics"]),
        "EDRS_SLOW_DATABASE_URL": postgres_engine.url("test_slow"),
        "EDRS_SLOW_REDIS_URL": redis_engine.url(9),
        "EDRS_SLOW_NATS_URL": nats_engine.url(),
        "EDRS_SLOW_SHUTDOWN_GRACE_SECONDS": "10",
        "EDRS_SLOW_READINESS_CACHE_SECONDS": "0",
        # Calls carry tokens of the test issuer, which this service is told to trust.
        "EDRS_SLOW_JWKS_URL": test_issuer().jwks_url,
    }
    log_path = tmp_path / "slow.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "slow_service.py")], env=env, stdout=log, stderr=log
        )
    yield proc, ports, log_path
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def test_sigterm_drains_in_flight_call_and_refuses_new_ones(slow_service) -> None:
    proc, ports, log_path = slow_service
    ready = f"http://127.0.0.1:{ports['http']}/health/readiness"
    await wait_until(lambda: _is(ready, 200), 30, "readiness")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
        stub = persona_pb2_grpc.PersonaServiceStub(channel)
        # Held until the test sends SIGUSR1: the service is draining for as long as
        # the test needs, not for as long as a sleep happens to last.
        in_flight = asyncio.ensure_future(
            stub.GetPersona(persona_pb2.GetPersonaRequest(id="hold"), metadata=AS_USER)
        )
        await wait_until(lambda: _logged(log_path, "call in flight"), 30, "the held call to start")
        proc.send_signal(signal.SIGTERM)
        # Draining, not gone: readiness still answers, with 503.
        await wait_until(lambda: _is(ready, 503), 30, "readiness to turn false")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await persona_pb2_grpc.PersonaServiceStub(fresh).GetPersona(
                    persona_pb2.GetPersonaRequest(id="0"), timeout=3, metadata=AS_USER
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # The refusal came while the server was draining: it is still running, its held call
        # still in flight, its readiness still served.
        assert proc.poll() is None and not in_flight.done()
        assert await http_status(ready) == 503
        proc.send_signal(signal.SIGUSR1)
        reply = await in_flight
    assert reply.name == "finished"
    assert await asyncio.to_thread(proc.wait, 15) == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any("draining" in line["message"] for line in lines)
    assert lines[-1]["message"] == "slow stopped"


async def test_health_endpoints_grpc_health_and_metrics(slow_service) -> None:
    proc, ports, _ = slow_service
    base = f"http://127.0.0.1:{ports['http']}"
    await wait_until(lambda: _is(f"{base}/health/readiness", 200), 30, "readiness")
    assert await http_status(f"{base}/health/liveness") == 200
    assert await http_status(f"{base}/health/startup") == 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await persona_pb2_grpc.PersonaServiceStub(channel).GetPersona(
            persona_pb2.GetPersonaRequest(id="0"), metadata=AS_USER
        )
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        text = (await client.get(f"http://127.0.0.1:{ports['metrics']}/metrics")).text
    assert (
        'edrs_grpc_server_requests_total{code="OK",method="/edrs.persona.v1.PersonaService/GetPersona",service="slow"}'
        in text
    )
    assert "edrs_grpc_server_duration_seconds_bucket" in text
    assert 'edrs_http_server_requests_total{method="GET",route="/health/liveness"' in text
    assert "process_resident_memory_bytes" in text
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0


async def test_readiness_follows_postgres_down_and_back(
    tmp_path, redis_engine, nats_engine
) -> None:
    definition = _load_slow_definition()
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg.start()
    try:
        async with running_service(
            definition,
            database_url=pg.url("readiness"),
            redis_url=redis_engine.url(9),
            bus_url=nats_engine.url(),
        ) as svc:
            url = f"{svc.http_url}/health/readiness"
            assert await http_status(url) == 200
            await asyncio.to_thread(pg.stop)
            await wait_until(lambda: _is(url, 503), 15, "readiness to fail with PostgreSQL down")
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
                body = (await client.get(url)).json()
            assert body["checks"]["postgres"] != "ok"
            assert body["checks"]["redis"] == "ok"
            await asyncio.to_thread(pg.start)
            await wait_until(lambda: _is(url, 200), 15, "readiness to recover")
    finally:
        pg.stop()


async def _is(url: str, status: int, allow_down: bool = False) -> bool:
    got = await http_status(url)
    return got == status or (allow_down and got is None)


async def _logged(path: Path, text: str) -> bool:
    return text in await asyncio.to_thread(path.read_text)


def _load_slow_definition():
    spec = importlib.util.spec_from_file_location("slow_service", HERE / "slow_service.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.definition
