"""Events benchmark: outbox -> relay -> NATS JetStream -> consumer with inbox, against raw publishing.

Run `python benchmarks/bench_events.py`; it starts its own nats-server and embedded PostgreSQL,
prints figures and asserts nothing about time. Three measurements, all in the same run so they
compare:

- raw JetStream publish: one process publishing the same envelope bytes with pipelined acks
  (nats-py `publish_async`, bounded pending), the ceiling the event path runs under;
- sustained: a producer process writes `--rate` events/s into the outbox (in transactions of
  1/100 s worth) for `--warmup` + `--duration` seconds, the relay process (`python -m
  edrs_events.relay`) publishes them, a consumer process handles them through the inbox (one
  effect row per event, in the inbox's transaction); measured over the `--duration` window;
- as fast as possible: the producer writes `--burst-events` events unpaced, the same pipeline
  drains them.

For each: events produced, consumed (distinct effect rows), lost and duplicated (counted in the
database, not assumed), end-to-end latency from the event's creation (`occurred_at`, set by the
producer) to the return of the consumer's handler (its transaction committed), p50/p95/p99, CPU
milliseconds per event of every process (producer, relay, consumer, nats-server, PostgreSQL:
psutil CPU time over the window divided by the events that process moved in it), and peak RSS.
The CPU figures barely move when something else on the machine takes CPU; the rates do.

`--profile DIR` records py-spy profiles (raw collapsed stacks) of the relay and the consumer
during the sustained run and prints the top inclusive functions of each.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import uvloop

EVENT_TYPE = "task.task_created"
RAW_STREAM = "RAW_BENCH"
WRITERS = 4  # the producer's concurrent outbox writers


def sample_event(n: int) -> Any:
    from edrs_events import BaseEvent

    return BaseEvent(
        event_type=EVENT_TYPE,
        source_container="bench",
        client_id="bench-tenant",
        payload={"task_id": f"t{n}", "title": f"benchmark task {n}", "persona_id": "p1"},
    )


# --- the processes -----------------------------------------------------------------------------


async def role_raw(args: argparse.Namespace) -> None:
    """Publish `--count` envelopes straight to JetStream with pipelined acks (bounded pending)."""
    import nats
    from edrs_events import WireMessage

    nc = await nats.connect(args.nats_url)
    pending = args.max_pending
    js = nc.jetstream(publish_async_max_pending=pending)
    await js.add_stream(name=RAW_STREAM, subjects=["raw.bench.>"])
    message = WireMessage.of(sample_event(0))
    headers = message.headers()
    started, cpu = time.perf_counter(), time.process_time()
    window: list[asyncio.Future[Any]] = []
    for n in range(args.count):
        window.append(
            await js.publish_async(
                "raw.bench.task_created",
                message.body,
                headers={**headers, "Nats-Msg-Id": f"raw-{n}"},
            )
        )
        if len(window) >= pending:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await js.delete_stream(RAW_STREAM)
    await nc.close()
    write_result(
        args.out,
        {"count": args.count, "seconds": elapsed, "cpu_s": cpu, "bytes": len(message.body)},
    )


async def role_producer(args: argparse.Namespace) -> None:
    """Write events into the outbox: `--rate`/s for `--seconds`, or `--count` unpaced.

    `WRITERS` connections write at once (as a service's concurrent requests do), each its share
    in transactions of 10 ms worth of events, so commit latency does not cap the rate."""
    from edrs_events.outbox import Outbox

    outbox = Outbox()
    total = int(args.rate * args.seconds) if args.rate else args.count
    share = [total // WRITERS + (1 if w < total % WRITERS else 0) for w in range(WRITERS)]
    behind = [0.0] * WRITERS
    started, cpu = time.perf_counter(), time.process_time()

    async def writer(w: int) -> None:
        conn = await asyncpg.connect(args.dsn)
        rate = args.rate / WRITERS if args.rate else 0.0
        batch = max(1, int(rate / 100)) if rate else 200
        done = 0
        while done < share[w]:
            events = [sample_event(w * total + n) for n in range(done, min(done + batch, share[w]))]
            async with conn.transaction():
                await outbox.add_many(conn, events)
            done += len(events)
            if rate:
                due = started + done / rate
                now = time.perf_counter()
                behind[w] = max(behind[w], now - due)
                if due > now:
                    await asyncio.sleep(due - now)
        await conn.close()

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    write_result(
        args.out,
        {"produced": total, "seconds": elapsed, "cpu_s": cpu, "max_behind_s": max(behind)},
    )


async def role_consumer(args: argparse.Namespace) -> None:
    """Consume through the inbox (one effect row per event) until SIGTERM; then write stats."""
    from edrs_events import BaseEvent, ConsumerOptions
    from edrs_events.inbox import Inbox
    from edrs_events.nats_bus import NatsBus

    pool = await asyncpg.create_pool(args.dsn, min_size=2, max_size=8)
    bus = await NatsBus.connect(args.nats_url, namespace=args.namespace)
    created = array.array("d")
    handled = array.array("d")
    seen: set[Any] = set()
    redelivered = 0

    async def effect(event: BaseEvent, conn: Any) -> None:
        await conn.execute("INSERT INTO bench_effects VALUES ($1)", event.event_id)

    inner = Inbox(pool, "bench").batched_handler(effect, parallel=args.parallel)

    async def handle(event: BaseEvent) -> None:
        nonlocal redelivered
        await inner(event)
        now = time.time()
        if event.event_id in seen:
            redelivered += 1
            return
        seen.add(event.event_id)
        created.append(event.occurred_at.timestamp())
        handled.append(now)

    options = ConsumerOptions(
        ack_wait=60.0, batch=args.fetch_batch, concurrency=args.concurrency, max_ack_pending=20_000
    )
    subscription = await bus.subscribe("bench", handle, event_types=["task.*"], options=options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await subscription.stop(grace=5.0)
    await bus.close()
    await pool.close()
    with open(args.out + ".created", "wb") as f:  # noqa: ASYNC230 (the consumer has stopped)
        created.tofile(f)
    with open(args.out + ".handled", "wb") as f:  # noqa: ASYNC230
        handled.tofile(f)
    write_result(args.out, {"handled": len(created), "redelivered": redelivered})


def write_result(path: str, result: dict[str, Any]) -> None:
    result["peak_rss_mib"] = psutil.Process().memory_full_info().rss / 2**20
    with suppress(OSError):  # VmHWM: the high-water mark of resident memory
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                result["peak_rss_mib"] = int(line.split()[1]) / 1024
    Path(path).write_text(json.dumps(result))


# --- the orchestrator --------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with suppress(psutil.NoSuchProcess):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def peak_rss_mib(pid: int) -> float:
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def spawn(role: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """This script as one of its child roles; its stderr goes to `<out>.log`."""
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=Path(f"{out}.log").open("wb"),
    )


def finish(process: subprocess.Popen[bytes], name: str, log: Path, within: float = 120.0) -> None:
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.returncode not in (0, -signal.SIGTERM):
        text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise SystemExit(f"{name} failed ({process.returncode}):\n{text}")


@dataclass
class Engines:
    nats_url: str
    nats_pid: int
    dsn: str


@contextmanager
def engines() -> Iterator[Engines]:
    from edrs_events.testing import running_nats, running_postgres

    with running_nats() as server, running_postgres() as dsn:
        assert server.process is not None
        yield Engines(server.url, server.process.pid, dsn)


async def postmaster_pid(dsn: str) -> int:
    """The benchmark's own PostgreSQL server process (others may run on this machine)."""
    conn = await asyncpg.connect(dsn)
    data_dir = await conn.fetchval("SHOW data_directory")
    await conn.close()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if data_dir in cmdline and Path(cmdline[0]).name.startswith("postgres"):
            return proc.pid
    raise SystemExit(f"no postgres process serves {data_dir}")


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU time of the server and all its backends so far: the live ones, and those that ended
    (a backend's time passes to the postmaster's children times when it exits)."""
    server = psutil.Process(postmaster)
    t = server.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    return total + cpu_seconds([child.pid for child in server.children(recursive=True)])


async def reset_tables(dsn: str) -> None:
    from edrs_events.inbox import install_inbox
    from edrs_events.outbox import install_outbox

    conn = await asyncpg.connect(dsn)
    await install_outbox(conn)
    await install_inbox(conn)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_effects (event_id uuid NOT NULL)")
    await conn.execute("TRUNCATE edrs_outbox, edrs_inbox, bench_effects")
    await conn.close()


async def db_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM edrs_outbox) AS produced,
                  (SELECT count(*) FROM edrs_outbox WHERE sent_at IS NOT NULL) AS relayed,
                  (SELECT count(*) FROM bench_effects) AS effects,
                  (SELECT count(DISTINCT event_id) FROM bench_effects) AS consumed"""
    )
    await conn.close()
    return dict(row)


