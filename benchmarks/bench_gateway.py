"""Gateway benchmark: authenticated `GET /api/v1/personas/{id}` (one gRPC call) vs a bare endpoint.

Run `python benchmarks/bench_gateway.py`; it starts embedded PostgreSQL, Redis and NATS, the
persona and gateway services as processes, and a bare uvicorn app serving the same JSON, then
drives both from a separate load process with the same concurrency. It prints requests/s,
p50/p95/p99 latency, peak RSS and the ratio, and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from _harness import API, POSTGRES_SETTINGS, Service, dev_admin_headers, peak_rss, service
from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.ports import free_port
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.engines.redis import EmbeddedRedis


async def create_persona(gateway: Service, headers: dict[str, str]) -> dict[str, Any]:
    body = {"name": "Bench", "role": "benchmark subject", "skills": ["latency"], "tone": "brisk"}
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=headers) as client:
        reply = await client.post(f"{API}/personas", json=body)
    if reply.status_code == 404:
        raise SystemExit(
            "the gateway does not serve /api/v1/personas: include "
            "edrs_gateway.api.routes.personas.router in edrs_gateway.api.app.create_api"
        )
    if reply.status_code != 201:
        raise SystemExit(f"could not create a persona: {reply.status_code} {reply.text}")
    persona: dict[str, Any] = reply.json()
    return persona


# --- the bare endpoint -----------------------------------------------------------------------


def serve_bare(port: int, body: bytes) -> None:
    """A trivial FastAPI app on uvicorn answering the same JSON: the ceiling of the stack."""
    import uvicorn
    from fastapi import FastAPI, Response

    app = FastAPI()

    @app.get("/api/v1/personas/{persona_id}")
    async def persona(persona_id: str) -> Response:
        return Response(body, media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def bare_server(body: bytes) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=serve_bare, args=(port, body), daemon=True
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/api/v1/personas/x", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or not process.is_alive():
                raise SystemExit("the bare endpoint did not start") from None
            time.sleep(0.05)  # waiting for a child process to listen; nothing to await
    try:
        assert process.pid is not None
        yield url, process.pid
    finally:
        process.terminate()
        process.join(10)


# --- load ------------------------------------------------------------------------------------


def load_worker(url: str, headers: dict[str, str], count: int, concurrency: int, out: Any) -> None:
    """Runs in its own process so the client never shares the server's CPU time slice or loop."""
    out.send(asyncio.run(_drive(url, headers, count, concurrency)))


async def _drive(url: str, headers: dict[str, str], count: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    first_errors: dict[int, str] = {}
    remaining = count

    async def client_loop() -> None:
        nonlocal remaining
        # One client (one keep-alive connection) per simulated caller.
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                reply = await client.get(url)
                latencies.append(time.perf_counter() - started)
                statuses[reply.status_code] += 1
                if reply.status_code >= 400 and reply.status_code not in first_errors:
                    first_errors[reply.status_code] = reply.text[:300]

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "latencies": latencies,
        "elapsed": elapsed,
        "statuses": dict(statuses),
        "first_errors": first_errors,
        # Near 100% means the client, not the server, set the pace of this run.
        "client_cpu": (time.process_time() - cpu) / elapsed,
    }


def run_load(
    url: str, headers: dict[str, str], count: int, concurrency: int, pids: list[int]
) -> dict[str, Any]:
    """Drive `url` from a separate process; sample the servers' RSS meanwhile."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    worker = multiprocessing.get_context("spawn").Process(
        target=load_worker, args=(url, headers, count, concurrency, sender)
    )
    with peak_rss({str(pid): pid for pid in pids}) as peak:
        worker.start()
        result: dict[str, Any] = receiver.recv()
        worker.join()
    result["peak_rss_mib"] = {int(pid): mib for pid, mib in peak.items()}
    return result


def summary(result: dict[str, Any]) -> dict[str, float]:
    latencies = sorted(result["latencies"])
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "rps": len(latencies) / result["elapsed"],
        "p50": cuts[49] * 1000,
        "p95": cuts[94] * 1000,
        "p99": cuts[98] * 1000,
    }


def report(name: str, result: dict[str, Any], rss_names: dict[int, str]) -> dict[str, float]:
    s = summary(result)
    rss = ", ".join(
        f"{rss_names[pid]} {mib:.0f} MiB" for pid, mib in result["peak_rss_mib"].items()
    )
    print(
        f"{name:<34} {s['rps']:>8.0f} req/s   p50 {s['p50']:6.1f} ms   p95 {s['p95']:6.1f} ms   "
        f"p99 {s['p99']:6.1f} ms   statuses {result['statuses']} {result['first_errors'] or ''}   peak RSS: {rss}   "
        f"load client CPU {result['client_cpu']:.0%} of a core"
    )
    return s


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per target")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured requests first")
    args = parser.parse_args()

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gateway-")))
        postgres = stack.enter_context(
            EmbeddedPostgres(root / "postgres", settings=POSTGRES_SETTINGS)
        )
        redis = stack.enter_context(EmbeddedRedis(root / "redis"))
        nats = stack.enter_context(EmbeddedNats(root / "nats"))
        common = {"BUS_URL": nats.url()}
        persona = stack.enter_context(
            service(
                "persona",
                {
                    **common,
                    "DATABASE_URL": postgres.url("bench_persona"),
                    "REDIS_URL": redis.url(1),
                },
                root,
            )
        )
        gateway = stack.enter_context(
            service(
                "gateway",
                {
                    **common,
                    "DATABASE_URL": postgres.url("bench_gateway"),
                    "REDIS_URL": redis.url(0),
                    "PEERS": json.dumps({"persona": persona.grpc_address}),
                    # Every request still passes the Redis token bucket; the development tenant
                    # (enterprise) gets limits the load stays under, so the figures are of
                    # served requests, not of 429s.
                    "RATE_LIMIT_OVERRIDES": json.dumps(
                        {
                            "enterprise": {
                                "perMinute": 6_000_000,
                                "burst": 100_000,
                                "concurrency": 1000,
                            }
                        }
                    ),
                },
                root,
            )
        )
        headers = asyncio.run(dev_admin_headers(gateway))
        created = asyncio.run(create_persona(gateway, headers))
        gateway_url = f"{gateway.http_url}{API}/personas/{created['id']}"
        body = httpx.get(gateway_url, headers=headers).content
        bare_url, bare_pid = stack.enter_context(bare_server(body))
        bare_url = f"{bare_url}{API}/personas/{created['id']}"

        names = {gateway.process.pid: "gateway", persona.process.pid: "persona", bare_pid: "bare"}
        print(
            f"{args.requests} requests per target, {args.concurrency} concurrent clients, "
            f"{os.cpu_count()} CPUs; load from a separate process"
        )
        run_load(gateway_url, headers, args.warmup, args.concurrency, [])
        run_load(bare_url, {}, args.warmup, args.concurrency, [])
        bare = report(
            "bare uvicorn endpoint",
            run_load(bare_url, {}, args.requests, args.concurrency, [bare_pid]),
            names,
        )
        gw = report(
            "gateway GET persona (auth, 1 gRPC)",
            run_load(
                gateway_url,
                headers,
                args.requests,
                args.concurrency,
                [gateway.process.pid, persona.process.pid],
            ),
            names,
        )
        print(f"gateway / bare throughput ratio: {gw['rps'] / bare['rps']:.2f}")


if __name__ == "__main__":
    main()
