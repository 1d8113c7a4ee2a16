"""Workflows, runs and approvals of the task service on the real embedded Temporal server, with an
external ledger (an HTTP service) as the target of tool_call steps: side effects counted there."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from edrs_core import testing
from edrs_core.engines import EmbeddedTemporal, free_port
from edrs_proto.task.v1 import workflow_pb2, workflow_pb2_grpc
from edrs_task.app import builder, definition
from google.protobuf import struct_pb2

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("task_test_ledger", HERE / "ledger.py")
assert _spec is not None and _spec.loader is not None
ledger_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ledger_module  # dataclasses look their module up
_spec.loader.exec_module(ledger_module)
LedgerServer = ledger_module.LedgerServer
HttpLedgerTools = ledger_module.HttpLedgerTools

RUN = uuid.uuid4().hex[:8]
TENANT_A_ID = f"wf-tenant-a-{RUN}"
TENANT_A = testing.tenant_metadata(TENANT_A_ID)
TENANT_B = testing.tenant_metadata(f"wf-tenant-b-{RUN}")
APPROVER_A = testing.tenant_metadata(TENANT_A_ID, subject="user:approver", role="approver")
# Steps whose worker died are retried after this heartbeat timeout.
HEARTBEAT_SECONDS = 1.0


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def tool(step_id: str, label: str, *, after: list[str] | None = None, **extra: Any) -> dict:
    return {
        "id": step_id,
        "type": "tool_call",
        "dependsOn": after or [],
        "with": {"tool": "record", "arguments": {"label": label}},
        "retry": {"maxAttempts": 5, "initialIntervalSeconds": 0.2},
        **extra,
    }


def chain(count: int, prefix: str = "step") -> list[dict]:
    return [
        tool(f"s{i}", f"{prefix}-{i}", after=[f"s{i - 1}"] if i > 1 else None)
        for i in range(1, count + 1)
    ]


@pytest.fixture(scope="module")
def ledger_server() -> Iterator[Any]:
    with LedgerServer() as server:
        yield server


def service_settings(
    postgres_engine, redis_engine, nats_engine, temporal_address: str, queue: str = "shared"
) -> dict:
    return {
        **testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database="test_task_workflows", redis_db=6
        ),
        "temporal_address": temporal_address,
        # A queue of its own for a service that is killed: no other worker may take its steps.
        "temporal_task_queue": f"test-workflows-{queue}-{RUN}",
        "workflow_heartbeat_seconds": HEARTBEAT_SECONDS,
        # Never called by these tests; the service insists on knowing where personas live.
        "peers": {"persona": "127.0.0.1:1"},
    }


def with_ledger(url: str) -> Any:
    return dataclasses.replace(definition, build=builder(HttpLedgerTools(url)))


@pytest.fixture(scope="module")
async def task(
    postgres_engine, redis_engine, nats_engine, temporal_engine, ledger_server
) -> AsyncIterator[testing.RunningService]:
    settings = service_settings(postgres_engine, redis_engine, nats_engine, temporal_engine.url())
    async with testing.running_service(with_ledger(ledger_server.url), **settings) as svc:
        yield svc


@pytest.fixture
def runs(task) -> workflow_pb2_grpc.WorkflowServiceStub:
    return workflow_pb2_grpc.WorkflowServiceStub(task.channel)


@pytest.fixture
def approvals(task) -> workflow_pb2_grpc.ApprovalServiceStub:
    return workflow_pb2_grpc.ApprovalServiceStub(task.channel)


async def define(stub, name: str, steps: list[dict], metadata=TENANT_A) -> Any:
    return await stub.CreateWorkflowDefinition(
        workflow_pb2.CreateWorkflowDefinitionRequest(name=name, spec=struct({"steps": steps})),
        metadata=metadata,
    )


async def finished(stub, run_id: str, metadata=TENANT_A, within: float = 90.0) -> Any:
    terminal = {
        workflow_pb2.RUN_STATUS_SUCCEEDED,
        workflow_pb2.RUN_STATUS_FAILED,
        workflow_pb2.RUN_STATUS_CANCELLED,
    }
    latest: Any = None

    async def done() -> bool:
        nonlocal latest
        latest = await stub.GetRun(workflow_pb2.GetRunRequest(id=run_id), metadata=metadata)
        return latest.status in terminal

    await testing.wait_until(done, within, f"run {run_id} to finish")
    return latest


def statuses(run) -> dict[str, str]:
    return {s.id: workflow_pb2.StepStatus.Name(s.status) for s in run.steps}


# -- runs -------------------------------------------------------------------------------------


async def test_a_dag_runs_each_step_once_after_those_it_depends_on(runs, ledger_server) -> None:
    name = f"dag-{RUN}"
    steps = [
        tool("a", f"{name}-a"),
        tool("b", f"{name}-b", after=["a"]),
        tool("c", f"{name}-c", after=["a"]),
        {
            "id": "d",
            "type": "tool_call",
            "dependsOn": ["b", "c"],
            "with": {
                "tool": "record",
                "arguments": {"label": f"{name}-d", "from": "${steps.b.output.label}"},
            },
        },
    ]
    await define(runs, name, steps)
    run = await runs.StartRun(
        workflow_pb2.StartRunRequest(workflow_name=name, input=struct({"x": 1})), metadata=TENANT_A
    )
    done = await finished(runs, run.id)
    assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
    assert statuses(done) == {k: "STEP_STATUS_SUCCEEDED" for k in "abcd"}
    labels = ledger_server.ledger.labels()
    mine = [label for label in labels if label.startswith(name)]
    assert sorted(mine) == [f"{name}-{k}" for k in "abcd"]
    assert mine[0] == f"{name}-a" and mine[-1] == f"{name}-d"
    d_call = next(c for c in ledger_server.ledger.calls if c["arguments"]["label"] == f"{name}-d")
    assert d_call["arguments"]["from"] == f"{name}-b"
    assert dict(done.output)["d"]["label"] == f"{name}-d"


async def test_a_failing_third_step_compensates_the_two_before_in_reverse_order(
    runs, ledger_server
) -> None:
    name = f"saga-{RUN}"

    def undoable(step_id: str, after: list[str] | None = None) -> dict:
        return tool(
            step_id,
            f"{name}-{step_id}",
            after=after,
            compensation={
                "type": "tool_call",
                "with": {"tool": "undo", "arguments": {"label": f"{name}-undo-{step_id}"}},
            },
        )

    third = tool("third", f"{name}-third", after=["second"])
    ledger_server.ledger.refused.add(f"{name}-third")
    await define(runs, name, [undoable("first"), undoable("second", ["first"]), third])
    run = await runs.StartRun(workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A)
    done = await finished(runs, run.id)

    assert done.status == workflow_pb2.RUN_STATUS_FAILED
    assert "third" in done.error and f"{name}-third cannot be done" in done.error
    mine = [label for label in ledger_server.ledger.labels() if label.startswith(name)]
    assert mine == [f"{name}-first", f"{name}-second", f"{name}-undo-second", f"{name}-undo-first"]
    assert statuses(done) == {
        "first": "STEP_STATUS_COMPENSATED",
        "second": "STEP_STATUS_COMPENSATED",
        "third": "STEP_STATUS_FAILED",
    }
    # A step refused as written is not retried: one call of the third step.
    thirds = [c for c in ledger_server.ledger.calls if c["arguments"]["label"] == f"{name}-third"]
    assert len(thirds) == 1


async def test_a_start_with_the_same_idempotency_key_returns_the_first_run(
    runs, ledger_server
) -> None:
    name = f"idem-{RUN}"
    await define(runs, name, [tool("only", f"{name}-only")])
    request = workflow_pb2.StartRunRequest(
        workflow_name=name, input=struct({"n": 1}), idempotency_key=f"key-{RUN}"
    )
    first = await runs.StartRun(request, metadata=TENANT_A)
    again = await runs.StartRun(request, metadata=TENANT_A)
    assert again.id == first.id
    other = workflow_pb2.StartRunRequest(
        workflow_name=name, input=struct({"n": 2}), idempotency_key=f"key-{RUN}"
    )
    await testing.expect_rpc_error(
        runs.StartRun(other, metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "idempotency_key was used for another workflow or input",
    )
    await finished(runs, first.id)
    # After the run ended, the same start still returns it and runs nothing again.
    late = await runs.StartRun(request, metadata=TENANT_A)
    assert late.id == first.id and late.status == workflow_pb2.RUN_STATUS_SUCCEEDED
    assert ledger_server.ledger.labels().count(f"{name}-only") == 1


async def test_invalid_definitions_are_refused_with_the_step_and_the_reason(runs) -> None:
    cases = [
        ([{"id": "a", "type": "teleport"}], "spec.steps.0.type"),
        ([tool("a", "x", after=["ghost"])], "dependsOn names no step: 'ghost'"),
        ([tool("a", "x", after=["b"]), tool("b", "y", after=["a"])], "cycle through a, b"),
        ([tool(f"s{i}", "x") for i in range(101)], "at most 100"),
        ([{"id": "w", "type": "wait", "with": {}}], "spec.steps[0] ('w').with.seconds"),
    ]
    for steps, reason in cases:
        await testing.expect_rpc_error(
            define(runs, f"bad-{RUN}", steps), grpc.StatusCode.INVALID_ARGUMENT, reason
        )


async def test_watch_streams_each_step_then_the_finished_run(runs) -> None:
    name = f"watch-{RUN}"
    await define(runs, name, chain(3, name))
    run = await runs.StartRun(workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A)
    seen: list[tuple[str, str]] = []
    last: Any = None
    async for update in runs.WatchRun(workflow_pb2.WatchRunRequest(id=run.id), metadata=TENANT_A):
        if update.HasField("step"):
            seen.append((update.step.id, workflow_pb2.StepStatus.Name(update.step.status)))
        else:
            last = update.finished
    assert last is not None and last.status == workflow_pb2.RUN_STATUS_SUCCEEDED
    for sid in ("s1", "s2", "s3"):
        assert (sid, "STEP_STATUS_SUCCEEDED") in seen


async def test_a_failed_run_is_retried_from_its_failed_step(runs, ledger_server) -> None:
    name = f"retry-{RUN}"
    # The second step fails while the ledger refuses it.
    ledger_server.ledger.refused.add(f"{name}-second")
    await define(
        runs,
        name,
        [tool("first", f"{name}-first"), tool("second", f"{name}-second", after=["first"])],
    )
    run = await runs.StartRun(workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A)
    failed = await finished(runs, run.id)
    assert failed.status == workflow_pb2.RUN_STATUS_FAILED
    assert statuses(failed)["first"] == "STEP_STATUS_SUCCEEDED"  # no compensation: kept
    await testing.expect_rpc_error(
        runs.RetryRun(workflow_pb2.RetryRunRequest(id=str(uuid.uuid4())), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
    )
    # The external system was fixed: the retry runs the second step only.
    ledger_server.ledger.refused.discard(f"{name}-second")
    retried = await runs.RetryRun(workflow_pb2.RetryRunRequest(id=run.id), metadata=TENANT_A)
    assert retried.attempt == 2
    done = await finished(runs, run.id)
    assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
    mine = [label for label in ledger_server.ledger.labels() if label.startswith(name)]
    assert mine == [f"{name}-first", f"{name}-second"]


async def test_a_cancelled_run_compensates_and_ends_cancelled(runs, ledger_server) -> None:
    name = f"cancel-{RUN}"
    steps = [
        tool(
            "booked",
            f"{name}-booked",
            compensation={
                "type": "tool_call",
                "with": {"tool": "undo", "arguments": {"label": f"{name}-unbooked"}},
            },
        ),
        {"id": "pause", "type": "wait", "dependsOn": ["booked"], "with": {"seconds": 3600}},
    ]
    await define(runs, name, steps)
    run = await runs.StartRun(workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A)

    async def pausing() -> bool:
        got = await runs.GetRun(workflow_pb2.GetRunRequest(id=run.id), metadata=TENANT_A)
        return statuses(got)["pause"] == "STEP_STATUS_RUNNING"

    await testing.wait_until(pausing, 60, "the wait step to start")
    await runs.CancelRun(workflow_pb2.CancelRunRequest(id=run.id), metadata=TENANT_A)
    done = await finished(runs, run.id)
    assert done.status == workflow_pb2.RUN_STATUS_CANCELLED
    mine = [label for label in ledger_server.ledger.labels() if label.startswith(name)]
    assert mine == [f"{name}-booked", f"{name}-unbooked"]


async def test_tenant_b_sees_none_of_tenant_a_s_workflows_runs_or_approvals(
    runs, approvals
) -> None:
    name = f"private-{RUN}"
    await define(runs, name, [tool("only", f"{name}-only")])
    run = await runs.StartRun(workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A)
    asked = await approvals.RequestApproval(
        workflow_pb2.RequestApprovalRequest(
            idempotency_key=f"private-{RUN}", role="approver", title="Delete the archive"
        ),
        metadata=TENANT_A,
    )
    for call in (
        runs.GetRun(workflow_pb2.GetRunRequest(id=run.id), metadata=TENANT_B),
        runs.CancelRun(workflow_pb2.CancelRunRequest(id=run.id), metadata=TENANT_B),
        runs.GetWorkflowDefinition(
            workflow_pb2.GetWorkflowDefinitionRequest(id=name), metadata=TENANT_B
        ),
        runs.StartRun(workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_B),
        approvals.GetApproval(workflow_pb2.GetApprovalRequest(id=asked.id), metadata=TENANT_B),
        approvals.DecideApproval(
            workflow_pb2.DecideApprovalRequest(id=asked.id, approve=True),
            metadata=testing.tenant_metadata(f"wf-tenant-b-{RUN}", role="admin"),
        ),
    ):
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND)
    listed = await runs.ListRuns(workflow_pb2.ListRunsRequest(), metadata=TENANT_B)
    assert run.id not in {r.id for r in listed.runs}
    defs = await runs.ListWorkflowDefinitions(
        workflow_pb2.ListWorkflowDefinitionsRequest(), metadata=TENANT_B
    )
    assert name not in {d.name for d in defs.definitions}
    waiting = await approvals.ListApprovals(workflow_pb2.ListApprovalsRequest(), metadata=TENANT_B)
    assert asked.id not in {a.id for a in waiting.approvals}
    await finished(runs, run.id)


# -- approvals --------------------------------------------------------------------------------


async def test_an_approval_whose_details_hold_nul_is_refused_naming_the_field(approvals) -> None:
    # PostgreSQL's jsonb cannot store NUL: without the check the insert failed as INTERNAL (502
    # through the gateway), found by schemathesis.
    request = workflow_pb2.RequestApprovalRequest(
        idempotency_key=f"nul-{RUN}",
        role="approver",
        title="Send the report",
        details=struct({"note": "before\x00after"}),
        expires_in_seconds=600,
    )
    await testing.expect_rpc_error(
        approvals.RequestApproval(request, metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "details",
        "NUL",
    )


async def test_another_service_holds_an_action_for_approval_and_learns_the_decision(
    approvals, task
) -> None:
    request = workflow_pb2.RequestApprovalRequest(
        idempotency_key=f"tool-call-{RUN}",
        role="approver",
        title="Drop table customers",
        details=struct({"tool": "sql", "arguments": {"statement": "DROP TABLE customers"}}),
        expires_in_seconds=600,
    )
    asked = await approvals.RequestApproval(request, metadata=TENANT_A)
    assert asked.status == workflow_pb2.APPROVAL_STATUS_PENDING
    again = await approvals.RequestApproval(request, metadata=TENANT_A)
    assert again.id == asked.id

    mine = await approvals.ListApprovals(
        workflow_pb2.ListApprovalsRequest(for_me=True, status=workflow_pb2.APPROVAL_STATUS_PENDING),
        metadata=APPROVER_A,
    )
    assert asked.id in {a.id for a in mine.approvals}
    others = await approvals.ListApprovals(
        workflow_pb2.ListApprovalsRequest(for_me=True),
        metadata=testing.tenant_metadata(TENANT_A_ID, role="viewer"),
    )
    assert asked.id not in {a.id for a in others.approvals}
    await testing.expect_rpc_error(
        approvals.DecideApproval(
            workflow_pb2.DecideApprovalRequest(id=asked.id, approve=True),
            metadata=testing.tenant_metadata(TENANT_A_ID, role="viewer"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "for role 'approver'",
    )

    waiting = asyncio.ensure_future(
        approvals.WaitApproval(
            workflow_pb2.WaitApprovalRequest(id=asked.id, wait_seconds=30), metadata=TENANT_A
        )
    )
    decided = await approvals.DecideApproval(
        workflow_pb2.DecideApprovalRequest(id=asked.id, approve=False, comment="not today"),
        metadata=APPROVER_A,
    )
    assert decided.status == workflow_pb2.APPROVAL_STATUS_REJECTED
    seen = await asyncio.wait_for(waiting, 30)
    assert (seen.status, seen.decided_by, seen.comment) == (
        workflow_pb2.APPROVAL_STATUS_REJECTED,
        "user:approver",
        "not today",
    )
    await testing.expect_rpc_error(
        approvals.DecideApproval(
            workflow_pb2.DecideApprovalRequest(id=asked.id, approve=True), metadata=APPROVER_A
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already rejected",
    )
    [requested] = await testing.published_events(task, "task.approval_requested", asked.id)
    assert requested["payload"]["role"] == "approver"
    [event] = await testing.published_events(task, "task.approval_decided", asked.id)
    assert event["payload"]["status"] == "rejected"
    assert event["client_id"] == TENANT_A_ID


@pytest.mark.parametrize(
    ("on_expiry", "run_status", "approval_status"),
    [
        ("fail", workflow_pb2.RUN_STATUS_FAILED, workflow_pb2.APPROVAL_STATUS_EXPIRED),
        ("approve", workflow_pb2.RUN_STATUS_SUCCEEDED, workflow_pb2.APPROVAL_STATUS_APPROVED),
    ],
)
async def test_an_unanswered_approval_expires_into_its_default(
    runs, approvals, ledger_server, on_expiry, run_status, approval_status
) -> None:
    name = f"expiry-{on_expiry}-{RUN}"
    steps = [
        {
            "id": "ask",
            "type": "approval",
            "with": {
                "role": "approver",
                "title": "Ship it?",
                "expiresInSeconds": 2,
                "onExpiry": on_expiry,
            },
        },
        tool("ship", f"{name}-ship", after=["ask"]),
    ]
    await define(runs, name, steps)
    run = await runs.StartRun(workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A)
    done = await finished(runs, run.id)
    assert done.status == run_status, done.error
    [ask] = [s for s in done.steps if s.id == "ask"]
    approval = await approvals.GetApproval(
        workflow_pb2.GetApprovalRequest(id=ask.approval_id), metadata=TENANT_A
    )
    assert approval.status == approval_status
    assert approval.decided_by == "expiry"
    shipped = [label for label in ledger_server.ledger.labels() if label == f"{name}-ship"]
    assert len(shipped) == (1 if on_expiry == "approve" else 0)


# -- restarts ---------------------------------------------------------------------------------


@pytest.fixture
def own_temporal(tmp_path) -> Iterator[EmbeddedTemporal]:
    """A Temporal server of this test alone: it is stopped and started again mid-run."""
    with EmbeddedTemporal(tmp_path / "temporal") as engine:
        yield engine


async def test_ten_steps_complete_once_each_across_a_temporal_restart(
    postgres_engine, redis_engine, nats_engine, own_temporal, ledger_server
) -> None:
    name = f"ten-temporal-{RUN}"
    ledger = ledger_server.ledger
    ledger.hold(f"{name}-5")
    settings = service_settings(postgres_engine, redis_engine, nats_engine, own_temporal.url())
    async with testing.running_service(with_ledger(ledger_server.url), **settings) as svc:
        stub = workflow_pb2_grpc.WorkflowServiceStub(svc.channel)
        await define(stub, name, chain(10, name))
        run = await stub.StartRun(
            workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A
        )
        await testing.wait_until(
            _true(lambda: f"{name}-5" in ledger.held), 60, "step 5 to reach the ledger"
        )
        port = own_temporal.port
        own_temporal.stop()
        # Step 5's effect happens while the server is down; its completion cannot be reported.
        ledger.release(f"{name}-5")
        own_temporal._requested_port = port  # the workers reconnect to the same address
        own_temporal.start()
        done = await finished(stub, run.id, within=180)
    assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
    assert [label for label in ledger.labels() if label.startswith(name)] == [
        f"{name}-{i}" for i in range(1, 11)
    ]


def _true(check: Any) -> Any:
    async def predicate() -> bool:
        return bool(check())

    return predicate


async def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the task service exited with {process.returncode}")
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(HERE / "ledger.py")], env=env, stdout=out, stderr=out
        )


async def test_ten_steps_complete_once_each_after_the_worker_is_killed_mid_step(
    postgres_engine, redis_engine, nats_engine, temporal_engine, ledger_server, tmp_path
) -> None:
    name = f"ten-kill-{RUN}"
    ledger = ledger_server.ledger
    ledger.hold(f"{name}-5")
    settings = service_settings(
        postgres_engine, redis_engine, nats_engine, temporal_engine.url(), queue="killed"
    )
    issuer = testing.test_issuer().settings("task")
    env = {
        **os.environ,
        "EDRS_ENVIRONMENT": "test",
        "LEDGER_URL": ledger_server.url,
        "EDRS_TASK_SHUTDOWN_GRACE_SECONDS": "1",
        **{f"EDRS_TASK_{k.upper()}": _env(v) for k, v in {**settings, **issuer}.items()},
    }

    def start() -> tuple[subprocess.Popen[bytes], str, str]:
        grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
        env.update(
            EDRS_TASK_GRPC_PORT=str(grpc_port),
            EDRS_TASK_HTTP_PORT=str(http_port),
            EDRS_TASK_METRICS_PORT=str(metrics_port),
        )
        process = _spawn(env, tmp_path / "task.log")
        return process, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}/health/readiness"

    first, address, ready = start()
    try:
        await testing.wait_until(lambda: _ready(ready, first), 60, "the task service")
        async with grpc.aio.insecure_channel(address) as channel:
            stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
            await define(stub, name, chain(10, name))
            run = await stub.StartRun(
                workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A
            )
            await testing.wait_until(
                _true(lambda: f"{name}-5" in ledger.held), 60, "step 5 to reach the ledger"
            )
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        # The external system finishes the call whose caller is gone.
        ledger.release(f"{name}-5")
        second, address, ready = start()
        try:
            await testing.wait_until(lambda: _ready(ready, second), 60, "the restarted service")
            async with grpc.aio.insecure_channel(address) as channel:
                stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
                done = await finished(stub, run.id, within=180)
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
    assert [label for label in ledger.labels() if label.startswith(name)] == [
        f"{name}-{i}" for i in range(1, 11)
    ]
    # Step 5 was called again by the new worker, with the same idempotency key.
    fifth = [c for c in ledger.calls if c["arguments"]["label"] == f"{name}-5"]
    assert len(fifth) >= 2 and len({c["key"] for c in fifth}) == 1


def _env(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


# -- schedules --------------------------------------------------------------------------------


@pytest.fixture
def schedules(task) -> workflow_pb2_grpc.ScheduleServiceStub:
    return workflow_pb2_grpc.ScheduleServiceStub(task.channel)


async def test_a_schedule_fires_at_its_times_and_pauses_resumes_and_deletes(
    runs, schedules, ledger_server
) -> None:
    name = f"cron-{RUN}"
    await define(runs, name, [tool("tick", "${input.label}")])
    created = await schedules.CreateSchedule(
        workflow_pb2.CreateScheduleRequest(
            workflow_name=name, cron="*/2 * * * * * *", input=struct({"label": f"{name}-tick"})
        ),
        metadata=TENANT_A,
    )
    times = [t.ToDatetime() for t in created.next_run_time]
    assert len(times) == 10
    assert all(t.second % 2 == 0 for t in times)
    assert all((b - a).total_seconds() == 2 for a, b in itertools.pairwise(times))

    async def fired() -> bool:
        listed = await runs.ListRuns(
            workflow_pb2.ListRunsRequest(
                workflow_name=name, status=workflow_pb2.RUN_STATUS_SUCCEEDED
            ),
            metadata=TENANT_A,
        )
        return any(r.schedule_id == created.id for r in listed.runs)

    await testing.wait_until(fired, 60, "a run started by the schedule")
    assert f"{name}-tick" in ledger_server.ledger.labels()
    await testing.expect_rpc_error(
        schedules.GetSchedule(workflow_pb2.GetScheduleRequest(id=created.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )

    paused = await schedules.PauseSchedule(
        workflow_pb2.PauseScheduleRequest(id=created.id, note="maintenance"), metadata=TENANT_A
    )
    assert paused.paused and not paused.next_run_time and paused.note == "maintenance"
    resumed = await schedules.ResumeSchedule(
        workflow_pb2.ResumeScheduleRequest(id=created.id), metadata=TENANT_A
    )
    assert not resumed.paused and resumed.next_run_time
    listed = await schedules.ListSchedules(workflow_pb2.ListSchedulesRequest(), metadata=TENANT_A)
    assert created.id in {s.id for s in listed.schedules}
    await schedules.DeleteSchedule(
        workflow_pb2.DeleteScheduleRequest(id=created.id), metadata=TENANT_A
    )
    await testing.expect_rpc_error(
        schedules.GetSchedule(workflow_pb2.GetScheduleRequest(id=created.id), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_next_times_across_dst_changes_are_local_times_of_the_zone(runs, schedules) -> None:
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    name = f"dst-{RUN}"
    await define(runs, name, [tool("tick", f"{name}-tick")])

    async def next_times(cron: str) -> list[Any]:
        created = await schedules.CreateSchedule(
            workflow_pb2.CreateScheduleRequest(
                workflow_name=name, cron=cron, time_zone="Europe/Berlin", paused=False
            ),
            metadata=TENANT_A,
        )
        await schedules.DeleteSchedule(
            workflow_pb2.DeleteScheduleRequest(id=created.id), metadata=TENANT_A
        )
        return [
            t.ToDatetime(tzinfo=ZoneInfo("UTC")).astimezone(berlin) for t in created.next_run_time
        ]

    # Sundays of March and April at noon: the UTC hour moves by one at the spring change
    # (11:00 UTC in CET, 10:00 UTC in CEST), the local hour never does.
    noon = await next_times("0 12 * 3,4 0")
    assert len(noon) == 10
    assert all((t.hour, t.minute, t.weekday(), t.month) == (12, 0, 6, t.month) for t in noon)
    assert all(t.month in (3, 4) for t in noon)
    assert {t.utcoffset().total_seconds() / 3600 for t in noon} == {1.0, 2.0}
    # 02:30 on Sundays of March and October: the spring change's 02:30 does not exist (no run
    # that day), the autumn change's 02:30 happens twice (one run).
    early = await next_times("30 2 * 3,10 0")
    assert all((t.hour, t.minute) == (2, 30) for t in early)
    days = [t.date() for t in early]
    assert len(days) == len(set(days))
    spring = {_last_sunday(year, 3) for year in {d.year for d in days}}
    assert not spring & set(days)
    assert {d for d in days if d.month == 3} or {d for d in days if d.month == 10}
    await testing.expect_rpc_error(
        schedules.CreateSchedule(
            workflow_pb2.CreateScheduleRequest(workflow_name=name, cron="61 * * * *"),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Minute is not in range",
    )
    await testing.expect_rpc_error(
        schedules.CreateSchedule(
            workflow_pb2.CreateScheduleRequest(
                workflow_name=name, cron="0 12 * * *", time_zone="Mars/Olympus"
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not an IANA time zone",
    )


def _last_sunday(year: int, month: int) -> Any:
    """The day of the EU's DST change in `month` (3 or 10)."""
    from datetime import date, timedelta

    last = date(year, month, 31)
    return last - timedelta(days=(last.weekday() - 6) % 7)


