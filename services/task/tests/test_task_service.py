"""The task service over real gRPC, with the real persona service as its peer, against embedded
PostgreSQL, Redis and NATS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import edrs_persona.app
import grpc
import pytest
from edrs_core.testing import RunningService, running_service
from edrs_proto.common.v1 import common_pb2
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from edrs_task.app import definition

pytestmark = pytest.mark.integration

TENANT_A = [("x-edrs-client-id", "tenant-a")]
TENANT_B = [("x-edrs-client-id", "tenant-b")]
MISSING_ID = "0190d6a0-0000-7000-8000-000000000000"


@pytest.fixture(scope="module")
async def persona(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    async with running_service(
        edrs_persona.app.definition,
        # Its own database, so these personas do not mix with the persona service's own tests.
        database_url=postgres_engine.url("test_task_persona"),
        redis_url=redis_engine.url(1),
        nats_url=nats_engine.url(),
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
async def task(
    postgres_engine, redis_engine, nats_engine, persona: RunningService
) -> AsyncIterator[RunningService]:
    async with running_service(
        definition,
        database_url=postgres_engine.url("test_task"),
        redis_url=redis_engine.url(5),
        nats_url=nats_engine.url(),
        peers={"persona": persona.grpc_address},
    ) as svc:
        yield svc


@pytest.fixture
def stub(task: RunningService) -> task_pb2_grpc.TaskServiceStub:
    return task_pb2_grpc.TaskServiceStub(task.channel)


async def _persona_in(persona: RunningService, tenant: list[tuple[str, str]]) -> str:
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
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateTask(
            task_pb2.CreateTaskRequest(title="t", assignee_persona_id=MISSING_ID),
            metadata=TENANT_A,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"assignee_persona_id {MISSING_ID} does not exist" in err.value.details()


async def test_persona_of_another_tenant_cannot_be_assigned(stub, persona) -> None:
    # The tenant travels to the persona service with the call, which then cannot see B's persona.
    theirs = await _persona_in(persona, TENANT_B)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateTask(
            task_pb2.CreateTaskRequest(title="t", assignee_persona_id=theirs), metadata=TENANT_A
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "assignee_persona_id" in err.value.details()
    listed = await stub.ListTasks(task_pb2.ListTasksRequest(), metadata=TENANT_A)
    assert theirs not in {t.assignee_persona_id for t in listed.tasks}


async def test_other_tenant_cannot_see_the_task(stub) -> None:
    created = await stub.CreateTask(task_pb2.CreateTaskRequest(title="private"), metadata=TENANT_A)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetTask(task_pb2.GetTaskRequest(id=created.id), metadata=TENANT_B)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
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
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateTask(request_, metadata=TENANT_A)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


async def test_call_without_tenant_is_refused(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListTasks(task_pb2.ListTasksRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-edrs-client-id" in err.value.details()


async def test_list_pages_through_every_task_once(stub) -> None:
    tenant = [("x-edrs-client-id", "tenant-paging")]
    made = [
        (await stub.CreateTask(task_pb2.CreateTaskRequest(title=f"t{i}"), metadata=tenant)).id
        for i in range(7)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListTasks(
            task_pb2.ListTasksRequest(page=common_pb2.PageRequest(page_size=3, page_token=token)),
            metadata=tenant,
        )
        assert len(page.tasks) <= 3
        seen += [t.id for t in page.tasks]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == made


async def test_bad_page_token_is_refused(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListTasks(
            task_pb2.ListTasksRequest(page=common_pb2.PageRequest(page_token="garbage!")),
            metadata=TENANT_A,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page.page_token" in err.value.details()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_assignment_while_persona_service_is_down_is_unavailable(
    postgres_engine, redis_engine, nats_engine
) -> None:
    async with running_service(
        definition,
        database_url=postgres_engine.url("test_task"),
        redis_url=redis_engine.url(5),
        nats_url=nats_engine.url(),
        peers={"persona": f"127.0.0.1:{_closed_port()}"},
    ) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await task_pb2_grpc.TaskServiceStub(svc.channel).CreateTask(
                task_pb2.CreateTaskRequest(title="t", assignee_persona_id=MISSING_ID),
                metadata=TENANT_A,
                timeout=10,
            )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "persona service did not answer" in err.value.details()


async def test_assignment_when_persona_service_hangs_is_unavailable(
    postgres_engine, redis_engine, nats_engine
) -> None:
    # A peer that accepts connections and never speaks gRPC: the call can only end by deadline.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with running_service(
            definition,
            database_url=postgres_engine.url("test_task"),
            redis_url=redis_engine.url(5),
            nats_url=nats_engine.url(),
            peers={"persona": f"127.0.0.1:{port}"},
            rpc_timeout_seconds=0.3,
        ) as svc:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await task_pb2_grpc.TaskServiceStub(svc.channel).CreateTask(
                    task_pb2.CreateTaskRequest(title="t", assignee_persona_id=MISSING_ID),
                    metadata=TENANT_A,
                    timeout=10,
                )
    finally:
        silent.close()
        await silent.wait_closed()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "DEADLINE_EXCEEDED" in err.value.details()
