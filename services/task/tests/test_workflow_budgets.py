"""Workflow steps within budgets, on the real embedded Temporal server and PostgreSQL: a tool_call
or model_call step reserves from the budgets that apply (tenant, the run's, the persona's of the
task the run executes) before it runs and settles after, once per step however often its activity
is retried; a step over a budget fails naming it (or the approval it asked for); the usage shows
per tenant. The model_call tests run the reasoning service's real small model."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from edrs_core import testing
from edrs_persona.app import definition as persona_definition
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc, workflow_pb2, workflow_pb2_grpc
from edrs_reasoning.app import definition as reasoning_definition
from edrs_task.app import builder, definition
from google.protobuf import struct_pb2

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("task_budget_test_ledger", HERE / "ledger.py")
assert _spec is not None and _spec.loader is not None
ledger_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ledger_module  # dataclasses look their module up
_spec.loader.exec_module(ledger_module)

RUN = uuid.uuid4().hex[:8]
TOOL_CALL_MICROS = 500


def tenant(name: str) -> tuple[str, Any]:
    client_id = f"wfb-{name}-{RUN}"
    return client_id, testing.tenant_metadata(client_id)


def admin(client_id: str) -> Any:
    return testing.tenant_metadata(client_id, subject="user:boss", role="admin")


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def tool(step_id: str, label: str, *, after: list[str] | None = None) -> dict:
    return {
        "id": step_id,
        "type": "tool_call",
        "dependsOn": after or [],
        "with": {"tool": "record", "arguments": {"label": label}},
        "retry": {"maxAttempts": 5, "initialIntervalSeconds": 0.2},
    }


@pytest.fixture(scope="module")
def ledger_server() -> Iterator[Any]:
    with ledger_module.LedgerServer() as server:
        yield server


def engines(postgres_engine, redis_engine, nats_engine, database: str) -> dict[str, Any]:
    return testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database=database, redis_db=7
    )


def task_settings(engine_settings: dict[str, Any], temporal_address: str, queue: str) -> dict:
    return {
        **engine_settings,
        "temporal_address": temporal_address,
        "temporal_task_queue": f"test-workflow-budgets-{queue}-{RUN}",
        "tool_call_micros": TOOL_CALL_MICROS,
        # Every model priced (the local model is free by default): money is charged too.
        "default_model_price": {"prompt_micros_per_1k": 1_000, "completion_micros_per_1k": 2_000},
    }


@pytest.fixture(scope="module")
async def task(
    postgres_engine, redis_engine, nats_engine, temporal_engine, ledger_server
) -> AsyncIterator[testing.RunningService]:
    """The task service with tool_call steps going to the ledger, and the persona service (tasks
    are assigned to real personas)."""
    async with testing.running_service(
        persona_definition,
        **engines(postgres_engine, redis_engine, nats_engine, "test_wfb_persona"),
    ) as persona:
        service = dataclasses.replace(
            definition, build=builder(ledger_module.HttpLedgerTools(ledger_server.url))
        )
        async with testing.running_service(
            service,
            peers={"persona": persona.grpc_address},
            **task_settings(
                engines(postgres_engine, redis_engine, nats_engine, "test_wfb_task"),
                temporal_engine.url(),
                "tools",
            ),
        ) as svc:
            svc.persona = persona  # type: ignore[attr-defined]
            yield svc


@pytest.fixture(scope="module")
async def task_with_model(
    postgres_engine, redis_engine, nats_engine, temporal_engine, ledger_server
) -> AsyncIterator[testing.RunningService]:
    """The task service with the reasoning service (its real small model) as its model."""
    async with (
        testing.running_service(
            reasoning_definition,
            start_timeout=300,
            max_output_tokens=512,
            **engines(postgres_engine, redis_engine, nats_engine, "test_wfb_reasoning"),
        ) as reasoning,
        testing.running_service(
            definition,
            peers={"persona": "127.0.0.1:1", "reasoning": reasoning.grpc_address},
            **task_settings(
                engines(postgres_engine, redis_engine, nats_engine, "test_wfb_task_model"),
                temporal_engine.url(),
                "model",
            ),
        ) as svc,
    ):
        yield svc


class Api:
    def __init__(self, svc: testing.RunningService) -> None:
        self.runs = workflow_pb2_grpc.WorkflowServiceStub(svc.channel)
        self.approvals = workflow_pb2_grpc.ApprovalServiceStub(svc.channel)
        self.budgets = task_pb2_grpc.BudgetServiceStub(svc.channel)
        self.tasks = task_pb2_grpc.TaskServiceStub(svc.channel)

    async def define(self, name: str, steps: list[dict], md: Any) -> None:
        await self.runs.CreateWorkflowDefinition(
            workflow_pb2.CreateWorkflowDefinitionRequest(name=name, spec=struct({"steps": steps})),
            metadata=md,
        )

    async def start(self, name: str, md: Any) -> Any:
        return await self.runs.StartRun(
            workflow_pb2.StartRunRequest(workflow_name=name), metadata=md
        )

    async def finished(self, run_id: str, md: Any, within: float = 120.0) -> Any:
        terminal = {
            workflow_pb2.RUN_STATUS_SUCCEEDED,
            workflow_pb2.RUN_STATUS_FAILED,
            workflow_pb2.RUN_STATUS_CANCELLED,
        }
        latest: Any = None

        async def done() -> bool:
            nonlocal latest
            latest = await self.runs.GetRun(workflow_pb2.GetRunRequest(id=run_id), metadata=md)
            return latest.status in terminal

        await testing.wait_until(done, within, f"run {run_id} to finish")
        return latest

    async def set_budget(self, md: Any, **fields: Any) -> Any:
        return await self.budgets.SetBudget(task_pb2.SetBudgetRequest(**fields), metadata=md)

    async def budget(self, budget_id: str, md: Any) -> Any:
        listed = await self.budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=md)
        [found] = [b for b in listed.budgets if b.id == budget_id]
        return found

    async def usage(self, md: Any) -> list[Any]:
        return list((await self.budgets.QueryUsage(task_pb2.QueryUsageRequest(), metadata=md)).rows)


def step_of(run: Any, step_id: str) -> Any:
    [step] = [s for s in run.steps if s.id == step_id]
    return step


@pytest.fixture
def api(task) -> Api:
    return Api(task)


# -- tool_call steps ----------------------------------------------------------------------------


async def test_a_retried_tool_step_holds_once_and_settles_one_tool_call(api, ledger_server) -> None:
    _, md = tenant("retried")
    name = f"retried-{RUN}"
    budget = await api.set_budget(md, scope=task_pb2.BUDGET_SCOPE_TENANT, max_tool_calls=10)
    # The first attempt fails after its reservation: the activity is retried by Temporal.
    ledger_server.ledger.flaky.add(f"{name}-a")
    await api.define(name, [tool("a", f"{name}-a")], md)
    run = await api.start(name, md)
    done = await api.finished(run.id, md)
    assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
    assert step_of(done, "a").attempts >= 2
    calls = [c for c in ledger_server.ledger.calls if c["arguments"]["label"] == f"{name}-a"]
    assert len(calls) == 2
    assert ledger_server.ledger.labels().count(f"{name}-a") == 1
    # Two attempts, one reservation (same key), settled once with one tool call.
    after = await api.budget(budget.id, md)
    assert (after.used_tool_calls, after.reserved_tool_calls) == (1, 0)
    assert (after.used_cost_micros, after.reserved_cost_micros) == (TOOL_CALL_MICROS, 0)
    [row] = await api.usage(md)
    assert (row.persona_id, row.model, row.calls, row.tool_calls, row.cost_micros) == (
        "",
        "",
        1,
        1,
        TOOL_CALL_MICROS,
    )
    # The step's key, asked again (an activity retried after its settlement), counts nothing.
    key = f"workflow-step:run-{run.id}-1/step-a"
    again = await api.budgets.Reserve(
        task_pb2.ReserveRequest(key=key, run_id=run.id, tool_calls=1), metadata=md
    )
    assert again.status == task_pb2.RESERVATION_STATUS_SETTLED
    assert again.tool_calls == 1
    await api.budgets.Settle(task_pb2.SettleRequest(key=key, tool_calls=5), metadata=md)
    assert (await api.budget(budget.id, md)).used_tool_calls == 1
    assert [r.tool_calls for r in await api.usage(md)] == [1]


async def test_a_step_that_fails_for_good_releases_its_hold(api, ledger_server) -> None:
    _, md = tenant("released")
    name = f"released-{RUN}"
    budget = await api.set_budget(md, scope=task_pb2.BUDGET_SCOPE_TENANT, max_tool_calls=10)
    ledger_server.ledger.down.add(f"{name}-a")
    step = tool("a", f"{name}-a") | {"retry": {"maxAttempts": 3, "initialIntervalSeconds": 0.2}}
    await api.define(name, [step], md)
    done = await api.finished((await api.start(name, md)).id, md)
    assert done.status == workflow_pb2.RUN_STATUS_FAILED
    assert step_of(done, "a").attempts == 3
    # Three attempts held one tool call between them; the step's failure released it.
    after = await api.budget(budget.id, md)
    assert (after.used_tool_calls, after.reserved_tool_calls) == (0, 0)
    assert await api.usage(md) == []


async def test_a_step_over_a_refuse_budget_fails_naming_it_and_nothing_passes_the_cap(
    api, ledger_server
) -> None:
    _, md = tenant("refuse")
    name = f"refuse-{RUN}"
    budget = await api.set_budget(md, scope=task_pb2.BUDGET_SCOPE_TENANT, max_tool_calls=1)
    await api.define(name, [tool("a", f"{name}-a"), tool("b", f"{name}-b", after=["a"])], md)
    run = await api.start(name, md)
    done = await api.finished(run.id, md)
    assert done.status == workflow_pb2.RUN_STATUS_FAILED
    b = step_of(done, "b")
    assert b.status == workflow_pb2.STEP_STATUS_FAILED
    reason = f"over budget: the tenant budget {budget.id} has 0 tool_calls left; the call needs 1"
    assert reason in b.error
    assert reason in done.error and "step 'b' failed" in done.error
    # Refused without retries, and never called.
    assert b.attempts == 1
    assert f"{name}-b" not in {c["arguments"]["label"] for c in ledger_server.ledger.calls}
    after = await api.budget(budget.id, md)
    assert (after.used_tool_calls, after.reserved_tool_calls) == (1, 0)
    assert [r.tool_calls for r in await api.usage(md)] == [1]


async def test_a_tool_that_answers_with_an_error_counts_its_call(api, ledger_server) -> None:
    _, md = tenant("tool-error")
    name = f"tool-error-{RUN}"
    budget = await api.set_budget(md, scope=task_pb2.BUDGET_SCOPE_TENANT, max_tool_calls=10)
    ledger_server.ledger.refused.add(f"{name}-a")
    await api.define(name, [tool("a", f"{name}-a")], md)
    done = await api.finished((await api.start(name, md)).id, md)
    assert done.status == workflow_pb2.RUN_STATUS_FAILED
    assert f"{name}-a cannot be done" in step_of(done, "a").error
    after = await api.budget(budget.id, md)
    assert (after.used_tool_calls, after.reserved_tool_calls) == (1, 0)


async def test_a_step_over_an_approval_budget_fails_naming_the_approval_and_runs_once_approved(
    api, ledger_server
) -> None:
    client_id, md = tenant("approval")
    name = f"approval-{RUN}"
    budget = await api.set_budget(
        md,
        scope=task_pb2.BUDGET_SCOPE_TENANT,
        max_tool_calls=1,
        on_exceed=task_pb2.ON_EXCEED_APPROVAL,
    )
    await api.define(name, [tool("a", f"{name}-a"), tool("b", f"{name}-b", after=["a"])], md)
    run = await api.start(name, md)
    failed = await api.finished(run.id, md)
    assert failed.status == workflow_pb2.RUN_STATUS_FAILED
    pending = await api.approvals.ListApprovals(
        workflow_pb2.ListApprovalsRequest(status=workflow_pb2.APPROVAL_STATUS_PENDING),
        metadata=md,
    )
    [asked] = [a for a in pending.approvals if a.details["budget_id"] == budget.id]
    assert asked.details["kind"] == "budget_overrun"
    b = step_of(failed, "b")
    assert f"over budget {budget.id}: approval {asked.id} to run over it was requested" in b.error
    assert (await api.budget(budget.id, md)).reserved_tool_calls == 0

    await api.approvals.DecideApproval(
        workflow_pb2.DecideApprovalRequest(id=asked.id, approve=True, comment="fine"),
        metadata=admin(client_id),
    )
    await api.runs.RetryRun(workflow_pb2.RetryRunRequest(id=run.id), metadata=md)
    done = await api.finished(run.id, md)
    assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
    assert ledger_server.ledger.labels().count(f"{name}-b") == 1
    after = await api.budget(budget.id, md)
    assert (after.used_tool_calls, after.granted_tool_calls, after.reserved_tool_calls) == (2, 1, 0)


async def test_a_run_of_a_task_is_capped_by_the_tasks_budget_and_charged_to_its_persona(
    api, task, ledger_server
) -> None:
    client_id, md = tenant("persona")
    name = f"persona-{RUN}"
    personas = persona_pb2_grpc.PersonaServiceStub(task.persona.channel)
    ada = await personas.CreatePersona(
        persona_pb2.CreatePersonaRequest(name="Ada", role="analyst"), metadata=md
    )
    persona_budget = await api.set_budget(
        md, scope=task_pb2.BUDGET_SCOPE_PERSONA, scope_id=ada.id, max_tool_calls=10
    )
    job = await api.tasks.CreateTask(
        task_pb2.CreateTaskRequest(
            title="Record things",
            assignee_persona_id=ada.id,
            budget=task_pb2.TaskBudget(max_tool_calls=1),
        ),
        metadata=md,
    )
    steps = [
        {
            "id": "go",
            "type": "approval",
            "with": {"role": "approver", "title": "Start?", "expiresInSeconds": 3600},
        },
        tool("a", f"{name}-a", after=["go"]),
        tool("b", f"{name}-b", after=["a"]),
    ]
    await api.define(name, steps, md)
    run = await api.start(name, md)

    async def waiting() -> bool:
        got = await api.runs.GetRun(workflow_pb2.GetRunRequest(id=run.id), metadata=md)
        return got.status == workflow_pb2.RUN_STATUS_WAITING_FOR_APPROVAL

    await testing.wait_until(waiting, 60, "the run to wait for its first step's approval")
    # The engine attaches the run to the task: the task's budget becomes the run's.
    await api.tasks.TransitionTask(
        task_pb2.TransitionTaskRequest(
            id=job.id, status=task_pb2.TASK_STATUS_RUNNING, workflow_run_id=run.id
        ),
        metadata=md,
    )
    go = step_of(
        await api.runs.GetRun(workflow_pb2.GetRunRequest(id=run.id), metadata=md), "go"
    ).approval_id
    await api.approvals.DecideApproval(
        workflow_pb2.DecideApprovalRequest(id=go, approve=True),
        metadata=testing.tenant_metadata(client_id, subject="user:approver", role="approver"),
    )
    done = await api.finished(run.id, md)
    assert done.status == workflow_pb2.RUN_STATUS_FAILED
    listed = await api.budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=md)
    [run_budget] = [b for b in listed.budgets if b.scope == task_pb2.BUDGET_SCOPE_RUN]
    assert run_budget.scope_id == run.id
    assert (
        f"over budget: the run {run.id} budget {run_budget.id} has 0 tool_calls left"
        in step_of(done, "b").error
    )
    assert (run_budget.used_tool_calls, run_budget.reserved_tool_calls) == (1, 0)
    assert (await api.budget(persona_budget.id, md)).used_tool_calls == 1
    [row] = await api.usage(md)
    assert (row.persona_id, row.tool_calls) == (ada.id, 1)


async def test_steps_are_charged_to_their_own_tenants_budgets_and_usage(api) -> None:
    a_id, a_md = tenant("scope-a")
    b_id, b_md = tenant("scope-b")
    name = f"scoped-{RUN}"
    capped = await api.set_budget(a_md, scope=task_pb2.BUDGET_SCOPE_TENANT, max_tool_calls=1)
    for md, label in ((a_md, a_id), (b_md, b_id)):
        await api.define(name, [tool("only", f"{name}-{label}")], md)
    first = await api.finished((await api.start(name, a_md)).id, a_md)
    assert first.status == workflow_pb2.RUN_STATUS_SUCCEEDED, first.error
    # Tenant A's cap is spent; tenant B's runs are none of its business.
    second = await api.finished((await api.start(name, a_md)).id, a_md)
    assert second.status == workflow_pb2.RUN_STATUS_FAILED
    assert f"the tenant budget {capped.id}" in second.error
    for _ in range(2):
        theirs = await api.finished((await api.start(name, b_md)).id, b_md)
        assert theirs.status == workflow_pb2.RUN_STATUS_SUCCEEDED, theirs.error
    assert (await api.budget(capped.id, a_md)).used_tool_calls == 1
    b_budgets = await api.budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=b_md)
    assert capped.id not in {b.id for b in b_budgets.budgets}
    assert [(r.calls, r.tool_calls) for r in await api.usage(a_md)] == [(1, 1)]
    assert [(r.calls, r.tool_calls) for r in await api.usage(b_md)] == [(2, 2)]


# -- model_call steps (the real model) ----------------------------------------------------------


@pytest.mark.slow
async def test_a_model_step_is_charged_once_what_the_model_used(task_with_model) -> None:
    api = Api(task_with_model)
    _, md = tenant("model")
    name = f"model-{RUN}"
    budget = await api.set_budget(
        md, scope=task_pb2.BUDGET_SCOPE_TENANT, max_tokens=100_000, max_cost_micros=10_000_000
    )
    steps = [
        {
            "id": "draft",
            "type": "model_call",
            "with": {"prompt": "Reply with one word: yes.", "maxTokens": 8},
        }
    ]
    await api.define(name, steps, md)
    run = await api.start(name, md)
    done = await api.finished(run.id, md, within=600)
    assert done.status == workflow_pb2.RUN_STATUS_SUCCEEDED, done.error
    out = dict(done.output)["draft"]
    prompt, completion = int(out["promptTokens"]), int(out["completionTokens"])
    assert prompt > 0 and 0 < completion <= 8
    cost = prompt * 1 + completion * 2  # 1,000 and 2,000 micros per 1k tokens
    after = await api.budget(budget.id, md)
    assert (after.used_tokens, after.reserved_tokens) == (prompt + completion, 0)
    assert (after.used_cost_micros, after.reserved_cost_micros) == (cost, 0)
    [row] = await api.usage(md)
    assert (row.model, row.calls, row.prompt_tokens, row.completion_tokens, row.cost_micros) == (
        out["model"],
        1,
        prompt,
        completion,
        cost,
    )
    # The step's key asked again (its activity retried after the settlement) charges nothing.
    key = f"workflow-step:run-{run.id}-1/step-draft"
    again = await api.budgets.Reserve(
        task_pb2.ReserveRequest(key=key, run_id=run.id, tokens=50_000), metadata=md
    )
    assert again.status == task_pb2.RESERVATION_STATUS_SETTLED
    assert again.tokens == prompt + completion
    await api.budgets.Settle(
        task_pb2.SettleRequest(key=key, prompt_tokens=1_000, completion_tokens=1_000), metadata=md
    )
    assert (await api.budget(budget.id, md)).used_tokens == prompt + completion
    assert [r.calls for r in await api.usage(md)] == [1]


@pytest.mark.slow
async def test_a_model_step_over_a_refuse_budget_fails_before_calling_the_model(
    task_with_model,
) -> None:
    api = Api(task_with_model)
    _, md = tenant("model-refuse")
    name = f"model-refuse-{RUN}"
    budget = await api.set_budget(md, scope=task_pb2.BUDGET_SCOPE_TENANT, max_tokens=20)
    steps = [{"id": "draft", "type": "model_call", "with": {"prompt": "Hi.", "maxTokens": 64}}]
    await api.define(name, steps, md)
    run = await api.start(name, md)
    done = await api.finished(run.id, md, within=300)
    assert done.status == workflow_pb2.RUN_STATUS_FAILED
    draft = step_of(done, "draft")
    assert f"over budget: the tenant budget {budget.id} has 20 tokens left" in draft.error
    assert draft.attempts == 1
    after = await api.budget(budget.id, md)
    assert (after.used_tokens, after.reserved_tokens, after.used_cost_micros) == (0, 0, 0)
    assert await api.usage(md) == []
