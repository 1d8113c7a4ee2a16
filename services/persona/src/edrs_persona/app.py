"""Wires the persona service: its store, its peers, its gRPC servicer, its migrations."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.consumers import ConsumedEvent, Consumer
from edrs_core.events import ServiceEvents, start_service_events
from edrs_events import ConsumerOptions
from edrs_proto.integration.v1 import tools_pb2_grpc
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.memory.v1 import memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc
from edrs_proto.research.v1 import research_pb2_grpc
from edrs_proto.task.v1 import task_pb2_grpc, workflow_pb2_grpc

from edrs_persona import approved_calls, erasure, task_notices
from edrs_persona.budgets import TurnBudgets
from edrs_persona.config import PersonaSettings
from edrs_persona.conversation import Conversations
from edrs_persona.knowledge import KnowledgeSources
from edrs_persona.research import ResearchRequests
from edrs_persona.server import PersonaServicer, Voices
from edrs_persona.store.postgres import PostgresPersonaStore
from edrs_persona.tool_use import NoApprovalService, TaskApprovals, ToolUse
from edrs_persona.turns import TurnGate


async def build(rt: Runtime[PersonaSettings]) -> list[GrpcService]:
    settings = rt.settings
    assert rt.redis is not None  # PersonaSettings.uses_redis: required at start-up
    events = await start_service_events(rt)
    store = PostgresPersonaStore(rt.db, events)
    memory = rt.peers.stub(memory_pb2_grpc.MemoryServiceStub)
    reasoning = rt.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub)
    # Needed only by personas with collections attached: a fleet without knowledge still runs.
    knowledge = KnowledgeSources(rt.peers.stub(knowledge_pb2_grpc.KnowledgeServiceStub), settings)
    gate = TurnGate(
        rt.redis,
        policy=settings.turn_policy,
        max_queued=settings.max_queued_turns,
        lock_seconds=settings.turn_lock_seconds,
    )
    # Budgets are enforced when the task service has an address (the fleet gives every peer's).
    budgets = TurnBudgets(
        rt.peers.stub(task_pb2_grpc.BudgetServiceStub) if "task" in settings.peers else None
    )
    tool_use = ToolUse(
        rt.peers.stub(tools_pb2_grpc.ToolServiceStub),
        # Held calls become approvals in the task service when it has an address.
        TaskApprovals(rt.peers.stub(workflow_pb2_grpc.ApprovalServiceStub), store)
        if "task" in settings.peers
        else NoApprovalService(),
        default_rounds=settings.tool_rounds,
        call_timeout=settings.tool_call_timeout_seconds,
        result_chars=settings.tool_result_prompt_chars,
    )
    # "Research: ..." starts a research job when the fleet has a research service.
    research = ResearchRequests(
        rt.peers.stub(research_pb2_grpc.ResearchServiceStub)
        if "research" in settings.peers
        else None
    )
    conversations = Conversations(
        store, memory, reasoning, knowledge, gate, settings, budgets, tool_use, research
    )

    async def drain_turns() -> None:
        await conversations.drain(settings.shutdown_grace_seconds)

    rt.on_close(drain_turns)
    servicer = PersonaServicer(store, memory, conversations, Voices(reasoning), knowledge)
    return [
        GrpcService(
            persona_pb2.DESCRIPTOR.services_by_name["PersonaService"].full_name,
            servicer,
            persona_pb2_grpc.add_PersonaServiceServicer_to_server,
        )
    ]


async def erase_user(delivery: ConsumedEvent[PersonaSettings]) -> None:
    rt = delivery.runtime
    await erasure.erase_user(
        delivery, PostgresPersonaStore(rt.db, ServiceEvents(rt.settings.service_name))
    )


async def remember_completed_task(delivery: ConsumedEvent[PersonaSettings]) -> None:
    rt = delivery.runtime
    await task_notices.remember_completed_task(
        delivery, PostgresPersonaStore(rt.db, ServiceEvents(rt.settings.service_name))
    )


async def settle_decided_call(delivery: ConsumedEvent[PersonaSettings]) -> None:
    rt = delivery.runtime
    await approved_calls.settle_decided_call(
        delivery,
        PostgresPersonaStore(rt.db, ServiceEvents(rt.settings.service_name)),
        rt.peers.stub(tools_pb2_grpc.ToolServiceStub),
        rt.peers.stub(workflow_pb2_grpc.ApprovalServiceStub),
    )


definition = ServiceDefinition(
    settings_cls=PersonaSettings,
    build=build,
    migrations=files("edrs_persona") / "migrations",
    local_ports=LocalPorts(grpc=50052, http=8102, metrics=8103),
    consumers=[
        # An erase must not give up soon: ten tries, the last ones 30 s apart, then the DLQ.
        Consumer(
            erasure.CONSUMER,
            ["gateway.user_deleted"],
            erase_user,
            ConsumerOptions(max_deliver=10),
        ),
        # The user who asked for a task hears it finished in their next conversation.
        Consumer(task_notices.CONSUMER, ["task.task_completed"], remember_completed_task),
        # A held tool call runs once when approved; its outcome is told in its conversation.
        Consumer(approved_calls.CONSUMER, ["task.approval_decided"], settle_decided_call),
    ],
)
