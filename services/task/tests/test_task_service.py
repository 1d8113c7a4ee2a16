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
    postgres_engine, redis_engine, nats_engine, persona: testing.RunningService
) -> AsyncIterator[testing.RunningService]:
    settings = task_settings(postgres_engine, redis_engine, nats_engine)
    async with testing.running_service(
        definition, **settings, peers={"persona": persona.grpc_address}
    ) as svc:
        yield svc


def task_settings(postgres_engine, redis_engine, nats_engine) -> dict[str, str]:
    return testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_task", redis_db=5
    )


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
    assert created.status == task_pb2.TASK_STATUS_PENDING
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
    postgres_engine, redis_engine, nats_engine
) -> None:
    async with testing.running_service(
        definition,
        **task_settings(postgres_engine, redis_engine, nats_engine),
        peers={"persona": f"127.0.0.1:{_closed_port()}"},
    ) as svc:
        await _assignment_is_unavailable(svc, "persona service did not answer")


async def test_assignment_when_persona_service_hangs_is_unavailable(
    postgres_engine, redis_engine, nats_engine
) -> None:
    # A peer that accepts connections and never speaks gRPC: the call can only end by deadline.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with testing.running_service(
            definition,
            **task_settings(postgres_engine, redis_engine, nats_engine),
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
