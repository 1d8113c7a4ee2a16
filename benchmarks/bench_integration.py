"""Integration benchmark: signed webhook deliveries/s to a local receiver, and the cost of a tool
call through the integration service beside a direct call of the same MCP tool.

Run `python benchmarks/bench_integration.py [--events 5000] [--calls 500]`; it starts its own
PostgreSQL, NATS and OpenBao, the integration service as a process (`python -m
edrs_integration`), a webhook receiver (uvicorn, _webhook_receiver.py) and an MCP server over
streamable HTTP (_mcp_echo_server.py) as processes; prints figures and asserts nothing about time.

1. Webhooks out: events published on the bus become deliveries (the service's consumer queues
   them, its dispatcher signs and posts them through the SSRF-safe client, allowed to reach
   127.0.0.1 by the operator's rule, as in the tests). The receiver verifies every delivery with
   the `standardwebhooks` library. Baseline, in the same run: the same receiver fed by a plain
   loop of signed POSTs with httpx (the library under the outbound client), as many in flight
   as the dispatcher sends at once.
2. Tool calls: CallTool over the integration service's gRPC (what a persona's tool round pays,
   the model aside) beside the `mcp` SDK's client calling the same tool of the same kind of
   server directly, over stdio and over streamable HTTP, one call after another.

With two or more cores, the senders run on core 0 (the integration service, the stdio MCP servers
started by it or by this driver, and this driver, which sends the baseline's POSTs and makes the
calls), the receivers on core 1 (the webhook receiver, the HTTP MCP server); the engines are not
pinned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import psutil
from edrs_core import testing
from edrs_core.engines import EmbeddedNats, EmbeddedOpenBao, EmbeddedPostgres
from edrs_core.engines.ports import free_port
from edrs_events import BaseEvent, connect_bus
from edrs_events.bus import EventBus
from edrs_proto.common.v1 import common_pb2
from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc, webhooks_pb2, webhooks_pb2_grpc
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment
from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).parent))
from _harness import POSTGRES_SETTINGS, percentiles, service

HERE = Path(__file__).parent
RECEIVER = str(HERE / "_webhook_receiver.py")
MCP_SERVER = str(HERE / "_mcp_echo_server.py")
TENANT = testing.tenant_metadata(f"bench-integration-{uuid.uuid4().hex[:6]}")
EVENT_TYPE = "task.task_created"
# The dispatcher's default (EDRS_INTEGRATION_WEBHOOK_CONCURRENCY): the baseline sends as many.
IN_FLIGHT = 32
GOAL_PER_S = 500.0
PINNING = {"on": True}


def pin(pid: int, core: int) -> None:
    """Run `pid` on `core` when the machine has more than one."""
    cores = sorted(os.sched_getaffinity(0))
    if PINNING["on"] and len(cores) > 1:
        os.sched_setaffinity(pid, {cores[core % len(cores)]})


def rss_mib(pid: int) -> float:
    """Peak resident memory of a running process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)  # polling another process's counters


def start_process(args: list[str], log: Path, core: int) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    pin(process.pid, core)
    return process


def tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    async def up() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited:\n{tail(log)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await wait_for(up, 60, f"{process.args!r} to listen")


# -- webhooks out --------------------------------------------------------------------------------


class Receiver:
    def __init__(self, base: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=60)

    async def secret(self, name: str, secret: str) -> None:
        (
            await self.http.post("/control/secret", json={"name": name, "secret": secret})
        ).raise_for_status()

    async def stats(self, name: str, full: bool = False) -> dict[str, Any]:
        reply = await self.http.get(f"/control/stats/{name}" + ("?full=1" if full else ""))
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
        return stats

    async def reset(self, name: str) -> None:
        (await self.http.post(f"/control/reset/{name}")).raise_for_status()

    async def wait_count(self, name: str, count: int, within: float) -> None:
        async def reached() -> bool:
            return int((await self.stats(name))["count"]) >= count

        await wait_for(reached, within, f"{count} deliveries at /hooks/{name}")


def task_event(n: int) -> BaseEvent:
    return BaseEvent(
        event_type=EVENT_TYPE,
        source_container="bench",
        client_id=testing.tenant_of(TENANT),
        payload={"task_id": f"t{n}", "title": f"benchmark task {n}", "persona_id": "p1"},
    )


async def publish(
    bus: EventBus, count: int, rate: float | None, batch: int = 100
) -> dict[str, float]:
    """Publish `count` events in batches (at `rate`/s, or as fast as the broker takes them);
    returns event id → wall-clock time its batch was handed to the bus."""
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for start in range(0, count, batch):
        events = [task_event(n) for n in range(start, min(start + batch, count))]
        now = time.time()
        await bus.publish_many(events)
        sent.update((str(e.event_id), now) for e in events)
        if rate is not None:
            due = started + (start + batch) / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    return sent


async def stages(dsn: str, since: float) -> tuple[float, float]:
    """Deliveries queued per second by the service's consumer, and first attempts made per
    second by its dispatcher, since `since` (from the service's own rows)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS n,
                      extract(epoch FROM max(d.created_at) - min(d.created_at)) AS queued,
                      extract(epoch FROM max(a.attempted_at) - min(a.attempted_at)) AS sent
               FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
               WHERE d.created_at >= to_timestamp($1) AND a.number = 1""",
            since,
        )
    finally:
        await conn.close()
    assert row is not None
    n = row["n"]
    return n / float(row["queued"] or "nan"), n / float(row["sent"] or "nan")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def edrs_deliveries(
    bus: EventBus, receiver: Receiver, dsn: str, service_pid: int, count: int, rate: float | None
) -> dict[str, Any]:
    await receiver.reset("edrs")
    cpu_before = cpu_seconds(service_pid)
    began = time.time()
    sent = await publish(bus, count, rate)
    published_in = time.time() - began
    await receiver.wait_count("edrs", count, within=max(600.0, count / 5))
    cpu_ms = (cpu_seconds(service_pid) - cpu_before) * 1000 / count
    stats = await receiver.stats("edrs", full=True)
    receipts = {event_id: at for event_id, at in stats["receipts"]}
    latencies = [receipts[e] - t for e, t in sent.items() if e in receipts]
    first, last = min(receipts.values()), max(receipts.values())
    queued_per_s, sent_per_s = await stages(dsn, began)
    return {
        "queued_per_s": queued_per_s,
        "cpu_ms": cpu_ms,
        "sent_per_s": sent_per_s,
        "per_s": count / (last - began),
        "dispatch_per_s": count / (last - first) if last > first else float("nan"),
        "published_per_s": count / published_in,
        "received": stats["count"],
        "distinct": stats["distinct"],
        "refused": stats["refused"],
        "missing": len(sent) - len(latencies),
        "samples": latencies,
        **percentiles(latencies),
    }


