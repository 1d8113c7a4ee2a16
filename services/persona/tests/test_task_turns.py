"""A persona turn and the task service, all real (models included): the turn's model call is
reserved from the budgets and settled with the real token counts, a refusing budget refuses the
turn, and a task the user asked for is told to them in their next conversation with its assignee,
once."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_memory.app import definition as memory_definition
from edrs_persona.app import definition
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc, workflow_pb2, workflow_pb2_grpc
from edrs_reasoning.app import definition as reasoning_definition
from edrs_task.app import definition as task_definition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 12
RUN = uuid.uuid4().hex[:8]
USER = "test-user"  # the subject of testing.tenant_metadata's token: the task's requester
OPTIONS = persona_pb2.ConverseOptions(max_tokens=16, temperature=0.0)


@pytest.fixture(scope="module")
def engines(postgres_engine, redis_engine, nats_engine):
    def settings(database: str) -> dict[str, str]:
        return testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=database, redis_db=REDIS_DB
        )

    return settings


@pytest.fixture(scope="module")
async def fleet(engines, temporal_engine) -> AsyncIterator[dict[str, testing.RunningService]]:
    """reasoning, memory, persona and task; persona and task are each other's peers, so the task
    service's port is chosen before persona starts."""
    async with (
        testing.running_service(
            reasoning_definition,
            start_timeout=300,
            max_output_tokens=64,
            default_max_tokens=16,
            **engines("test_task_turns_reasoning"),
        ) as reasoning,
        testing.running_service(
            memory_definition,
            peers={"reasoning": reasoning.grpc_address},
            rpc_timeout_seconds=60.0,
            **engines("test_task_turns_memory"),
        ) as memory,
    ):
        task_port = free_port()
        peers = {
            "memory": memory.grpc_address,
            "reasoning": reasoning.grpc_address,
            "task": f"127.0.0.1:{task_port}",
        }
        async with (
            testing.running_service(
                definition, peers=peers, **engines("test_task_turns_persona")
            ) as persona,
            testing.running_service(
                task_definition,
                grpc_port=task_port,
                peers={"persona": persona.grpc_address},
                temporal_address=temporal_engine.url(),
                **engines("test_task_turns_task"),
            ) as task,
        ):
            yield {"reasoning": reasoning, "persona": persona, "task": task}


def _tenant() -> tuple[str, list[tuple[str, str]]]:
    tenant = f"tenant-turns-{uuid.uuid4().hex[:8]}"
    return tenant, testing.tenant_metadata(tenant)


async def _persona(fleet, md) -> persona_pb2.Persona:
    return await persona_pb2_grpc.PersonaServiceStub(fleet["persona"].channel).CreatePersona(
        persona_pb2.CreatePersonaRequest(
            name="Ada", role="analyst", instructions="Answer in one short sentence."
        ),
        metadata=md,
    )


async def _converse(fleet, md, persona_id: str, text: str) -> list[persona_pb2.ConverseEvent]:
    stub = persona_pb2_grpc.PersonaServiceStub(fleet["persona"].channel)
    request = persona_pb2.ConverseRequest(
        persona_id=persona_id, conversation_id="c1", user_id=USER, text=text, options=OPTIONS
    )
    return [e async for e in stub.Converse(request, metadata=md)]


async def test_a_turn_is_reserved_and_settled_with_its_real_tokens(fleet) -> None:
    _, md = _tenant()
    ada = await _persona(fleet, md)
    budgets = task_pb2_grpc.BudgetServiceStub(fleet["task"].channel)
    cap = await budgets.SetBudget(
        task_pb2.SetBudgetRequest(
            scope=task_pb2.BUDGET_SCOPE_PERSONA, scope_id=ada.id, max_tokens=100_000
        ),
        metadata=md,
    )
    events = await _converse(fleet, md, ada.id, "Hello!")
    done = events[-1].completed
    assert done.prompt_tokens > 0 and done.completion_tokens > 0
    [after] = [
        b
        for b in (await budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=md)).budgets
        if b.id == cap.id
    ]
    assert after.used_tokens == done.prompt_tokens + done.completion_tokens
    assert after.reserved_tokens == 0
    usage = await budgets.QueryUsage(task_pb2.QueryUsageRequest(persona_id=ada.id), metadata=md)
    [row] = usage.rows
    info = await reasoning_pb2_grpc.ReasoningServiceStub(fleet["reasoning"].channel).GetModelInfo(
        reasoning_pb2.GetModelInfoRequest(), metadata=md
    )
    assert (row.model, row.calls, row.prompt_tokens, row.completion_tokens) == (
        info.chat_model,
        1,
        done.prompt_tokens,
        done.completion_tokens,
    )


