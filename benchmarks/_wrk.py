"""wrk as the load client of the HTTP benchmarks: a C load generator, pinned to its own core, so
the figures are the server's, not the client's (an asyncio client saturates near 3,000 requests/s
on this kind of machine, below what a bare endpoint serves).

`make bench` installs wrk (Debian's `wrk`). `run` drives one URL for `seconds` with `connections`
keep-alive connections from one wrk thread pinned to `cpu`, and returns throughput and latency
percentiles read from wrk's own histogram (a Lua `done` hook prints them as JSON).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WRK = shutil.which("wrk") or "/usr/bin/wrk"

# wrk calls done() once with its merged histogram; latencies are in microseconds.
_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write("WRK_JSON ")
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "non_2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def available() -> bool:
    return Path(WRK).exists()


def run(
    url: str,
    *,
    seconds: float,
    connections: int,
    headers: dict[str, str] | None = None,
    cpu: int | None = None,
) -> WrkResult:
    """One wrk run; raises SystemExit with wrk's output when it fails."""
    if not available():
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_REPORT)
    try:
        command: list[str] = [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            script.name,
        ]
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        command.append(url)
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            command = ["taskset", "-c", str(cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    finally:
        os.unlink(script.name)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non_2xx=data["non_2xx"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
    )


def median_run(results: Sequence[WrkResult]) -> WrkResult:
    """The run with the median throughput (its own latencies, not a mix of runs)."""
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[len(ordered) // 2]
