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

import _wrk as wrk
import httpx
import psutil
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# --- profile ---------------------------------------------------------------------------------


def profile_run(
    out: Path,
    url: str,
    headers: dict[str, str],
    pids: dict[str, int],
    *,
    seconds: float,
    connections: int,
    cpu: int | None,
) -> None:
    """py-spy (sampling, from outside the process) on each server during one more wrk run."""
    import shutil
    import subprocess
    import sys

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    recorders = {
        name: subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out / f"{name}.folded"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for name, pid in pids.items()
    }
    result = wrk.run(url, seconds=seconds, connections=connections, headers=headers, cpu=cpu)
    for recorder in recorders.values():
        recorder.wait(60)
    print(f"profiled run: {result.rps:.0f} req/s; collapsed stacks in {out}")
    for name in pids:
        folded = out / f"{name}.folded"
        if folded.exists():
            summary = summarise(folded)
            (out / f"{name}.summary.txt").write_text(summary)
            print(f"--- {name}: share of samples per function (inclusive), top 25")
            print("\n".join(summary.splitlines()[:25]))


def summarise(folded: Path) -> str:
    """Inclusive share of samples per function (`function (file:line)` frames of py-spy)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        seen = set()
        for frame in stack.split(";"):
            name = (
                frame.split(" (")[0]
                + " ("
                + frame.split(" (")[-1].split(":")[0].split("/")[-1]
                + ")"
                if " (" in frame
                else frame
            )
            if name not in seen:
                seen.add(name)
                inclusive[name] += count
    return (
        "\n".join(f"{count / total:6.1%}  {name}" for name, count in inclusive.most_common(200))
        if total
        else "no samples"
    )


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of one measured run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per target (median)")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first")
    parser.add_argument(
        "--profile",
        type=Path,
        help="also profile the gateway and persona processes with py-spy during one extra run "
        "and write collapsed stacks and a per-function summary here",
    )
    args = parser.parse_args()

    # Everything this script starts (engines, services, the bare endpoint) inherits this
    # affinity: the servers share core 0, wrk runs alone on core 1.
    server_cpus, client_cpu = ({0}, 1) if (os.cpu_count() or 1) > 1 else (None, None)
    if server_cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, server_cpus)

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
                                "perMinute": 60_000_000,
                                "burst": 1_000_000,
                                "concurrency": 10_000,
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

        targets = {
            "bare FastAPI endpoint": (bare_url, {}, {bare_pid: "bare"}),
            "gateway GET persona (auth, 1 gRPC)": (
                gateway_url,
                headers,
                {gateway.process.pid: "gateway", persona.process.pid: "persona"},
            ),
        }
        print(
            f"wrk: 1 thread on core {client_cpu}, {args.connections} connections, "
            f"{args.runs} runs of {args.seconds:.0f} s per target (median shown), servers on "
            f"core(s) {sorted(server_cpus) if server_cpus else 'any'}; {os.cpu_count()} CPUs"
        )
        for url, hdrs, _ in targets.values():
            wrk.run(
                url, seconds=args.warmup, connections=args.connections, headers=hdrs, cpu=client_cpu
            )
        results: dict[str, list[wrk.WrkResult]] = {name: [] for name in targets}
        peaks: dict[str, dict[str, float]] = {name: {} for name in targets}
        # Alternate the targets so a slow phase of the machine hits both alike.
        # CPU time each server spent per request served: unlike throughput, it hardly moves
        # when something else on the machine takes CPU, so it compares runs of different days.
        cpu_ms: dict[str, dict[str, list[float]]] = {name: {} for name in targets}
        for _ in range(args.runs):
            for name, (url, hdrs, pids) in targets.items():
                before = {pid: cpu_seconds(pid) for pid in pids}
                with peak_rss({label: pid for pid, label in pids.items()}) as peak:
                    result = wrk.run(
                        url,
                        seconds=args.seconds,
                        connections=args.connections,
                        headers=hdrs,
                        cpu=client_cpu,
                    )
                results[name].append(result)
                for pid, label in pids.items():
                    spent = cpu_seconds(pid) - before[pid]
                    cpu_ms[name].setdefault(label, []).append(
                        spent * 1000 / max(1, result.requests)
                    )
                for label, mib in peak.items():
                    peaks[name][label] = max(peaks[name].get(label, 0.0), mib)
        medians = {name: wrk.median_run(runs) for name, runs in results.items()}
        for name, m in medians.items():
            rss = ", ".join(f"{label} {mib:.0f} MiB" for label, mib in peaks[name].items())
            # The median, and the lowest run: CPU taken by other work on the machine only ever
            # adds to a run's figure (shared caches, frequency), so the lowest is the least
            # disturbed one.
            cpu = ", ".join(
                f"{label} {statistics.median(values):.2f} (lowest {min(values):.2f})"
                for label, values in cpu_ms[name].items()
            )
            spread = ", ".join(f"{r.rps:.0f}" for r in results[name])
            print(
                f"{name:<36} {m.rps:>8.0f} req/s   p50 {m.p50_ms:6.1f} ms   p95 {m.p95_ms:6.1f} ms"
                f"   p99 {m.p99_ms:6.1f} ms   non-2xx {m.non_2xx}   socket errors "
                f"{m.socket_errors}   runs [{spread}] req/s   CPU ms/request: {cpu}   "
                f"peak RSS: {rss}"
            )
        gw, bare = medians["gateway GET persona (auth, 1 gRPC)"], medians["bare FastAPI endpoint"]
        print(f"gateway / bare throughput ratio: {gw.rps / bare.rps:.2f}")
        if args.profile is not None:
            profile_run(
                args.profile,
                gateway_url,
                headers,
                {"gateway": gateway.process.pid, "persona": persona.process.pid},
                seconds=args.seconds,
                connections=args.connections,
                cpu=client_cpu,
            )


if __name__ == "__main__":
    main()