async def test_a_budget_too_small_for_the_turn_refuses_it(fleet) -> None:
    _, md = _tenant()
    ada = await _persona(fleet, md)
    budgets = task_pb2_grpc.BudgetServiceStub(fleet["task"].channel)
    await budgets.SetBudget(
        task_pb2.SetBudgetRequest(
            scope=task_pb2.BUDGET_SCOPE_PERSONA, scope_id=ada.id, max_tokens=10
        ),
        metadata=md,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _converse(fleet, md, ada.id, "Hello!")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"the persona {ada.id} budget" in (refused.value.details() or "")
    traces = await reasoning_pb2_grpc.ReasoningServiceStub(fleet["reasoning"].channel).ListTraces(
        reasoning_pb2.ListTracesRequest(), metadata=md
    )
    assert list(traces.traces) == []  # the model was never called


async def test_a_turn_over_an_approval_budget_names_the_approval_and_runs_once_approved(
    fleet,
) -> None:
    _, md = _tenant()
    ada = await _persona(fleet, md)
    budgets = task_pb2_grpc.BudgetServiceStub(fleet["task"].channel)
    approvals = workflow_pb2_grpc.ApprovalServiceStub(fleet["task"].channel)

    async def cap(tokens: int, on_exceed: task_pb2.OnExceed.ValueType) -> None:
        await budgets.SetBudget(
            task_pb2.SetBudgetRequest(
                scope=task_pb2.BUDGET_SCOPE_PERSONA,
                scope_id=ada.id,
                max_tokens=tokens,
                on_exceed=on_exceed,
                period=task_pb2.BUDGET_PERIOD_DAY,
            ),
            metadata=md,
        )

    # What one turn asks for, read from a refusal.
    await cap(1, task_pb2.ON_EXCEED_REFUSE)
    with pytest.raises(grpc.aio.AioRpcError) as sized:
        await _converse(fleet, md, ada.id, "Hello!")
    needs = int(re.search(r"the call needs (\d+)", sized.value.details() or "")[1])
    # Too small for a second turn (whose history is longer), but two caps hold it.
    await cap(needs, task_pb2.ON_EXCEED_APPROVAL)
    with pytest.raises(grpc.aio.AioRpcError) as waiting:
        await _converse(fleet, md, ada.id, "Hello!")
    assert waiting.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    found = re.search(r"waits for approval ([0-9a-f-]{36})", waiting.value.details() or "")
    assert found, waiting.value.details()
    approval_id = found[1]
    asked = await approvals.GetApproval(
        workflow_pb2.GetApprovalRequest(id=approval_id), metadata=md
    )
    assert asked.status == workflow_pb2.APPROVAL_STATUS_PENDING
    assert asked.details["scope_id"] == ada.id

    await approvals.DecideApproval(
        workflow_pb2.DecideApprovalRequest(id=approval_id, approve=True),
        metadata=testing.tenant_metadata(testing.tenant_of(md), role="admin"),
    )
    events = await _converse(fleet, md, ada.id, "Hello!")
    done = events[-1].completed
    assert done.completion_tokens > 0
    [after] = [
        b
        for b in (await budgets.ListBudgets(task_pb2.ListBudgetsRequest(), metadata=md)).budgets
        if b.scope_id == ada.id
    ]
    assert after.granted_tokens == needs
    assert after.used_tokens == done.prompt_tokens + done.completion_tokens


async def test_a_finished_task_is_told_in_the_next_conversation_once(fleet) -> None:
    tenant, md = _tenant()
    ada = await _persona(fleet, md)
    tasks = task_pb2_grpc.TaskServiceStub(fleet["task"].channel)
    made = await tasks.CreateTask(
        task_pb2.CreateTaskRequest(title="Quarterly report", assignee_persona_id=ada.id),
        metadata=md,
    )
    for status, note in (
        (task_pb2.TASK_STATUS_RUNNING, ""),
        (task_pb2.TASK_STATUS_SUCCEEDED, "sent to the board"),
    ):
        await tasks.TransitionTask(
            task_pb2.TransitionTaskRequest(id=made.id, status=status, note=note), metadata=md
        )
    persona_db = fleet["persona"].runner.runtime
    assert persona_db is not None

    async def noticed() -> bool:
        return bool(
            await persona_db.db.fetchval(
                "SELECT count(*) FROM task_notices WHERE client_id = $1 AND task_id = $2",
                tenant,
                uuid.UUID(made.id),
            )
        )

    await testing.wait_until(noticed, 30, "the task.task_completed notice in the persona service")
    reasoning = reasoning_pb2_grpc.ReasoningServiceStub(fleet["reasoning"].channel)

    async def told(events) -> list[str]:
        trace = await reasoning.GetTrace(
            reasoning_pb2.GetTraceRequest(id=events[-1].completed.trace_id), metadata=md
        )
        return [c.text for c in trace.context if c.source == "task.completed"]

    first = await _converse(fleet, md, ada.id, "Hi, anything new?")
    assert await told(first) == ['The task "Quarterly report" succeeded: sent to the board']
    trace = await reasoning.GetTrace(
        reasoning_pb2.GetTraceRequest(id=first[-1].completed.trace_id), metadata=md
    )
    assert 'The task "Quarterly report" succeeded' in trace.messages[0].content
    second = await _converse(fleet, md, ada.id, "Thanks.")
    assert await told(second) == []
