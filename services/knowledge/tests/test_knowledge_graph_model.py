"""The model extractor (`EDRS_KNOWLEDGE_GRAPH_EXTRACTOR=model`) on the real service and the real
reasoning service: with the embedded SmolLM2 under the answer's JSON Schema, a document is
indexed, every entity stored is named as the document writes it, the rules' relations are there
and so is what the model read that passed the checks; with reasoning's chat backend unreachable,
the document is indexed with the rules' reading alone."""

from __future__ import annotations

import copy
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest
from edrs_core import testing
from edrs_knowledge.graph import normalize_name
from edrs_knowledge.graph_model import read_answer
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

pytestmark = pytest.mark.integration

# One passage; the rules read two relations in it.
TEXT = "Acme Corp acquired Globex in June 2024. Hank Scorpio is the CEO of Globex."
RULE_RELATIONS = {
    ("Acme Corp", "acquired", "Globex", date(2024, 6, 1)),
    ("Hank Scorpio", "ceo_of", "Globex", None),
}
# The small model on a loaded 2-core machine: minutes per passage, never a timed assertion.
MODEL_SECONDS = 1200.0


def new_tenant() -> list[tuple[str, str]]:
    return testing.tenant_metadata(f"graph-model-{uuid.uuid4().hex[:10]}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service(svc: Any) -> SimpleNamespace:
    servicer: Any = svc.servicer("KnowledgeService")
    return SimpleNamespace(
        stub=knowledge_pb2_grpc.KnowledgeServiceStub(svc.channel),
        extractor=servicer.ingestion.graph_model,
    )


@pytest.fixture(scope="module")
async def with_model(start_knowledge) -> AsyncIterator[SimpleNamespace]:  # type: ignore[no-untyped-def]
    async with start_knowledge(
        "test_knowledge_graph_model",
        graph_extractor="model",
        graph_model_timeout_seconds=MODEL_SECONDS,
    ) as svc:
        yield _service(svc)


@pytest.fixture(scope="module")
async def reasoning_without_chat(postgres_engine, redis_engine, nats_engine):  # type: ignore[no-untyped-def]
    """A real reasoning service whose chat backend (an OpenAI-compatible server) is at an
    address nobody listens on: Embed works, every Reason fails."""
    from edrs_reasoning.app import definition as reasoning_definition

    settings = testing.engine_settings(
        postgres_engine,
        redis_engine,
        nats_engine,
        database="test_knowledge_reasoning_down",
        redis_db=12,
    )
    async with testing.running_service(
        reasoning_definition,
        start_timeout=300,
        backend="openai",
        openai_base_url=f"http://127.0.0.1:{_closed_port()}/v1",
        openai_model="absent",
        stt_backend="off",
        tts_backend="off",
        **settings,
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
async def model_down(start_knowledge, reasoning_without_chat) -> AsyncIterator[SimpleNamespace]:  # type: ignore[no-untyped-def]
    async with start_knowledge(
        "test_knowledge_graph_model_down",
        graph_extractor="model",
        peers={"reasoning": reasoning_without_chat.grpc_address},
    ) as svc:
        yield _service(svc)


async def graph_of(stub, tenant) -> tuple[list[pb.Entity], set[tuple[str, str, str, date | None]]]:  # type: ignore[no-untyped-def]
    """The tenant's entities, and its relations as (subject, predicate, object, valid_from)."""
    entities = list((await stub.ListEntities(pb.ListEntitiesRequest(), metadata=tenant)).entities)
    names = {e.id: e.name for e in entities}
    relations = set()
    for e in entities:
        around = await stub.ListEntityRelations(
            pb.ListEntityRelationsRequest(entity_id=e.id), metadata=tenant
        )
        for r in around.relations:
            when = r.valid_from.ToDatetime().date() if r.HasField("valid_from") else None
            relations.add((names[r.subject_id], r.predicate, names[r.object_id], when))
    return entities, relations


async def ingest(service, kit, tenant) -> Any:  # type: ignore[no-untyped-def]
    collection = await kit.new_collection(service.stub, tenant)
    made = await kit.ingest(service.stub, collection, text=TEXT, tenant=tenant)
    return await kit.wait_indexed(
        service.stub, made.document.id, tenant=tenant, within=MODEL_SECONDS
    )


@pytest.mark.timeout(MODEL_SECONDS + 300)
async def test_the_model_reading_joins_the_rules(with_model, reasoning, kit) -> None:  # type: ignore[no-untyped-def]
    tenant = new_tenant()
    before = copy.copy(with_model.extractor.totals)
    document = await ingest(with_model, kit, tenant)
    assert document.state == pb.DOCUMENT_STATE_INDEXED
    # Its one passage was sent, and the answer read (the schema made it the JSON asked for).
    after = with_model.extractor.totals
    assert (after.sent, after.read) == (before.sent + 1, before.read + 1)

    # The model was asked, for this tenant and document, about the passage.
    traces = await reasoning_pb2_grpc.ReasoningServiceStub(reasoning.channel).ListTraces(
        reasoning_pb2.ListTracesRequest(
            labels={"purpose": "graph_extraction", "document_id": document.id}
        ),
        metadata=tenant,
    )
    [trace] = traces.traces
    assert [c.text for c in trace.context] == [TEXT]

    entities, relations = await graph_of(with_model.stub, tenant)
    # Every entity stored, under every name, is written in the document: nothing invented.
    for e in entities:
        for name in (e.name, *e.aliases):
            assert name in TEXT, (name, [(x.name, list(x.aliases)) for x in entities])
    # The rules' relations are all there.
    assert relations >= RULE_RELATIONS
    # And what the model answered, once checked, is in the graph: each name it gave that the
    # passage writes is an entity (by its normalised name or an alias).
    reading = read_answer(trace.answer, TEXT)
    keys = {normalize_name(n) for e in entities for n in (e.name, *e.aliases)}
    for found in reading.entities:
        assert normalize_name(found.name) in keys, (found, trace.answer)


async def test_an_unreachable_chat_model_leaves_the_rules_reading(model_down, kit) -> None:  # type: ignore[no-untyped-def]
    tenant = new_tenant()
    before = model_down.extractor.totals.failed
    document = await ingest(model_down, kit, tenant)
    assert document.state == pb.DOCUMENT_STATE_INDEXED and document.failure.code == ""
    # The passage was sent and its call failed: the rules' reading alone was stored.
    assert model_down.extractor.totals.failed == before + 1
    entities, relations = await graph_of(model_down.stub, tenant)
    assert sorted((e.name, e.type) for e in entities) == [
        ("Acme Corp", "organization"),
        ("Globex", "organization"),
        ("Hank Scorpio", "person"),
    ]
    assert relations == RULE_RELATIONS
    # Searchable like any document.
    found = await model_down.stub.Search(
        pb.SearchRequest(query="Who is the CEO of Globex?", k=3), metadata=tenant
    )
    assert [p.document_id for p in found.passages][:1] == [document.id]
