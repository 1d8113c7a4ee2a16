"""The task service over real gRPC, with the real persona service as its peer, against embedded
PostgreSQL, Redis and NATS."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import edrs_persona.app
import grpc
import pytest
from edrs_core import testing
from edrs_proto.common.v1 import common_pb2
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from edrs_task.app import definition
from google.protobuf.timestamp_pb2 import Timestamp

pytestmark = pytest.mark.integration

# Tenants of this run only: against a server kept from an earlier run (EDRS_TEST_POSTGRES_URL),
# fixed tenants would meet that run's personas, names and pages.
RUN = uuid.uuid4().hex[:8]
TENANT_A_ID = f"tenant-a-{RUN}"
TENANT_A = testing.tenant_metadata(TENANT_A_ID)
TENANT_B = testing.tenant_metadata(f"tenant-b-{RUN}")
MISSING_ID = "0190d6a0-0000-7000-8000-000000000000"


@pytest.fixture(scope="module")
async def persona(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    # Its own database, so these personas do not mix with the persona service's own tests.
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_task_persona", redis_db=1
    )
    async with testing.running_service(edrs_persona.app.definition, **settings) as svc:
        yield svc


@pytest.fixture(scope="module")
async def task(
    postgres_engine, redis_engine, nats_engine, temporal_engine, persona: testing.RunningService
) -> AsyncIterator[testing.RunningService]:
    settings = task_settings(postgres_engine, redis_engine, nats_engine, temporal_engine)
    async with testing.running_service(
        definition, **settings, peers={"persona": persona.grpc_address}
    ) as svc:
        yield svc


def task_settings(postgres_engine, redis_engine, nats_engine, temporal_engine) -> dict[str, str]:
    return {
        **testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database="test_task", redis_db=5
        ),
        "temporal_address": temporal_engine.url(),
    }


@pytest.fixture
def stub(task: testing.RunningService) -> task_pb2_grpc.TaskServiceStub:
    return task_pb2_grpc.TaskServiceStub(task.channel)


async def _persona_in(persona: testing.RunningService, tenant: list[tuple[str, str]]) -> str:
    created = await persona_pb2_grpc.PersonaServiceStub(persona.channel).CreatePersona(
        persona_pb2.CreatePersonaRequest(name="Ada", role="analyst"), metadata=tenant
    )
    return created.id


async def test_create_then_get_returns_what_was_stored(stub, persona) -> None:
    ada = await _persona_in(persona, TENANT_A)
    created = await stub.CreateTask(
        task_pb2.CreateTaskRequest(
            title="  Quarterly report ",
            description="Summarise Q3 sales",
            assignee_persona_id=ada,
            priority=1,
        ),
        metadata=TENANT_A,
    )
    assert created.title == "Quarterly report"
    assert created.assignee_persona_id == ada
    assert created.status == task_pb2.TASK_STATUS_QUEUED
    assert created.priority == 1
    fetched = await stub.GetTask(task_pb2.GetTaskRequest(id=created.id), metadata=TENANT_A)
    assert fetched == created


async def test_unassigned_task_gets_the_default_priority(stub) -> None:
    created = await stub.CreateTask(task_pb2.CreateTaskRequest(title="t"), metadata=TENANT_A)
    assert created.priority == 3
    assert created.assignee_persona_id == ""


async def test_assignee_that_does_not_exist_is_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.CreateTask(
            task_pb2.CreateTaskRequest(title="t", assignee_persona_id=MISSING_ID),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"assignee_persona_id {MISSING_ID} does not exist",
    )


async def test_persona_of_another_tenant_cannot_be_assigned(stub, persona) -> None:
    # The tenant travels to the persona service with the call, which then cannot see B's persona.
    theirs = await _persona_in(persona, TENANT_B)
    await testing.expect_rpc_error(
        stub.CreateTask(
            task_pb2.CreateTaskRequest(title="t", assignee_persona_id=theirs), metadata=TENANT_A
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "assignee_persona_id",
    )
    listed = await stub.ListTasks(task_pb2.ListTasksRequest(), metadata=TENANT_A)
    assert theirs not in {t.assignee_persona_id for t in listed.tasks}


async def test_other_tenant_cannot_see_the_task(stub) -> None:
    created = await stub.CreateTask(task_pb2.CreateTaskRequest(title="private"), metadata=TENANT_A)
    await testing.expect_rpc_error(
        stub.GetTask(task_pb2.GetTaskRequest(id=created.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListTasks(task_pb2.ListTasksRequest(), metadata=TENANT_B)
    assert created.id not in {t.id for t in listed.tasks}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (task_pb2.CreateTaskRequest(title=""), "title is required"),
        (task_pb2.CreateTaskRequest(title="t" * 501), "title is 501 characters"),
        (
            task_pb2.CreateTaskRequest(title="t", description="d" * 20_001),
            "description is 20001 characters",
        ),
        (task_pb2.CreateTaskRequest(title="t", priority=6), "priority must be between 1 and 5"),
        (task_pb2.CreateTaskRequest(title="t", priority=-1), "priority must be between 1 and 5"),
        (
            task_pb2.CreateTaskRequest(title="t", assignee_persona_id="ada"),
            "assignee_persona_id must be a UUID",
        ),
    ],
)
async def test_invalid_create_names_the_field(stub, request_, field) -> None:
    await testing.expect_rpc_error(
        stub.CreateTask(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, field
    )


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(stub.ListTasks(task_pb2.ListTasksRequest()))


async def test_list_pages_through_every_task_once(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-paging-{RUN}")
    made = [
        (await stub.CreateTask(task_pb2.CreateTaskRequest(title=f"t{i}"), metadata=tenant)).id
        for i in range(7)
    ]
    tasks = await testing.collect_pages(
        stub.ListTasks, task_pb2.ListTasksRequest, "tasks", page_size=3, metadata=tenant
    )
    assert [t.id for t in tasks] == made


async def test_bad_page_token_is_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.ListTasks(
            task_pb2.ListTasksRequest(page=common_pb2.PageRequest(page_token="garbage!")),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token",
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _assignment_is_unavailable(svc: testing.RunningService, reason: str) -> None:
    """Assigning a task on `svc` must fail UNAVAILABLE with `reason`, the persona check failing."""
    await testing.expect_rpc_error(
        task_pb2_grpc.TaskServiceStub(svc.channel).CreateTask(
            task_pb2.CreateTaskRequest(title="t", assignee_persona_id=MISSING_ID),
            metadata=TENANT_A,
            timeout=10,
        ),
        grpc.StatusCode.UNAVAILABLE,
        reason,
    )


async def test_assignment_while_persona_service_is_down_is_unavailable(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> None:
    async with testing.running_service(
        definition,
        **task_settings(postgres_engine, redis_engine, nats_engine, temporal_engine),
        peers={"persona": f"127.0.0.1:{_closed_port()}"},
    ) as svc:
        await _assignment_is_unavailable(svc, "persona service did not answer")


async def test_assignment_when_persona_service_hangs_is_unavailable(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> None:
    # A peer that accepts connections and never speaks gRPC: the call can only end by deadline.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with testing.running_service(
            definition,
            **task_settings(postgres_engine, redis_engine, nats_engine, temporal_engine),
            peers={"persona": f"127.0.0.1:{port}"},
            rpc_timeout_seconds=0.3,
        ) as svc:
            await _assignment_is_unavailable(svc, "DEADLINE_EXCEEDED")
    finally:
        silent.close()
        await silent.wait_closed()


async def test_a_created_task_is_announced_as_task_created(stub, task, persona) -> None:
    ada = await _persona_in(persona, TENANT_A)
    created = await stub.CreateTask(
        task_pb2.CreateTaskRequest(title="Announce me", assignee_persona_id=ada),
        metadata=TENANT_A,
    )
    [event] = await testing.published_events(task, "task.task_created", created.id)
    assert event["payload"] == {"task_id": created.id, "title": "Announce me", "persona_id": ada}
    assert (event["client_id"], event["source_container"]) == (TENANT_A_ID, "task")
    # A refused task announces nothing.
    await testing.expect_rpc_error(
        stub.CreateTask(
            task_pb2.CreateTaskRequest(title="Ghost", assignee_persona_id=MISSING_ID),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert task.runner.runtime is not None
    ghosts = await task.runner.runtime.db.fetchval(
        "SELECT count(*) FROM edrs_outbox WHERE convert_from(body, 'UTF8') LIKE '%Ghost%'"
    )
    assert ghosts == 0


# The lifecycle (issue 11): statuses, legal moves only, the timeline, filters and events.

S = task_pb2


async def _move(stub, task_id: str, status: int, **kw) -> task_pb2.Task:
    return await stub.TransitionTask(
        task_pb2.TransitionTaskRequest(id=task_id, status=status, **kw), metadata=TENANT_A
    )


async def test_a_task_moves_through_legal_statuses_and_its_timeline_says_so(stub) -> None:
    created = await stub.CreateTask(
        task_pb2.CreateTaskRequest(title="Lifecycle"), metadata=TENANT_A
    )
    running = await _move(stub, created.id, S.TASK_STATUS_RUNNING, workflow_run_id="run-1")
    assert (running.status, running.workflow_run_id) == (S.TASK_STATUS_RUNNING, "run-1")
    waiting = await _move(stub, created.id, S.TASK_STATUS_WAITING_FOR_APPROVAL, note="approve?")
    assert waiting.status == S.TASK_STATUS_WAITING_FOR_APPROVAL
    await _move(stub, created.id, S.TASK_STATUS_RUNNING, note="approved")
    done = await _move(stub, created.id, S.TASK_STATUS_SUCCEEDED, note="report sent")
    assert (done.status, done.outcome, done.workflow_run_id) == (
        S.TASK_STATUS_SUCCEEDED,
        "report sent",
        "run-1",
    )
    timeline = await stub.ListTaskTimeline(
        task_pb2.ListTaskTimelineRequest(id=created.id), metadata=TENANT_A
    )
    assert [(e.kind, e.from_status, e.to_status) for e in timeline.entries] == [
        ("created", 0, S.TASK_STATUS_QUEUED),
        ("run_attached", 0, 0),
        ("status_changed", S.TASK_STATUS_QUEUED, S.TASK_STATUS_RUNNING),
        ("status_changed", S.TASK_STATUS_RUNNING, S.TASK_STATUS_WAITING_FOR_APPROVAL),
        ("status_changed", S.TASK_STATUS_WAITING_FOR_APPROVAL, S.TASK_STATUS_RUNNING),
        ("status_changed", S.TASK_STATUS_RUNNING, S.TASK_STATUS_SUCCEEDED),
    ]
    assert timeline.entries[-1].note == "report sent"
    assert timeline.entries[0].actor  # the caller's subject


@pytest.mark.parametrize(
    ("path", "illegal", "message"),
    [
        ([], S.TASK_STATUS_SUCCEEDED, "a queued task cannot become succeeded"),
        (
            [],
            S.TASK_STATUS_WAITING_FOR_APPROVAL,
            "a queued task cannot become waiting_for_approval",
        ),
        (
            [S.TASK_STATUS_RUNNING, S.TASK_STATUS_FAILED],
            S.TASK_STATUS_RUNNING,
            "a failed task cannot become running (allowed from failed: none: it is final)",
        ),
        (
            [S.TASK_STATUS_RUNNING, S.TASK_STATUS_SUCCEEDED],
            S.TASK_STATUS_CANCELLED,
            "a succeeded task cannot become cancelled",
        ),
    ],
)
async def test_an_illegal_transition_is_refused_and_changes_nothing(
    stub, path, illegal, message
) -> None:
    created = await stub.CreateTask(task_pb2.CreateTaskRequest(title="t"), metadata=TENANT_A)
    for status in path:
        await _move(stub, created.id, status)
    before = await stub.GetTask(task_pb2.GetTaskRequest(id=created.id), metadata=TENANT_A)
    await testing.expect_rpc_error(
        _move(stub, created.id, illegal), grpc.StatusCode.FAILED_PRECONDITION, message
    )
    after = await stub.GetTask(task_pb2.GetTaskRequest(id=created.id), metadata=TENANT_A)
    assert after == before


async def test_cancel_stops_an_open_task_once_and_refuses_a_finished_one(stub, task) -> None:
    created = await stub.CreateTask(task_pb2.CreateTaskRequest(title="Stop me"), metadata=TENANT_A)
    cancelled = await stub.CancelTask(
        task_pb2.CancelTaskRequest(id=created.id, reason="not needed"), metadata=TENANT_A
    )
    assert (cancelled.status, cancelled.outcome) == (S.TASK_STATUS_CANCELLED, "not needed")
    again = await stub.CancelTask(task_pb2.CancelTaskRequest(id=created.id), metadata=TENANT_A)
    assert again == cancelled
    [event] = await testing.published_events(task, "task.task_completed", created.id)
    assert event["payload"] == {
        "task_id": created.id,
        "title": "Stop me",
        "status": "cancelled",
        "outcome": "not needed",
        "user_id": "test-user",
    }
    done = await stub.CreateTask(task_pb2.CreateTaskRequest(title="Done"), metadata=TENANT_A)
    await _move(stub, done.id, S.TASK_STATUS_RUNNING)
    await _move(stub, done.id, S.TASK_STATUS_SUCCEEDED)
    await testing.expect_rpc_error(
        stub.CancelTask(task_pb2.CancelTaskRequest(id=done.id), metadata=TENANT_A),
        grpc.StatusCode.FAILED_PRECONDITION,
        "a succeeded task cannot become cancelled",
    )


async def test_other_tenant_cannot_cancel_move_or_read_the_timeline(stub) -> None:
    created = await stub.CreateTask(task_pb2.CreateTaskRequest(title="mine"), metadata=TENANT_A)
    for call in (
        stub.CancelTask(task_pb2.CancelTaskRequest(id=created.id), metadata=TENANT_B),
        stub.TransitionTask(
            task_pb2.TransitionTaskRequest(id=created.id, status=S.TASK_STATUS_RUNNING),
            metadata=TENANT_B,
        ),
        stub.ListTaskTimeline(task_pb2.ListTaskTimelineRequest(id=created.id), metadata=TENANT_B),
        stub.DecomposeTask(task_pb2.DecomposeTaskRequest(id=created.id), metadata=TENANT_B),
    ):
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND)
    mine = await stub.GetTask(task_pb2.GetTaskRequest(id=created.id), metadata=TENANT_A)
    assert mine.status == S.TASK_STATUS_QUEUED


async def test_list_filters_by_status_persona_priority_and_due_date(stub, persona) -> None:
    tenant = testing.tenant_metadata(f"tenant-filters-{RUN}")
    ada = await _persona_in(persona, tenant)
    day = 86_400

    def due(days: int):
        return Timestamp(seconds=1_900_000_000 + days * day)

    a = await stub.CreateTask(
        task_pb2.CreateTaskRequest(title="a", assignee_persona_id=ada, priority=1, due_time=due(1)),
        metadata=tenant,
    )
    b = await stub.CreateTask(
        task_pb2.CreateTaskRequest(title="b", priority=2, due_time=due(5)), metadata=tenant
    )
    c = await stub.CreateTask(task_pb2.CreateTaskRequest(title="c", priority=1), metadata=tenant)
    await stub.TransitionTask(
        task_pb2.TransitionTaskRequest(id=b.id, status=S.TASK_STATUS_RUNNING), metadata=tenant
    )

    async def ids(**filters) -> list[str]:
        reply = await stub.ListTasks(task_pb2.ListTasksRequest(**filters), metadata=tenant)
        return [t.id for t in reply.tasks]

    assert await ids() == [a.id, b.id, c.id]
    assert await ids(statuses=[S.TASK_STATUS_RUNNING]) == [b.id]
    assert await ids(statuses=[S.TASK_STATUS_QUEUED, S.TASK_STATUS_RUNNING]) == [a.id, b.id, c.id]
    assert await ids(assignee_persona_id=ada) == [a.id]
    assert await ids(priority=1) == [a.id, c.id]
    assert await ids(due_before_time=due(3)) == [a.id]
    assert await ids(due_after_time=due(3)) == [b.id]
    assert await ids(priority=1, statuses=[S.TASK_STATUS_RUNNING]) == []
    fetched = await stub.GetTask(task_pb2.GetTaskRequest(id=a.id), metadata=tenant)
    assert fetched.due_time == due(1)
    await testing.expect_rpc_error(
        stub.ListTasks(task_pb2.ListTasksRequest(statuses=[42]), metadata=tenant),
        grpc.StatusCode.INVALID_ARGUMENT,
        "statuses[0] must be one of",
    )


async def test_assignment_at_creation_is_announced_as_task_assigned(stub, task, persona) -> None:
    ada = await _persona_in(persona, TENANT_A)
    created = await stub.CreateTask(
        task_pb2.CreateTaskRequest(title="Assigned", assignee_persona_id=ada), metadata=TENANT_A
    )
    [event] = await testing.published_events(task, "task.task_assigned", created.id)
    assert event["payload"] == {
        "task_id": created.id,
        "persona_id": ada,
        "reason": "assigned when the task was created",
    }


async def test_a_task_budget_becomes_its_run_budget(stub, task) -> None:
    created = await stub.CreateTask(
        task_pb2.CreateTaskRequest(title="Capped", budget=task_pb2.TaskBudget(max_tokens=500)),
        metadata=TENANT_A,
    )
    assert created.budget.max_tokens == 500
    run_id = f"run-{created.id}"
    await _move(stub, created.id, S.TASK_STATUS_RUNNING, workflow_run_id=run_id)
    budgets = task_pb2_grpc.BudgetServiceStub(task.channel)
    await testing.expect_rpc_error(
        budgets.Reserve(
            task_pb2.ReserveRequest(key=f"{run_id}:1", run_id=run_id, tokens=501),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the run {run_id} budget",
    )
