"""Workflows benchmark: durable step throughput and start-to-first-step latency of many short runs
on the embedded Temporal server, beside the same step work done directly (no engine).

Run `python benchmarks/bench_workflows.py [--runs 1000] [--steps 3]`; it starts its own
PostgreSQL, NATS and Temporal, runs the task service in this process (its tool_call steps go to an
in-process tool that records when each call arrives), prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from edrs_core import testing
from edrs_core.engines import EmbeddedNats, EmbeddedPostgres, EmbeddedTemporal
from edrs_proto.task.v1 import workflow_pb2, workflow_pb2_grpc
from edrs_task.app import builder, definition
from edrs_task.budgets import PriceTable
from edrs_task.config import ModelPrice
from edrs_task.store.budgets import Call, PostgresBudgetStore
from edrs_task.store.workflows import WorkflowStore
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).parent))
from _harness import POSTGRES_SETTINGS, percentiles

TENANT = testing.tenant_metadata("bench-workflows")


class TimedTool:
    """The step's work: records when each call of each run arrives."""

    def __init__(self) -> None:
        self.first_call: dict[str, float] = {}
        self.calls = 0
        self.done = asyncio.Event()
        self.expected = 0

    def reset(self) -> TimedTool:
        self.first_call.clear()
        self.calls = 0
        self.done.clear()
        return self

    @property
    def unavailable(self) -> str | None:
        return None

    async def call(self, tool: str, arguments: dict[str, Any], idempotency_key: str) -> dict:
        run = str(arguments["run"])
        self.first_call.setdefault(run, time.perf_counter())
        self.calls += 1
        if self.calls >= self.expected:
            self.done.set()
        return {"ok": True}


async def durable(tool: TimedTool, stub: Any, runs: int, steps: int, concurrency: int) -> dict:
    spec = struct_pb2.Struct()
    spec.update(
        {
            "steps": [
                {
                    "id": f"s{i}",
                    "type": "tool_call",
                    "dependsOn": [f"s{i - 1}"] if i else [],
                    "with": {"tool": "bench", "arguments": {"run": "${input.run}"}},
                }
                for i in range(steps)
            ]
        }
    )
    name = f"bench-{uuid.uuid4().hex[:6]}"
    await stub.CreateWorkflowDefinition(
        workflow_pb2.CreateWorkflowDefinitionRequest(name=name, spec=spec), metadata=TENANT
    )
    tool.expected = runs * steps
    started: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def start(n: int) -> None:
        key = f"r{n}"
        run_input = struct_pb2.Struct()
        run_input.update({"run": key})
        async with gate:
            started[key] = time.perf_counter()
            await stub.StartRun(
                workflow_pb2.StartRunRequest(workflow_name=name, input=run_input),
                metadata=TENANT,
            )

    began = time.perf_counter()
    await asyncio.gather(*(start(n) for n in range(runs)))
    await asyncio.wait_for(tool.done.wait(), timeout=1800)
    elapsed = time.perf_counter() - began
    dispatch = [tool.first_call[k] - started[k] for k in started]
    return {"steps_per_s": runs * steps / elapsed, "elapsed": elapsed, **percentiles(dispatch)}


async def direct(
    tool: TimedTool, store: WorkflowStore, budgets: PostgresBudgetStore, runs: int, steps: int
) -> dict:
    """What each step's activity does (look its key up in the effects ledger, reserve one tool
    call from the budgets, call the tool, settle, record the effect), called directly one after
    another: the work without the engine."""
    tool.expected = 10**12
    tenant = "bench-workflows"
    began = time.perf_counter()
    for n in range(runs):
        run_id = uuid.uuid4()
        for i in range(steps):
            key = f"direct-{run_id}/step-s{i}"
            if await store.effect(key) is None:
                charge = f"workflow-step:{key}"
                persona = await budgets.run_persona(tenant, str(run_id))
                await budgets.reserve(
                    tenant, Call(key=charge, persona_id=persona, run_id=str(run_id), tool_calls=1)
                )
                out = await tool.call("bench", {"run": f"d{n}"}, key)
                await budgets.settle(
                    tenant, charge, prompt_tokens=0, completion_tokens=0, tool_calls=1
                )
                await store.record_effect(key, tenant, run_id, f"s{i}", "step", out)
    elapsed = time.perf_counter() - began
    return {"steps_per_s": runs * steps / elapsed}


async def main(runs: int, steps: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-workflows-") as tmp:
        root = Path(tmp)
        with (
            EmbeddedPostgres(root / "pg", settings=POSTGRES_SETTINGS) as pg,
            EmbeddedNats(root / "nats") as nats_server,
            EmbeddedTemporal(root / "temporal") as temporal,
        ):
            tool = TimedTool()
            service = dataclasses.replace(definition, build=builder(tool))
            async with testing.running_service(
                service,
                database_url=pg.url("bench_task"),
                bus_url=nats_server.url(),
                temporal_address=temporal.url(),
                peers={"persona": "127.0.0.1:1"},
                log_level="WARNING",
                database_pool_size=20,
            ) as svc:
                stub = workflow_pb2_grpc.WorkflowServiceStub(svc.channel)
                # A few runs first: Temporal's and the worker's caches warm up.
                await durable(tool, stub, 5, steps, concurrency)
                measured = await durable(tool.reset(), stub, runs, steps, concurrency)
                assert svc.runner.runtime is not None
                # The ledger's reads and writes only: no events are written.
                store = WorkflowStore(svc.runner.runtime.db, events=None)  # type: ignore[arg-type]
                # No budget is set: reservations are admitted and no event is written.
                budgets = PostgresBudgetStore(
                    svc.runner.runtime.db,
                    events=None,  # type: ignore[arg-type]
                    prices=PriceTable({}, ModelPrice()),
                    approvals=store,
                )
                baseline = await direct(TimedTool(), store, budgets, runs, steps)
    print(f"{runs} runs of {steps} tool_call steps, {concurrency} starts in flight")
    print(
        f"  durable (Temporal + effects ledger + budgets): {measured['steps_per_s']:8.1f} steps/s "
        f"({measured['elapsed']:.1f} s); start to first step p50 {measured['p50']:.1f} ms, "
        f"p95 {measured['p95']:.1f} ms, p99 {measured['p99']:.1f} ms"
    )
    print(f"  direct (the activities' work, no engine): {baseline['steps_per_s']:8.1f} steps/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.steps, args.concurrency))
