"""Wires the task service: its stores, the persona and reasoning peers, Temporal, its gRPC
servicers, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.persona.v1 import persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc

from edrs_task.budgets import PriceTable
from edrs_task.config import TaskSettings
from edrs_task.decomposition import Decomposer
from edrs_task.personas import PersonaDirectory
from edrs_task.proposals import ModelProposalSource
from edrs_task.server import BudgetServicer, TaskServicer
from edrs_task.store.budgets import PostgresBudgetStore
from edrs_task.store.postgres import PostgresTaskStore
from edrs_task.temporal import check_temporal, connect_temporal


async def build(rt: Runtime[TaskSettings]) -> list[GrpcService]:
    settings = rt.settings
    events = await start_service_events(rt)
    # Required: a missing persona address stops start-up rather than failing each assignment.
    personas = PersonaDirectory(rt.peers.stub(persona_pb2_grpc.PersonaServiceStub, required=True))
    store = PostgresTaskStore(rt.db, events)
    # Optional: without a reasoning peer, only decomposition is unavailable (PeerNotConfigured).
    proposals = ModelProposalSource(
        rt.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub),
        max_tokens=settings.decomposition_max_tokens,
        timeout=settings.decomposition_timeout_seconds,
    )
    tasks = TaskServicer(store, personas, Decomposer(proposals, personas, store))
    prices = PriceTable(
        settings.model_prices, settings.default_model_price, settings.tool_call_micros
    )
    budgets = BudgetServicer(PostgresBudgetStore(rt.db, events, prices))
    temporal = await connect_temporal(settings, deadline_seconds=settings.startup_timeout_seconds)
    rt.add_check("temporal", lambda: check_temporal(temporal))
    return [
        GrpcService(
            task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
            tasks,
            task_pb2_grpc.add_TaskServiceServicer_to_server,
        ),
        GrpcService(
            task_pb2.DESCRIPTOR.services_by_name["BudgetService"].full_name,
            budgets,
            task_pb2_grpc.add_BudgetServiceServicer_to_server,
        ),
    ]


definition = ServiceDefinition(
    settings_cls=TaskSettings,
    build=build,
    migrations=files("edrs_task") / "migrations",
    local_ports=LocalPorts(grpc=50056, http=8110, metrics=8111),
)
