"""One real RPC to each service of the running fleet, and one trace across two services."""

from __future__ import annotations

import json
import secrets
import uuid

import grpc
import pytest
from edrs_core.testing import wait_until
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from edrs_proto.integration.v1 import integration_pb2, integration_pb2_grpc
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


def tenant(fleet) -> list[tuple[str, str]]:
    """The identity of work for `fleet-tenant` with no user behind it: a service token."""
    return fleet.service_metadata("fleet-tenant")


def channel(fleet, name: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(fleet.grpc_address(name))


async def test_gateway_creates_and_reads_a_tenant(fleet) -> None:
    operator = fleet.operator_metadata()
    async with channel(fleet, "gateway") as ch:
        stub = gateway_pb2_grpc.TenantServiceStub(ch)
        name = f"Acme {secrets.token_hex(4)}"
        made = await stub.CreateTenant(
            gateway_pb2.CreateTenantRequest(name=name, tier=gateway_pb2.TIER_PROFESSIONAL),
            metadata=operator,
            timeout=10,
        )
        got = await stub.GetTenant(
            gateway_pb2.GetTenantRequest(id=made.id), metadata=operator, timeout=10
        )
    assert got.name == name
    assert got.tier == gateway_pb2.TIER_PROFESSIONAL


async def test_persona_creates_and_reads_a_persona(fleet) -> None:
    async with channel(fleet, "persona") as ch:
        stub = persona_pb2_grpc.PersonaServiceStub(ch)
        made = await stub.CreatePersona(
            persona_pb2.CreatePersonaRequest(name="Ada", role="Analyst"),
            metadata=tenant(fleet),
            timeout=10,
        )
        got = await stub.GetPersona(
            persona_pb2.GetPersonaRequest(id=made.id), metadata=tenant(fleet), timeout=10
        )
    assert got.name == "Ada"


async def test_memory_recalls_what_it_was_told(fleet) -> None:
    async with channel(fleet, "memory") as ch:
        stub = memory_pb2_grpc.MemoryServiceStub(ch)
        persona_id, user_id = str(uuid.uuid4()), "user-1"
        await stub.Remember(
            memory_pb2.RememberRequest(
                persona_id=persona_id,
                user_id=user_id,
                conversation_id="c1",
                text="The user prefers bullet points in every answer",
                importance=0.8,
            ),
            metadata=tenant(fleet),
            timeout=10,
        )
        recalled = await stub.Recall(
            memory_pb2.RecallRequest(
                persona_id=persona_id, user_id=user_id, query="bullet points", limit=5
            ),
            metadata=tenant(fleet),
            timeout=10,
        )
    assert [m.memory.text for m in recalled.memories] == [
        "The user prefers bullet points in every answer"
    ]
    assert recalled.memories[0].relevance > 0


async def test_knowledge_finds_an_ingested_document(fleet) -> None:
    async with channel(fleet, "knowledge") as ch:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(ch)
        collection = await stub.CreateCollection(
            knowledge_pb2.CreateCollectionRequest(name=f"handbook-{uuid.uuid4().hex[:8]}"),
            metadata=tenant(fleet),
            timeout=10,
        )
        made = await stub.IngestDocument(
            knowledge_pb2.IngestDocumentRequest(
                collection=collection.name,
                title="Expense policy",
                text="Travel expenses above 500 euros need approval from a director.",
                source="handbook",
            ),
            metadata=tenant(fleet),
            timeout=10,
        )

        # Ingestion runs in the background: parsed, embedded by reasoning, indexed.
        async def indexed() -> bool:
            got = await stub.GetDocument(
                knowledge_pb2.GetDocumentRequest(id=made.document.id),
                metadata=tenant(fleet),
                timeout=10,
            )
            assert got.state != knowledge_pb2.DOCUMENT_STATE_FAILED, got.failure
            return got.state == knowledge_pb2.DOCUMENT_STATE_INDEXED

        await wait_until(indexed, 120, "the document to be indexed")
        found = await stub.Search(
            knowledge_pb2.SearchRequest(
                query="travel expenses approval", collections=[collection.id], k=5
            ),
            metadata=tenant(fleet),
            timeout=30,
        )
    assert made.document.id in [p.document_id for p in found.passages]


async def test_reasoning_answers_trace_queries(fleet) -> None:
    async with channel(fleet, "reasoning") as ch:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(ch)
        listed = await stub.ListTraces(
            reasoning_pb2.ListTracesRequest(), metadata=tenant(fleet), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetTrace(
                reasoning_pb2.GetTraceRequest(id=str(uuid.uuid4())),
                metadata=tenant(fleet),
                timeout=10,
            )
    assert list(listed.traces) == []
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_research_registers_a_source(fleet) -> None:
    async with channel(fleet, "research") as ch:
        stub = research_pb2_grpc.ResearchServiceStub(ch)
        source = await stub.RegisterSource(
            research_pb2.RegisterSourceRequest(
                url="HTTPS://Example.org/report#top", title="Report"
            ),
            metadata=tenant(fleet),
            timeout=10,
        )
        listed = await stub.ListSources(
            research_pb2.ListSourcesRequest(), metadata=tenant(fleet), timeout=10
        )
    assert source.url == "https://example.org/report"
    assert source.id in [s.id for s in listed.sources]


async def test_integration_keeps_connector_secrets_out_of_replies(fleet) -> None:
    async with channel(fleet, "integration") as ch:
        stub = integration_pb2_grpc.IntegrationServiceStub(ch)
        made = await stub.CreateConnector(
            integration_pb2.CreateConnectorRequest(
                name="crm-hook",
                kind=integration_pb2.CONNECTOR_KIND_WEBHOOK,
                config={"url": "https://hooks.example.com/crm", "signing_secret": "s3cr3t"},
                enabled=True,
            ),
            metadata=tenant(fleet),
            timeout=10,
        )
        got = await stub.GetConnector(
            integration_pb2.GetConnectorRequest(id=made.id), metadata=tenant(fleet), timeout=10
        )
    assert got.config["url"] == "https://hooks.example.com/crm"
    assert got.config["signing_secret"] != "s3cr3t"
    # The masked form, not merely another value (a leaked or re-encoded secret also differs).
    assert got.config["signing_secret"] == "********"


async def test_one_trace_id_crosses_task_and_persona(fleet) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = [("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01")]
    async with channel(fleet, "persona") as ch:
        persona = await persona_pb2_grpc.PersonaServiceStub(ch).CreatePersona(
            persona_pb2.CreatePersonaRequest(name="Omar", role="Planner"),
            metadata=tenant(fleet),
            timeout=10,
        )
    async with channel(fleet, "task") as ch:
        task = await task_pb2_grpc.TaskServiceStub(ch).CreateTask(
            task_pb2.CreateTaskRequest(
                title="Plan the offsite", assignee_persona_id=persona.id, priority=2
            ),
            metadata=[*tenant(fleet), *traceparent],
            timeout=10,
        )
    assert task.assignee_persona_id == persona.id

    def lines_with_trace(name: str) -> list[dict]:
        found = []
        for line in fleet.log(name).splitlines():
            if trace_id in line and line.startswith("{"):
                found.append(json.loads(line))
        return found

    async def both_logged() -> bool:
        return bool(lines_with_trace("task")) and bool(lines_with_trace("persona"))

    await wait_until(both_logged, 10, f"trace {trace_id} in the task and persona logs")
    persona_lines = lines_with_trace("persona")
    assert any(line.get("rpc_method", "").endswith("/GetPersona") for line in persona_lines)
    assert all(line["trace_id"] == trace_id for line in persona_lines)
    assert any(
        line.get("rpc_method", "").endswith("/CreateTask") for line in lines_with_trace("task")
    )
