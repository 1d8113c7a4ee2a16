"""Wires the task service: its stores, the persona and reasoning peers, Temporal, its gRPC
servicers, its migrations."""

from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_core.notifications import Notifications
from edrs_core.temporal import check_temporal, connect_temporal
from edrs_proto.integration.v1 import tools_pb2_grpc
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc, workflow_pb2, workflow_pb2_grpc

from edrs_task.budget_server import TemporalApprovalWaits
from edrs_task.budgets import PriceTable
from edrs_task.config import TaskSettings
from edrs_task.decomposition import Decomposer
from edrs_task.durable.activities import WorkflowActivities
from edrs_task.durable.charges import StepBudgets
from edrs_task.durable.steps import IntegrationTools, StepExecutors, ToolCaller
from edrs_task.durable.worker import build_worker
from edrs_task.personas import PersonaDirectory
from edrs_task.proposals import ModelProposalSource
from edrs_task.server import BudgetServicer, TaskServicer
from edrs_task.store.budgets import PostgresBudgetStore
from edrs_task.store.postgres import PostgresTaskStore
from edrs_task.store.workflows import WorkflowStore
from edrs_task.workflow_server import ApprovalServicer, ScheduleServicer, WorkflowServicer


def builder(
    tools: ToolCaller | None = None,
) -> Callable[[Runtime[TaskSettings]], Awaitable[Sequence[GrpcService]]]:
    """The service's build with `tools` as the target of tool_call steps (default: the
    integration service's ToolService); tests give a tool of their own."""

    async def build_with_tools(rt: Runtime[TaskSettings]) -> Sequence[GrpcService]:
        return await build(rt, tools)

    return build_with_tools


async def build(rt: Runtime[TaskSettings], tools: ToolCaller | None = None) -> list[GrpcService]:
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
    temporal = await connect_temporal(
        settings, settings.temporal_address, deadline_seconds=settings.startup_timeout_seconds
    )
    rt.add_check("temporal", lambda: check_temporal(temporal))
    if tools is None:
        tools = IntegrationTools(
            rt.peers.stub(tools_pb2_grpc.ToolServiceStub), "integration" in settings.peers
        )
    workflows = WorkflowStore(rt.db, events)
    budget_store = PostgresBudgetStore(rt.db, events, prices, workflows)
    waits = TemporalApprovalWaits(temporal, settings.temporal_task_queue)
    budgets = BudgetServicer(budget_store, waits)
    reasoning = rt.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub)
    executors = StepExecutors(
        reasoning, rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub), tools
    )
    # Workflow steps reserve from the same budgets store, in process (durable/charges.py).
    activities = WorkflowActivities(
        workflows, executors, StepBudgets(budget_store, waits, reasoning)
    )
    worker = build_worker(temporal, settings.temporal_task_queue, activities)
    rt.spawn(worker.run(), "temporal-worker")
    notifications = Notifications(rt.db)
    rt.on_close(notifications.close)
    queue, heartbeat = settings.temporal_task_queue, settings.workflow_heartbeat_seconds
    runs = WorkflowServicer(
        workflows, temporal, notifications, tools, task_queue=queue, heartbeat_seconds=heartbeat
    )
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
        GrpcService(
            workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
            runs,
            workflow_pb2_grpc.add_WorkflowServiceServicer_to_server,
        ),
        GrpcService(
            workflow_pb2.DESCRIPTOR.services_by_name["ApprovalService"].full_name,
            ApprovalServicer(workflows, temporal, notifications, queue),
            workflow_pb2_grpc.add_ApprovalServiceServicer_to_server,
        ),
        GrpcService(
            workflow_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
            ScheduleServicer(workflows, temporal, task_queue=queue, heartbeat_seconds=heartbeat),
            workflow_pb2_grpc.add_ScheduleServiceServicer_to_server,
        ),
    ]


definition = ServiceDefinition(
    settings_cls=TaskSettings,
    build=build,
    migrations=files("edrs_task") / "migrations",
    local_ports=LocalPorts(grpc=50056, http=8110, metrics=8111),
)
