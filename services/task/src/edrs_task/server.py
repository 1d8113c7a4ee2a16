"""The task gRPC servicer: validates requests, checks assignees, scopes to the caller's tenant."""

from __future__ import annotations

from edrs_core import NotFound, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc

from edrs_task.personas import PersonaDirectory
from edrs_task.store import NewTask, Task, TaskStore

DEFAULT_PRIORITY = 3

_STATUS = {
    "pending": task_pb2.TASK_STATUS_PENDING,
    "running": task_pb2.TASK_STATUS_RUNNING,
    "succeeded": task_pb2.TASK_STATUS_SUCCEEDED,
    "failed": task_pb2.TASK_STATUS_FAILED,
    "cancelled": task_pb2.TASK_STATUS_CANCELLED,
}


def to_proto(t: Task) -> task_pb2.Task:
    return task_pb2.Task(
        id=str(t.id),
        title=t.title,
        description=t.description,
        assignee_persona_id=str(t.assignee_persona_id) if t.assignee_persona_id else "",
        status=_STATUS[t.status],
        priority=t.priority,
        create_time=timestamp(t.created_at),
        update_time=timestamp(t.updated_at),
    )


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, store: TaskStore, personas: PersonaDirectory) -> None:
        self.store = store
        self.personas = personas

    async def CreateTask(  # noqa: N802 (gRPC method name)
        self, request: task_pb2.CreateTaskRequest, context: ServicerContext
    ) -> task_pb2.Task:
        client_id = require_client_id()
        assignee = None
        if request.assignee_persona_id.strip():
            assignee = parse_id(request.assignee_persona_id.strip(), "assignee_persona_id")
        new = NewTask(
            title=validation.text(request.title, "title", max_length=500),
            description=validation.text(
                request.description, "description", max_length=20_000, required=False
            ),
            assignee_persona_id=assignee,
            priority=(
                validation.int_range(request.priority, "priority", low=1, high=5)
                if request.priority
                else DEFAULT_PRIORITY
            ),
        )
        # Checked last, so a request that is invalid anyway costs no call to the persona service.
        if assignee is not None:
            await self.personas.ensure_exists(assignee, "assignee_persona_id")
        return to_proto(await self.store.create(client_id, new))

    async def GetTask(  # noqa: N802
        self, request: task_pb2.GetTaskRequest, context: ServicerContext
    ) -> task_pb2.Task:
        client_id = require_client_id()
        task = await self.store.get(client_id, parse_id(request.id))
        if task is None:
            raise NotFound(f"task {request.id} not found")
        return to_proto(task)

    async def ListTasks(  # noqa: N802
        self, request: task_pb2.ListTasksRequest, context: ServicerContext
    ) -> task_pb2.ListTasksResponse:
        client_id = require_client_id()
        tasks, token = await self.store.list(
            client_id, request.page.page_token, request.page.page_size
        )
        return task_pb2.ListTasksResponse(
            tasks=[to_proto(t) for t in tasks],
            page=common_pb2.PageInfo(next_page_token=token),
        )
