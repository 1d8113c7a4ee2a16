"""Run a service inside the test process, on free ports, against real engines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from edrs_core.runtime import ServiceDefinition, ServiceRunner
from edrs_core.settings import load_settings


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


@dataclass
class RunningService:
    runner: ServiceRunner
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


@contextlib.asynccontextmanager
async def running_service(
    definition: ServiceDefinition, *, start_timeout: float = 30.0, **settings: Any
) -> AsyncIterator[RunningService]:
    """Start `definition` with `settings` (ports default to 0, i.e. free) and stop it afterwards."""
    values: dict[str, Any] = {
        "EDRS_ENVIRONMENT": "test",
        "grpc_port": 0,
        "http_port": 0,
        "metrics_port": 0,
        "shutdown_grace_seconds": 2.0,
        "readiness_cache_seconds": 0.0,
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
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{runner.grpc.port}")
    try:
        yield RunningService(runner, channel)
    finally:
        await channel.close()
        runner.stop_requested.set()
        await task
