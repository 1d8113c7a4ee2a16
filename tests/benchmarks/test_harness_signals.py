"""A benchmark stopped with SIGTERM stops the engines it started (benchmarks/_harness.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_sigterm_stops_the_engines_a_benchmark_started(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(BENCHMARKS)!r})
        import _harness  # noqa: F401  (what every benchmark imports)
        from edrs_core.engines.redis import EmbeddedRedis

        with EmbeddedRedis({str(tmp_path / "redis")!r}) as redis:
            print(redis.pid, flush=True)
            time.sleep(600)
        """
    )
    bench = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    engine: psutil.Process | None = None
    try:
        assert bench.stdout is not None
        engine = psutil.Process(int(bench.stdout.readline()))
        assert engine.is_running()
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) == 128 + signal.SIGTERM
        # Stopped and reaped by the benchmark on its way out, not left to run without it.
        assert not engine.is_running()
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if engine is not None and engine.is_running():  # what a failure here would leave
            engine.kill()