async def relay_rate(dsn: str) -> float:
    """Events relayed per second: all rows over the span from the first write to the last send."""
    conn = await asyncpg.connect(dsn)
    row = await conn.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM max(sent_at) - min(created_at)) AS span "
        "FROM edrs_outbox"
    )
    await conn.close()
    return float(row["n"]) / float(row["span"] or 1)


async def relayed_between(dsn: str, start: float, end: float) -> int:
    conn = await asyncpg.connect(dsn)
    count = await conn.fetchval(
        "SELECT count(*) FROM edrs_outbox WHERE sent_at >= to_timestamp($1) "
        "AND sent_at < to_timestamp($2)",
        start,
        end,
    )
    await conn.close()
    return int(count)


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p95": cuts[94] * 1000, "p99": cuts[98] * 1000}


@dataclass
class PipelineRun:
    name: str
    produced: int
    consumed: int
    effects: int
    redelivered: int
    lost: int
    rate: float  # events consumed per second in the window (created in the window)
    latency: dict[str, float]
    cpu_ms: dict[str, float]
    peak_rss: dict[str, float]
    backlog_at_end: int
    drained_in: float | None
    producer_rate: float
    producer_max_behind: float
    relayed_rate: float


def pipeline(
    eng: Engines,
    work: Path,
    name: str,
    *,
    rate: float | None,
    seconds: float,
    count: int,
    warmup: float,
    drain_within: float,
    profile: Path | None,
    consumer_args: list[str],
) -> PipelineRun:
    """One outbox -> relay -> JetStream -> consumer run with its three processes."""
    asyncio.run(reset_tables(eng.dsn))
    namespace = f"bench{name}"
    common = ["--dsn", eng.dsn, "--nats-url", eng.nats_url, "--namespace", namespace]
    consumer = spawn("consumer", work / f"{name}-consumer.json", *common, *consumer_args)
    assert consumer.stdout is not None
    if consumer.stdout.readline().strip() != b"ready":
        finish(consumer, "consumer", Path(f"{work / name}-consumer.json.log"))
        raise SystemExit("consumer did not start")
    relay_log = work / f"{name}-relay.log"
    relay = subprocess.Popen(
        [sys.executable, "-m", "edrs_events.relay", *common],
        stdout=subprocess.DEVNULL,
        stderr=relay_log.open("wb"),
    )
    postmaster = asyncio.run(postmaster_pid(eng.dsn))
    time.sleep(2.0)  # the relay imports, connects and takes the leader lock
    producer_args = [*common]
    if rate:
        producer_args += ["--rate", str(rate), "--seconds", str(warmup + seconds)]
    else:
        producer_args += ["--rate", "0", "--count", str(count)]
    producer = spawn("producer", work / f"{name}-producer.json", *producer_args)
    pids = {
        "producer": [producer.pid],
        "relay": [relay.pid],
        "consumer": [consumer.pid],
        "nats-server": [eng.nats_pid],
    }

    def cpu_now() -> dict[str, float]:
        cpu = {k: cpu_seconds(v) for k, v in pids.items()}
        cpu["postgres"] = postgres_cpu_seconds(postmaster)
        return cpu

    t0 = time.time()
    if rate:
        time.sleep(warmup)
    window_start = time.time()
    cpu_start = cpu_now()
    recorders = (
        start_profiles(profile, name, {"relay": relay.pid, "consumer": consumer.pid}, seconds)
        if profile
        else {}
    )
    rss = {k: 0.0 for k in ("producer", "relay", "consumer")}
    if rate:
        time.sleep(seconds)
        window_end = time.time()
        cpu_end = cpu_now()
        backlog = asyncio.run(db_counts(eng.dsn))
        backlog_at_end = backlog["produced"] - backlog["consumed"]
    drain_started = time.time()
    drained_in: float | None = None
    last = -1
    while time.time() - drain_started < drain_within:
        counts = asyncio.run(db_counts(eng.dsn))
        target = counts["produced"] if producer.poll() is not None else -1
        if target > 0 and counts["consumed"] >= target:
            drained_in = time.time() - drain_started
            break
        if (
            counts["consumed"] == last
            and producer.poll() is not None
            and time.time() - drain_started > 60
        ):
            break  # nothing moves any more
        last = counts["consumed"]
        for k, pid in (("relay", relay.pid), ("consumer", consumer.pid)):
            rss[k] = max(rss[k], peak_rss_mib(pid))
        time.sleep(0.5)
    if not rate:
        window_end = time.time()
        cpu_end = cpu_now()
        backlog_at_end = 0
    for k, pid in (("relay", relay.pid), ("consumer", consumer.pid)):
        rss[k] = max(rss[k], peak_rss_mib(pid))
    for recorder in recorders.values():
        recorder.wait(120)
    finish(producer, "producer", work / f"{name}-producer.json.log", max(60.0, drain_within))
    consumer.send_signal(signal.SIGTERM)
    finish(consumer, "consumer", work / f"{name}-consumer.json.log")
    relay.send_signal(signal.SIGTERM)
    finish(relay, "relay", relay_log)
    counts = asyncio.run(db_counts(eng.dsn))
    prod = json.loads((work / f"{name}-producer.json").read_text())
    cons = json.loads((work / f"{name}-consumer.json").read_text())
    rss["producer"] = prod["peak_rss_mib"]
    rss["consumer"] = max(rss["consumer"], cons["peak_rss_mib"])
    created = array.array("d", (work / f"{name}-consumer.json.created").read_bytes())
    handled = array.array("d", (work / f"{name}-consumer.json.handled").read_bytes())
    if rate:
        # Events created in the window; the rate is how many of them were handled per second.
        in_window = [
            h - c for c, h in zip(created, handled, strict=True) if window_start <= c < window_end
        ]
        handled_in_window = sum(1 for h in handled if window_start <= h < window_end)
        produced_in_window = sum(1 for c in created if window_start <= c < window_end)
        consumed_rate = handled_in_window / (window_end - window_start)
        relayed = asyncio.run(relayed_between(eng.dsn, window_start, window_end))
        moved = {
            "producer": max(1, produced_in_window),
            "relay": max(1, relayed),
            "consumer": max(1, handled_in_window),
            "nats-server": max(1, relayed),
            "postgres": max(1, handled_in_window),
        }
    else:
        in_window = [h - c for c, h in zip(created, handled, strict=True)]
        consumed_rate = len(handled) / (max(handled) - t0) if handled else 0.0
        moved = {k: max(1, counts["consumed"]) for k in [*pids, "postgres"]}
    cpu_ms = {k: (cpu_end[k] - cpu_start[k]) * 1000 / moved[k] for k in cpu_start}
    # The producer's own account (CPU over all it wrote): it may have exited before the window's end.
    cpu_ms["producer"] = prod["cpu_s"] * 1000 / max(1, prod["produced"])
    if recorders:
        print_profiles(profile, name, recorders)
    return PipelineRun(
        name=name,
        produced=counts["produced"],
        consumed=counts["consumed"],
        effects=counts["effects"],
        redelivered=cons["redelivered"],
        lost=counts["produced"] - counts["consumed"],
        rate=consumed_rate,
        latency=percentiles(in_window),
        cpu_ms=cpu_ms,
        peak_rss=rss,
        backlog_at_end=backlog_at_end,
        drained_in=drained_in,
        producer_rate=prod["produced"] / prod["seconds"],
        producer_max_behind=prod["max_behind_s"],
        relayed_rate=asyncio.run(relay_rate(eng.dsn)),
    )