async def test_an_approval_waits_across_restarts_of_the_service_and_temporal_and_resumes_once(
    postgres_engine, redis_engine, nats_engine, own_temporal, ledger_server
) -> None:
    name = f"approve-restarts-{RUN}"
    ledger = ledger_server.ledger
    steps = [
        tool("before", f"{name}-before"),
        {
            "id": "ask",
            "type": "approval",
            "dependsOn": ["before"],
            "with": {"role": "approver", "title": "Send the invoices?", "expiresInSeconds": 3600},
        },
        tool("after", f"{name}-after", after=["ask"]),
    ]
    settings = service_settings(
        postgres_engine, redis_engine, nats_engine, own_temporal.url(), queue="approvals"
    )
    service = with_ledger(ledger_server.url)
    async with testing.running_service(service, **settings) as svc:
        stub = workflow_pb2_grpc.WorkflowServiceStub(svc.channel)
        await define(stub, name, steps)
        run = await stub.StartRun(
            workflow_pb2.StartRunRequest(workflow_name=name), metadata=TENANT_A
        )

        async def waiting() -> bool:
            got = await stub.GetRun(workflow_pb2.GetRunRequest(id=run.id), metadata=TENANT_A)
            return got.status == workflow_pb2.RUN_STATUS_WAITING_FOR_APPROVAL

        await testing.wait_until(waiting, 60, "the run to wait for the approval")
    # Everything stops: the task service, then Temporal; then both start again.
    port = own_temporal.port
    own_temporal.stop()
    own_temporal._requested_port = port
    own_temporal.start()
    async with testing.running_service(service, **settings) as svc:
        stub = workflow_pb2_grpc.WorkflowServiceStub(svc.channel)
        approvals = workflow_pb2_grpc.ApprovalServiceStub(svc.channel)
        still = await stub.GetRun(workflow_pb2.GetRunRequest(id=run.id), metadata=TENANT_A)
        assert still.status == workflow_pb2.RUN_STATUS_WAITING_FOR_APPROVAL
        [ask] = [s for s in still.steps if s.id == "ask"]
        assert ask.status == workflow_pb2.STEP_STATUS_WAITING_FOR_APPROVAL
        assert f"{name}-after" not in ledger.labels()
        decide = workflow_pb2.DecideApprovalRequest(id=ask.approval_id, approve=True, comment="go")
        first = await approvals.DecideApproval(decide, metadata=APPROVER_A)
        # A repeated decision (a client retrying) changes nothing and resumes nothing twice.
        again = await approvals.DecideApproval(decide, metadata=APPROVER_A)
        assert first.status == again.status == workflow_pb2.APPROVAL_STATUS_APPROVED
        done = await finished(stub, run.id)
        assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
        assert dict(done.output)["ask"]["decidedBy"] == "user:approver"
    assert [label for label in ledger.labels() if label.startswith(name)] == [
        f"{name}-before",
        f"{name}-after",
    ]
    afters = [c for c in ledger.calls if c["arguments"]["label"] == f"{name}-after"]
    assert len(afters) == 1
