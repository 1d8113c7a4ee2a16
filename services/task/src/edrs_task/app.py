"""Wires the task service: its store, the persona peer, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.persona.v1 import persona_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc

from edrs_task.config import TaskSettings
from edrs_task.personas import PersonaDirectory
from edrs_task.server import TaskServicer
from edrs_task.store.postgres import PostgresTaskStore


async def build(rt: Runtime[TaskSettings]) -> list[GrpcService]:
    # Required: a missing persona address stops start-up rather than failing each assignment.
    personas = PersonaDirectory(rt.peers.stub(persona_pb2_grpc.PersonaServiceStub, required=True))
    servicer = TaskServicer(PostgresTaskStore(rt.db, await start_service_events(rt)), personas)
    return [
        GrpcService(
            task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
            servicer,
            task_pb2_grpc.add_TaskServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=TaskSettings,
    build=build,
    migrations=files("edrs_task") / "migrations",
    local_ports=LocalPorts(grpc=50056, http=8110, metrics=8111),
)