def raw_publish(eng: Engines, work: Path, count: int) -> dict[str, float]:
    out = work / "raw.json"
    process = spawn("raw", out, "--nats-url", eng.nats_url, "--count", str(count))
    nats_cpu = cpu_seconds([eng.nats_pid])
    finish(process, "raw publisher", Path(f"{out}.log"))
    result = json.loads(out.read_text())
    return {
        "rate": result["count"] / result["seconds"],
        "bytes": result["bytes"],
        "publisher_cpu_ms": result["cpu_s"] * 1000 / count,
        # Includes the stream's creation and deletion: a small share of a large count.
        "nats_cpu_ms": (cpu_seconds([eng.nats_pid]) - nats_cpu) * 1000 / count,
        "peak_rss": result["peak_rss_mib"],
    }


# --- profiles ----------------------------------------------------------------------------------


def start_profiles(
    out: Path, run: str, pids: dict[str, int], seconds: float
) -> dict[str, subprocess.Popen[bytes]]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    return {
        name: subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out / f"{run}-{name}.folded"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for name, pid in pids.items()
    }


def print_profiles(out: Path | None, run: str, recorders: dict[str, Any]) -> None:
    assert out is not None
    for name in recorders:
        folded = out / f"{run}-{name}.folded"
        if folded.exists():
            summary = summarise(folded)
            (out / f"{run}-{name}.summary.txt").write_text(summary)
            print(f"--- {name} ({run}): share of samples per function (inclusive), top 30")
            print("\n".join(summary.splitlines()[:30]))


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
            if " (" in frame:
                where = frame.split(" (")[-1].split(":")[0].split("/")[-1]
                frame = f"{frame.split(' (')[0]} ({where})"
            if frame not in seen:
                seen.add(frame)
                inclusive[frame] += count
    if not total:
        return "no samples"
    return "\n".join(f"{n / total:6.1%}  {name}" for name, n in inclusive.most_common(300))


