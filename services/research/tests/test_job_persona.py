"""A research job started for a persona, with the whole fleet it touches real: the task service
(its task, budgets), the persona service (the assignee, and the consumer of task.task_completed
that tells the user in the next turn), knowledge, reasoning and Temporal."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_proto.knowledge.v1 import knowledge_pb2 as kpb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_proto.research.v1 import research_pb2 as pb
from edrs_proto.research.v1 import research_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from edrs_research.app import definition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = uuid.uuid4().hex[:8]
REDIS_DB = 15
QUESTION = "What propels the Orion probe?"
FACT = "The Orion probe is propelled by a xenon ion engine."
USER = "test-user"  # the subject of testing.tenant_metadata's token: the task's requester
OPTIONS = persona_pb2.ConverseOptions(max_tokens=16, temperature=0.0)


@pytest.fixture(scope="module")
async def fleet(
    postgres_engine, redis_engine, nats_engine, temporal_engine, tmp_path_factory
) -> AsyncIterator[dict[str, testing.RunningService]]:
    from edrs_knowledge.app import definition as knowledge_definition
    from edrs_memory.app import definition as memory_definition
    from edrs_persona.app import definition as persona_definition
    from edrs_reasoning.app import definition as reasoning_definition
    from edrs_task.app import definition as task_definition

    def engines(database: str) -> dict[str, str]:
        return testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=database, redis_db=REDIS_DB
        )

    folder = tmp_path_factory.mktemp("research-persona-knowledge")
    async with (
        testing.running_service(
            reasoning_definition, start_timeout=300, **engines("test_research_persona_reasoning")
        ) as reasoning,
        testing.running_service(
            memory_definition,
            peers={"reasoning": reasoning.grpc_address},
            rpc_timeout_seconds=60.0,
            **engines("test_research_persona_memory"),
        ) as memory,
        testing.running_service(
            knowledge_definition,
            start_timeout=120,
            peers={"reasoning": reasoning.grpc_address},
            rpc_timeout_seconds=120.0,
            vector_engine="pgvector",
            vector_url="",
            keyword_index_dir=str(folder / "keywords"),
            **engines("test_research_persona_knowledge"),
        ) as knowledge,
    ):
        # Persona calls task and research, which call it back: their ports are chosen first.
        task_port, research_port = free_port(), free_port()
        async with (
            testing.running_service(
                persona_definition,
                peers={
                    "memory": memory.grpc_address,
                    "reasoning": reasoning.grpc_address,
                    "knowledge": knowledge.grpc_address,
                    "task": f"127.0.0.1:{task_port}",
                    "research": f"127.0.0.1:{research_port}",
                },
                **engines("test_research_persona_persona"),
            ) as persona,
            testing.running_service(
                task_definition,
                grpc_port=task_port,
                peers={"persona": persona.grpc_address},
                temporal_address=temporal_engine.url(),
                **engines("test_research_persona_task"),
            ) as task,
            testing.running_service(
                definition,
                start_timeout=120,
                grpc_port=research_port,
                temporal_address=temporal_engine.url(),
                temporal_task_queue=f"test-research-persona-{RUN}",
                # The plan is the model's: its tokens are reserved and settled with the task
                # service's budgets.
                planner="model",
                rpc_timeout_seconds=300.0,
                peers={
                    "knowledge": knowledge.grpc_address,
                    "reasoning": reasoning.grpc_address,
                    "task": task.grpc_address,
                },
                **engines("test_research_persona_research"),
            ) as research,
        ):
            yield {
                "reasoning": reasoning,
                "knowledge": knowledge,
                "persona": persona,
                "task": task,
                "research": research,
            }


def _tenant() -> tuple[str, list[tuple[str, str]]]:
    tenant = f"research-persona-{uuid.uuid4().hex[:8]}"
    return tenant, testing.tenant_metadata(tenant)


async def _collection(fleet: dict[str, Any], md: Any) -> str:
    """A collection whose one document states FACT, indexed."""
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(fleet["knowledge"].channel)
    collection = f"orion-{uuid.uuid4().hex[:8]}"
    await knowledge.CreateCollection(kpb.CreateCollectionRequest(name=collection), metadata=md)
    made = await knowledge.IngestDocument(
        kpb.IngestDocumentRequest(
            collection=collection,
            title="Orion engineering",
            text="Spacecraft design. " + FACT + " The solar panels span forty metres.",
            content_type="text/plain",
        ),
        metadata=md,
    )

    async def indexed() -> bool:
        doc = await knowledge.GetDocument(kpb.GetDocumentRequest(id=made.document.id), metadata=md)
        return bool(doc.state == kpb.DOCUMENT_STATE_INDEXED)

    await testing.wait_until(indexed, 300, "the document to be indexed")
    return collection


async def _noticed(fleet: dict[str, Any], tenant: str, task_id: str, persona_id: str) -> None:
    persona_rt = fleet["persona"].runner.runtime
    assert persona_rt is not None

    async def noticed() -> bool:
        row = await persona_rt.db.fetchrow(
            "SELECT persona_id, outcome FROM task_notices WHERE client_id = $1 AND task_id = $2",
            tenant,
            uuid.UUID(task_id),
        )
        return row is not None and str(row["persona_id"]) == persona_id and FACT in row["outcome"]

    await testing.wait_until(noticed, 60, "the task's completion notice in the persona service")


async def test_a_persona_job_is_a_task_of_the_persona_completed_with_the_summary(
    fleet: dict[str, Any],
) -> None:
    tenant, md = _tenant()
    collection = await _collection(fleet, md)
    ada = await persona_pb2_grpc.PersonaServiceStub(fleet["persona"].channel).CreatePersona(
        persona_pb2.CreatePersonaRequest(name="Ada", role="analyst", instructions="Be brief."),
        metadata=md,
    )
    research = research_pb2_grpc.ResearchServiceStub(fleet["research"].channel)
    job = await research.StartJob(
        pb.StartJobRequest(
            question=QUESTION,
            scope=pb.ResearchScope(collections=[collection]),
            persona_id=ada.id,
        ),
        metadata=md,
    )
    assert job.persona_id == ada.id and uuid.UUID(job.task_id)
    tasks = task_pb2_grpc.TaskServiceStub(fleet["task"].channel)
    latest: Any = None

    async def task_done() -> bool:
        nonlocal latest
        latest = await tasks.GetTask(task_pb2.GetTaskRequest(id=job.task_id), metadata=md)
        return bool(latest.status in (task_pb2.TASK_STATUS_SUCCEEDED, task_pb2.TASK_STATUS_FAILED))

    await testing.wait_until(task_done, 600, "the job's task to finish", interval=0.5)
    report = await research.GetReport(pb.GetReportRequest(job_id=job.id), metadata=md)
    assert latest.status == task_pb2.TASK_STATUS_SUCCEEDED
    assert latest.assignee_persona_id == ada.id
    assert latest.outcome == report.summary and FACT in report.summary
    assert latest.title == f"Research: {QUESTION}"

    # The persona service keeps the completion for the user's next turn with Ada.
    await _noticed(fleet, tenant, job.task_id, ada.id)
    # The plan's model call was charged to Ada's usage, once, with its real token counts.
    done = await research.GetJob(pb.GetJobRequest(id=job.id), metadata=md)
    budgets = task_pb2_grpc.BudgetServiceStub(fleet["task"].channel)
    usage = await budgets.QueryUsage(task_pb2.QueryUsageRequest(persona_id=ada.id), metadata=md)
    assert done.progress.tokens_used > 0
    assert sum(r.calls for r in usage.rows) == 1
    assert (
        sum(r.prompt_tokens + r.completion_tokens for r in usage.rows) == done.progress.tokens_used
    )

    [completed] = await testing.published_events(
        fleet["research"], "research.report_completed", job.id
    )
    assert completed["payload"]["persona_id"] == ada.id
    assert completed["payload"]["task_id"] == job.task_id


async def test_asked_to_research_a_persona_starts_a_job_says_so_and_tells_the_result_next(
    fleet: dict[str, Any],
) -> None:
    tenant, md = _tenant()
    collection = await _collection(fleet, md)
    personas = persona_pb2_grpc.PersonaServiceStub(fleet["persona"].channel)
    ada = await personas.CreatePersona(
        persona_pb2.CreatePersonaRequest(
            name="Ada", role="analyst", instructions="Be brief.", knowledge_collections=[collection]
        ),
        metadata=md,
    )

    async def converse(text: str) -> persona_pb2.TurnCompleted:
        request = persona_pb2.ConverseRequest(
            persona_id=ada.id, conversation_id="c1", user_id=USER, text=text, options=OPTIONS
        )
        events = [e async for e in personas.Converse(request, metadata=md)]
        assert events[-1].HasField("completed"), events[-1]
        replied = "".join(e.delta.text for e in events if e.HasField("delta"))
        assert replied == events[-1].completed.reply
        return events[-1].completed

    first = await converse(f"Research: {QUESTION}")
    found = re.search(r"research job ([0-9a-f-]{36})", first.reply)
    assert found, first.reply
    assert f'I started researching "{QUESTION}"' in first.reply
    research = research_pb2_grpc.ResearchServiceStub(fleet["research"].channel)
    job = await research.GetJob(pb.GetJobRequest(id=found.group(1)), metadata=md)
    assert job.question == QUESTION and job.persona_id == ada.id and job.task_id
    assert list(job.scope.collections) == list(ada.knowledge_collections)
    await _noticed(fleet, tenant, job.task_id, ada.id)

    second = await converse("Anything new?")
    reasoning = reasoning_pb2_grpc.ReasoningServiceStub(fleet["reasoning"].channel)
    trace = await reasoning.GetTrace(reasoning_pb2.GetTraceRequest(id=second.trace_id), metadata=md)
    told = [c.text for c in trace.context if c.source == "task.completed"]
    assert len(told) == 1 and told[0].startswith(f'The task "Research: {QUESTION}" succeeded: ')
    assert FACT in told[0]
    # An ordinary message starts nothing.
    assert "research job" not in second.reply
