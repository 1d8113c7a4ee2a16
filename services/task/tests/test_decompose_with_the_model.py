"""DecomposeTask end to end with the real model (the reasoning service's small local model), the
real persona service and the task service: the proposal is generated under the proposal's JSON
Schema, validated, and becomes subtasks assigned by skill, with their reasons and timeline."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from edrs_core import testing
from edrs_persona.app import definition as persona_definition
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from edrs_reasoning.app import definition as reasoning_definition
from edrs_task.app import definition
from edrs_task.decomposition import STEP_TYPES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
async def task(
    postgres_engine, redis_engine, nats_engine, temporal_engine
) -> AsyncIterator[testing.RunningService]:
    def engines(database: str) -> dict[str, str]:
        return testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=database, redis_db=6
        )

    async with (
        testing.running_service(
            reasoning_definition,
            start_timeout=300,
            max_output_tokens=512,
            **engines("test_decompose_reasoning"),
        ) as reasoning,
        testing.running_service(persona_definition, **engines("test_decompose_persona")) as persona,
        testing.running_service(
            definition,
            peers={"persona": persona.grpc_address, "reasoning": reasoning.grpc_address},
            temporal_address=temporal_engine.url(),
            decomposition_max_tokens=400,
            **engines("test_decompose_task"),
        ) as svc,
    ):
        svc.persona = persona  # type: ignore[attr-defined]
        yield svc


async def test_the_model_decomposes_a_goal_into_assigned_subtasks(task) -> None:
    md = testing.tenant_metadata(f"tenant-decompose-{uuid.uuid4().hex[:8]}")
    personas = persona_pb2_grpc.PersonaServiceStub(task.persona.channel)
    for name, skills in (("Ada", ["research", "analysis"]), ("Bob", ["writing", "editing"])):
        await personas.CreatePersona(
            persona_pb2.CreatePersonaRequest(name=name, role="analyst", skills=skills),
            metadata=md,
        )
    stub = task_pb2_grpc.TaskServiceStub(task.channel)
    goal = await stub.CreateTask(
        task_pb2.CreateTaskRequest(
            title="Publish a one-page market summary",
            description="Research the market, then write and edit the summary.",
        ),
        metadata=md,
    )
    reply = await stub.DecomposeTask(
        task_pb2.DecomposeTaskRequest(id=goal.id, max_subtasks=4), metadata=md, timeout=600
    )
    subtasks = list(reply.subtasks)
    assert 1 <= len(subtasks) <= 4
    ids = {s.id for s in subtasks}
    for s in subtasks:
        assert s.parent_task_id == goal.id
        assert s.step_type in STEP_TYPES
        assert set(s.depends_on) <= ids - {s.id}
        assert s.assignment_reason  # who, and why (or why nobody)
        assert s.status == task_pb2.TASK_STATUS_QUEUED
    listed = await stub.ListTasks(task_pb2.ListTasksRequest(parent_task_id=goal.id), metadata=md)
    assert {t.id for t in listed.tasks} == ids
    timeline = await stub.ListTaskTimeline(
        task_pb2.ListTaskTimelineRequest(id=goal.id), metadata=md
    )
    assert timeline.entries[-1].kind == "decomposed"