# --- report ------------------------------------------------------------------------------------


def print_run(run: PipelineRun, raw_rate: float, target: float | None) -> None:
    lat = run.latency
    what = f"producer at {target:.0f}/s" if target else "producer unpaced"
    print(f"  outbox -> consumer, {what}:")
    print(
        f"    consumed {run.rate:8.0f} events/s   latency p50 {lat['p50']:.0f} ms, "
        f"p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms   ratio to raw publish "
        f"{run.rate / raw_rate:.2f}"
    )
    # Counted in the database after the consumer stopped: an event not consumed by then is
    # lost only if the pipeline had drained; otherwise it may still wait in the stream.
    missing = "lost" if run.drained_in is not None else "not consumed within --drain-within"
    print(
        f"    produced {run.produced}, consumed {run.consumed} (distinct effect rows), "
        f"{missing} {run.lost}, duplicate effects {run.effects - run.consumed}, "
        f"redeliveries seen {run.redelivered}"
    )
    if target:
        drained = (
            f"drained {run.drained_in:.1f} s later"
            if run.drained_in is not None
            else "not drained within --drain-within"
        )
        print(
            f"    producer wrote {run.producer_rate:.0f}/s (at most {run.producer_max_behind:.2f} s "
            f"behind schedule); backlog at the window's end {run.backlog_at_end}, {drained}"
        )
    print(
        f"    stages: outbox writes {run.producer_rate:.0f}/s, relayed {run.relayed_rate:.0f}/s "
        "(first write to last send)"
    )
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in run.cpu_ms.items())
    print(f"    CPU ms per event: {cpu}; total {sum(run.cpu_ms.values()):.3f}")
    rss = ", ".join(f"{k} {v:.0f}" for k, v in run.peak_rss.items())
    print(f"    peak RSS MiB: {rss}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rate", type=float, default=5_000.0, help="sustained producer rate, events/s"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="sustained window, seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--burst-events", type=int, default=50_000, help="unpaced run's events")
    parser.add_argument("--raw-events", type=int, default=100_000, help="raw publish messages")
    parser.add_argument("--drain-within", type=float, default=120.0)
    parser.add_argument("--skip", choices=["sustained", "burst"], action="append", default=[])
    parser.add_argument("--profile", type=Path, help="py-spy profiles of relay and consumer here")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="consumer handler calls in flight"
    )
    parser.add_argument(
        "--parallel", type=int, default=1, help="consumer batches in flight (own transactions)"
    )
    parser.add_argument(
        "--fetch-batch", type=int, default=500, help="consumer fetch batch per lane"
    )
    # The child processes' arguments.
    parser.add_argument("--role", choices=["raw", "producer", "consumer"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--max-pending", type=int, default=4_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role = {"raw": role_raw, "producer": role_producer, "consumer": role_consumer}[args.role]
        # On uvloop, as every service process (edrs_core.runtime) runs its consumers and relay.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(role(args))
        return
    consumer_args = [
        "--concurrency", str(args.concurrency), "--fetch-batch", str(args.fetch_batch),
        "--parallel", str(args.parallel),
    ]  # fmt: skip
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-events-")))
        eng = stack.enter_context(engines())
        print(f"events benchmark on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        raw = raw_publish(eng, work, args.raw_events)
        print(
            f"  raw JetStream publish (nats-py publish_async, {args.raw_events} envelopes of "
            f"{raw['bytes']} bytes): {raw['rate']:8.0f} msg/s; CPU ms/msg: publisher "
            f"{raw['publisher_cpu_ms']:.3f}, nats-server {raw['nats_cpu_ms']:.3f}"
        )
        runs = []
        if "sustained" not in args.skip:
            run = pipeline(
                eng,
                work,
                "sustained",
                rate=args.rate,
                seconds=args.duration,
                count=0,
                warmup=args.warmup,
                drain_within=args.drain_within,
                profile=args.profile,
                consumer_args=consumer_args,
            )
            print_run(run, raw["rate"], args.rate)
            runs.append(run)
        if "burst" not in args.skip:
            run = pipeline(
                eng,
                work,
                "burst",
                rate=None,
                seconds=0,
                count=args.burst_events,
                warmup=0,
                drain_within=args.drain_within,
                profile=None,
                consumer_args=consumer_args,
            )
            print_run(run, raw["rate"], None)
            runs.append(run)
        print(f"  load average at the end {os.getloadavg()[0]:.1f}")
        print(
            f"  goal: >= {args.rate:.0f} events/s sustained for {args.duration:.0f} s with p95 < "
            "500 ms, >= 30% of raw publish, nothing lost"
        )
        for run in runs:
            verdict = {
                "rate": run.rate >= 0.98 * args.rate,
                "p95": run.latency["p95"] < 500,
                "ratio": run.rate >= 0.3 * raw["rate"],
                "nothing lost or doubled": run.drained_in is not None
                and run.lost == 0
                and run.effects == run.consumed,
            }
            met = ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in verdict.items())
            print(f"  {run.name}: {met}")


if __name__ == "__main__":
    main()