async def baseline_posts(url: str, receiver: Receiver, count: int) -> dict[str, Any]:
    """Signed POSTs with httpx and the `standardwebhooks` signer, IN_FLIGHT at once: no bus, no
    database, no secret store, no outbound policy."""
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    await receiver.secret("baseline", secret)
    signer = Webhook(secret)
    gate = asyncio.Semaphore(IN_FLIGHT)
    latencies: list[float] = []

    async with httpx.AsyncClient(timeout=30) as client:

        async def post(n: int) -> None:
            async with gate:
                event = task_event(n)
                body = json.dumps(
                    {
                        "type": event.event_type,
                        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
                        "id": str(event.event_id),
                        "data": event.payload,
                    },
                    separators=(",", ":"),
                )
                msg_id = f"msg_{uuid.uuid4().hex}"
                now = datetime.now(UTC)
                headers = {
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.sign(msg_id, now, body),
                    "content-type": "application/json",
                }
                started = time.perf_counter()
                reply = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                reply.raise_for_status()

        await asyncio.gather(*(post(n) for n in range(20)))  # warm-up: connections opened
        await receiver.reset("baseline")
        latencies.clear()
        began = time.perf_counter()
        await asyncio.gather(*(post(n) for n in range(count)))
        elapsed = time.perf_counter() - began
    stats = await receiver.stats("baseline")
    return {
        "per_s": count / elapsed,
        "received": stats["count"],
        "refused": stats["refused"],
        "samples": list(latencies),
        **percentiles(latencies),
    }


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate (its counters), with the rates' range and the percentiles of every
    run's samples together."""
    ordered = sorted(runs, key=lambda run: float(run["per_s"]))
    middle = ordered[len(ordered) // 2]
    samples = [x for run in runs for x in run["samples"]]
    return {
        **middle,
        "low_per_s": ordered[0]["per_s"],
        "high_per_s": ordered[-1]["per_s"],
        "runs": len(runs),
        **percentiles(samples),
    }


async def bench_webhooks(
    channel: grpc.aio.Channel,
    bus_url: str,
    dsn: str,
    service_pid: int,
    receiver_url: str,
    count: int,
    rate: float,
    repeats: int,
) -> dict[str, Any]:
    hooks = webhooks_pb2_grpc.WebhookServiceStub(channel)
    receiver = Receiver(receiver_url)
    made = await hooks.CreateSubscription(
        webhooks_pb2.CreateSubscriptionRequest(
            url=f"{receiver_url}/hooks/edrs", event_types=[EVENT_TYPE], enabled=True
        ),
        metadata=TENANT,
    )
    await receiver.secret("edrs", made.secret)
    bus = await connect_bus(bus_url, name="bench-integration")
    bursts, baselines = [], []
    try:
        # Warm-up: the consumer, the dispatcher's connections and its secret cache.
        await publish(bus, 50, None)
        await receiver.wait_count("edrs", 50, within=120)
        # EDRS and the baseline take turns, so that both meet the same load of the machine.
        for _ in range(repeats):
            bursts.append(await edrs_deliveries(bus, receiver, dsn, service_pid, count, None))
            baselines.append(
                await baseline_posts(f"{receiver_url}/hooks/baseline", receiver, count)
            )
        paced = await edrs_deliveries(bus, receiver, dsn, service_pid, max(200, count // 5), rate)
    finally:
        await bus.close()
    log = await hooks.ListDeliveries(
        webhooks_pb2.ListDeliveriesRequest(
            subscription_id=made.subscription.id, page=common_pb2.PageRequest(page_size=1)
        ),
        metadata=TENANT,
    )
    await receiver.http.aclose()
    return {
        "burst": combined(bursts),
        "paced": paced,
        "baseline": combined(baselines),
        "last": log.deliveries[0],
    }


# -- tool calls ----------------------------------------------------------------------------------


Call = Callable[[str], Awaitable[str]]


async def timed_calls(call: Call, count: int) -> dict[str, Any]:
    samples = []
    began = time.perf_counter()
    for n in range(count):
        text = f"call {n}"
        started = time.perf_counter()
        answer = await call(text)
        samples.append(time.perf_counter() - started)
        if answer != text:
            raise SystemExit(f"the echo tool answered {answer!r} to {text!r}")
    return {"per_s": count / (time.perf_counter() - began), "samples": samples}


async def compare(
    service_call: Call, direct_call: Call, count: int, repeats: int, service_pid: int
) -> Any:
    """`count` calls each way, in `repeats` alternating blocks after a warm-up of each; with the
    integration service's CPU time per call through it."""
    for n in range(20):
        await service_call(f"warm {n}")
        await direct_call(f"warm {n}")
    service_runs, direct_runs = [], []
    cpu = 0.0
    for _ in range(repeats):
        before = cpu_seconds(service_pid)
        service_runs.append(await timed_calls(service_call, count // repeats))
        cpu += cpu_seconds(service_pid) - before
        direct_runs.append(await timed_calls(direct_call, count // repeats))
    through = combined(service_runs)
    through["cpu_ms"] = cpu * 1000 / (repeats * (count // repeats))
    return through, combined(direct_runs)


def service_caller(stub: tools_pb2_grpc.ToolServiceStub, server: tools_pb2.McpServer) -> Call:
    name = f"{server.name}__echo"

    async def call(text: str) -> str:
        reply = await stub.CallTool(
            tools_pb2.CallToolRequest(name=name, arguments=json.dumps({"text": text})),
            metadata=TENANT,
        )
        if reply.is_error:
            raise SystemExit(f"CallTool failed: {reply.content}")
        return str(reply.content)

    return call


def direct_caller(client: Client) -> Call:
    async def call(text: str) -> str:
        result = await client.call_tool("echo", {"text": text})
        return "".join(getattr(block, "text", "") for block in result.content)

    return call


async def bench_tools(
    channel: grpc.aio.Channel, mcp_url: str, count: int, repeats: int, service_pid: int
) -> dict[str, Any]:
    stub = tools_pb2_grpc.ToolServiceStub(channel)
    stdio = await stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name="echo-stdio",
            transport=tools_pb2.MCP_TRANSPORT_STDIO,
            command=sys.executable,
            args=[MCP_SERVER, "stdio"],
        ),
        metadata=TENANT,
    )
    http = await stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name="echo-http", transport=tools_pb2.MCP_TRANSPORT_HTTP, url=mcp_url
        ),
        metadata=TENANT,
    )
    params = StdioServerParameters(
        command=sys.executable, args=[MCP_SERVER, "stdio"], env=get_default_environment()
    )
    found = {}
    async with Client(params, cache=None, mode="legacy") as client:
        found["stdio"] = await compare(
            service_caller(stub, stdio), direct_caller(client), count, repeats, service_pid
        )
    async with Client(mcp_url, cache=None, mode="legacy") as client:
        found["http"] = await compare(
            service_caller(stub, http), direct_caller(client), count, repeats, service_pid
        )
    return found


# -- report --------------------------------------------------------------------------------------


def line(run: dict[str, float]) -> str:
    return f"p50 {run['p50']:7.2f} ms, p95 {run['p95']:7.2f} ms, p99 {run['p99']:7.2f} ms"


def span(run: dict[str, Any]) -> str:
    return f"{run['low_per_s']:.1f}-{run['high_per_s']:.1f}"


def report(
    hooks: dict[str, Any], tools: dict[str, Any], peaks: dict[str, float], args: Any, cores: int
) -> None:
    burst, paced, base = hooks["burst"], hooks["paced"], hooks["baseline"]
    where = (
        "service and driver on core 0, receiver and HTTP MCP server on core 1"
        if PINNING["on"] and cores > 1
        else "not pinned"
    )
    print(f"integration benchmark ({cores} cores; {where})")
    print(
        f"webhooks out: {args.events} events of {EVENT_TYPE}, one subscription, receiver "
        "verifying every delivery with standardwebhooks"
    )
    print(
        f"  EDRS, events published unpaced:  {burst['per_s']:8.1f} deliveries/s end to end, "
        f"median of {burst['runs']} runs ({span(burst)}/s)"
    )
    print(
        f"    median run: dispatcher {burst['dispatch_per_s']:.1f}/s from first to last receipt; "
        f"the bus took {burst['published_per_s']:.0f} events/s"
    )
    print(
        f"    stages: consumer queued {burst['queued_per_s']:.1f} deliveries/s, dispatcher made "
        f"{burst['sent_per_s']:.1f} first attempts/s; the service's CPU "
        f"{burst['cpu_ms']:.2f} ms per delivery"
    )
    print(f"    published -> received         {line(burst)} (queueing behind the burst)")
    print(
        f"    received {burst['received']}, distinct webhook-ids {burst['distinct']}, refused "
        f"{burst['refused']}, missing {burst['missing']}"
    )
    print(
        f"  EDRS, {paced['received']} events at {args.rate:.0f}/s:  "
        f"{paced['per_s']:8.1f} deliveries/s end to end"
    )
    print(f"    published -> received         {line(paced)}")
    print(
        f"  baseline, httpx signed-POST loop ({IN_FLIGHT} in flight): {base['per_s']:8.1f} "
        f"deliveries/s, median of {base['runs']} runs ({span(base)}/s)"
    )
    print(f"    request                       {line(base)}")
    print(f"  ratio EDRS (unpaced) / baseline: {burst['per_s'] / base['per_s']:.2f}")
    met = "met" if burst["per_s"] >= GOAL_PER_S else "NOT met"
    print(f"  goal >= {GOAL_PER_S:.0f} deliveries/s: {met} ({burst['per_s']:.0f}/s)")
    last = hooks["last"]
    print(
        f"  the delivery log's last entry: state {webhooks_pb2.DeliveryState.Name(last.state)}, "
        f"attempts {[a.status_code for a in last.attempts]}"
    )
    print(
        f"tool calls: {args.calls} sequential calls of a trivial MCP tool (echo) each way, in "
        f"{args.repeats} alternating blocks; calls/s is the median block's"
    )
    for transport, (service_run, direct_run) in tools.items():
        print(
            f"  {transport:5s} through CallTool (gRPC): {service_run['per_s']:7.1f} calls/s "
            f"({span(service_run)}), {line(service_run)}; the service's CPU "
            f"{service_run['cpu_ms']:.2f} ms per call"
        )
        print(
            f"  {transport:5s} direct (mcp SDK Client):  {direct_run['per_s']:7.1f} calls/s "
            f"({span(direct_run)}), {line(direct_run)}"
        )
        print(
            f"  {transport:5s} overhead per round: p50 "
            f"{service_run['p50'] - direct_run['p50']:+.2f} ms, p95 "
            f"{service_run['p95'] - direct_run['p95']:+.2f} ms, p99 "
            f"{service_run['p99'] - direct_run['p99']:+.2f} ms; ratio p50 "
            f"{service_run['p50'] / direct_run['p50']:.2f}"
        )
    print("  peak RSS: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in peaks.items()))


async def main(args: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-integration-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        pg = stack.enter_context(EmbeddedPostgres(root / "pg", settings=POSTGRES_SETTINGS))
        nats_server = stack.enter_context(EmbeddedNats(root / "nats"))
        bao = stack.enter_context(EmbeddedOpenBao(root / "bao"))
        pin(0, 0)  # the driver (after the engines, which stay unpinned)
        receiver_port, mcp_port = free_port(), free_port()
        processes = {
            "receiver": start_process([RECEIVER, str(receiver_port)], root / "receiver.log", 1),
            "mcp-http": start_process(
                [MCP_SERVER, "http", str(mcp_port)], root / "mcp-http.log", 1
            ),
        }
        try:
            await listening(receiver_port, processes["receiver"], root / "receiver.log")
            await listening(mcp_port, processes["mcp-http"], root / "mcp-http.log")
            integration = stack.enter_context(
                service(
                    "integration",
                    {
                        "DATABASE_URL": pg.url("bench_integration"),
                        "BUS_URL": nats_server.url(),
                        "VAULT_ADDRESS": bao.url(),
                        "VAULT_TOKEN": bao.root_token,
                        "VAULT_PATH_PREFIX": "edrs-bench",
                        # The operator's rules, as in the tests: loopback receivers and MCP
                        # servers, stdio servers run by this Python.
                        "OUTBOUND_ALLOW": "127.0.0.1",
                        "MCP_STDIO_COMMANDS": sys.executable,
                    },
                    root,
                )
            )
            pin(integration.process.pid, 0)
            receiver_url = f"http://127.0.0.1:{receiver_port}"
            async with grpc.aio.insecure_channel(integration.grpc_address) as channel:
                hooks = await bench_webhooks(
                    channel,
                    nats_server.url(),
                    pg.url("bench_integration"),
                    integration.process.pid,
                    receiver_url,
                    args.events,
                    args.rate,
                    args.repeats,
                )
                tools = await bench_tools(
                    channel,
                    f"http://127.0.0.1:{mcp_port}/mcp",
                    args.calls,
                    args.repeats,
                    integration.process.pid,
                )
            peaks = {
                "integration service": rss_mib(integration.process.pid),
                "receiver": rss_mib(processes["receiver"].pid),
                "MCP HTTP server": rss_mib(processes["mcp-http"].pid),
                "driver": rss_mib(os.getpid()),
            }
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(10)
    report(hooks, tools, peaks, args, cores)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="webhook events per run")
    parser.add_argument("--rate", type=float, default=250.0, help="paced run's events/s")
    parser.add_argument("--calls", type=int, default=600, help="tool calls per path")
    parser.add_argument(
        "--repeats", type=int, default=3, help="webhook bursts, and blocks of tool calls, per path"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="leave every process to the scheduler"
    )
    args = parser.parse_args()
    PINNING["on"] = not args.no_pin
    asyncio.run(main(args))
