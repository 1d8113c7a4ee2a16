"""The knowledge service over real gRPC, against embedded PostgreSQL, Redis and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from edrs_core import testing
from edrs_knowledge.app import definition
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")


@pytest.fixture(scope="module")
async def knowledge(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_knowledge", redis_db=3
    )
    async with testing.running_service(definition, **settings) as svc:
        yield svc


@pytest.fixture
def stub(knowledge: testing.RunningService) -> knowledge_pb2_grpc.KnowledgeServiceStub:
    return knowledge_pb2_grpc.KnowledgeServiceStub(knowledge.channel)


@pytest.fixture
def tenant() -> list[tuple[str, str]]:
    """A fresh tenant per search test, so hits come only from that test's documents."""
    return testing.tenant_metadata(f"tenant-{uuid.uuid4()}")


async def ingest(stub, title: str, text: str, tenant=TENANT_A, **fields) -> knowledge_pb2.Document:
    return await stub.IngestDocument(
        knowledge_pb2.IngestDocumentRequest(title=title, text=text, **fields), metadata=tenant
    )


async def test_ingest_then_get_returns_what_was_stored(stub) -> None:
    created = await ingest(
        stub,
        " Leave policy ",
        "Employees get 25 days of paid leave.",
        source="https://intranet.example.com/hr/leave",
        metadata={"department": "hr", "year": "2025"},
    )
    assert created.title == "Leave policy"
    assert created.source == "https://intranet.example.com/hr/leave"
    assert dict(created.metadata) == {"department": "hr", "year": "2025"}
    fetched = await stub.GetDocument(
        knowledge_pb2.GetDocumentRequest(id=created.id), metadata=TENANT_A
    )
    assert fetched == created


async def test_search_ranks_matching_documents_with_a_snippet(stub, tenant) -> None:
    title_match = await ingest(
        stub, "Kubernetes autoscaling", "How pods scale with load.", tenant=tenant
    )
    body_match = await ingest(
        stub,
        "Operations handbook",
        "Chapter one covers backups. Chapter two covers kubernetes autoscaling of workers.",
        tenant=tenant,
    )
    await ingest(stub, "Lunch menu", "Soup and salad on Mondays.", tenant=tenant)

    found = await stub.Search(
        knowledge_pb2.SearchRequest(query="kubernetes autoscaling"), metadata=tenant
    )
    assert [h.document_id for h in found.hits] == [title_match.id, body_match.id]
    assert found.hits[0].title == "Kubernetes autoscaling"
    assert found.hits[0].score > found.hits[1].score > 0
    assert "kubernetes autoscaling" in found.hits[1].snippet
    assert "<b>" not in found.hits[1].snippet


async def test_search_understands_web_search_syntax(stub, tenant) -> None:
    cats = await ingest(stub, "Pets", "Cats sleep all day.", tenant=tenant)
    await ingest(stub, "Pets and dogs", "Cats and dogs both sleep.", tenant=tenant)
    found = await stub.Search(knowledge_pb2.SearchRequest(query="cats -dogs"), metadata=tenant)
    assert [h.document_id for h in found.hits] == [cats.id]
    phrase = await stub.Search(
        knowledge_pb2.SearchRequest(query='"sleep all day"'), metadata=tenant
    )
    assert [h.document_id for h in phrase.hits] == [cats.id]


async def test_search_returns_at_most_limit(stub, tenant) -> None:
    for i in range(4):
        await ingest(stub, f"Report {i}", "Quarterly revenue grew.", tenant=tenant)
    found = await stub.Search(
        knowledge_pb2.SearchRequest(query="revenue", limit=2), metadata=tenant
    )
    assert len(found.hits) == 2


async def test_search_with_no_match_is_empty(stub, tenant) -> None:
    await ingest(stub, "Pets", "Cats sleep all day.", tenant=tenant)
    for query in ("astronomy", "the of and"):
        found = await stub.Search(knowledge_pb2.SearchRequest(query=query), metadata=tenant)
        assert list(found.hits) == []


async def test_other_tenant_cannot_see_the_document(stub) -> None:
    created = await ingest(stub, "Board minutes", "Confidential merger with Globex.")
    await testing.expect_rpc_error(
        stub.GetDocument(knowledge_pb2.GetDocumentRequest(id=created.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    found = await stub.Search(knowledge_pb2.SearchRequest(query="Globex merger"), metadata=TENANT_B)
    assert created.id not in {h.document_id for h in found.hits}


async def test_unknown_document_is_not_found(stub) -> None:
    missing = str(uuid.uuid4())
    await testing.expect_rpc_error(
        stub.GetDocument(knowledge_pb2.GetDocumentRequest(id=missing), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
        missing,
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (knowledge_pb2.IngestDocumentRequest(title="", text="t"), "title is required"),
        (
            knowledge_pb2.IngestDocumentRequest(title="x" * 501, text="t"),
            "title is 501 characters long",
        ),
        (knowledge_pb2.IngestDocumentRequest(title="t", text="  "), "text is required"),
        (
            knowledge_pb2.IngestDocumentRequest(title="t", text="x" * 1_000_001),
            "text is 1000001 characters long",
        ),
        (
            knowledge_pb2.IngestDocumentRequest(
                title="t", text="t", metadata={f"k{i}": "v" for i in range(51)}
            ),
            "metadata has 51 keys",
        ),
        (
            knowledge_pb2.IngestDocumentRequest(title="t", text="t", metadata={" ": "v"}),
            "metadata key is required",
        ),
    ],
)
async def test_invalid_ingest_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.IngestDocument(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_text_too_varied_to_index_is_refused_naming_text(stub) -> None:
    # ~110k distinct words fit the 1M-character limit but not PostgreSQL's 1 MB tsvector.
    words = " ".join(f"w{i:x}q" for i in range(110_000))[:1_000_000]
    await testing.expect_rpc_error(
        ingest(stub, "Word list", words),
        grpc.StatusCode.INVALID_ARGUMENT,
        "text has too many distinct words to index",
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (knowledge_pb2.SearchRequest(query=""), "query is required"),
        (knowledge_pb2.SearchRequest(query="x", limit=-3), "limit must not be negative"),
    ],
)
async def test_invalid_search_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.Search(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_bad_document_id_names_the_field(stub) -> None:
    await testing.expect_rpc_error(
        stub.GetDocument(knowledge_pb2.GetDocumentRequest(id="doc-1"), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "id must be a UUID",
    )


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(
        stub.IngestDocument(knowledge_pb2.IngestDocumentRequest(title="t", text="t")),
        stub.GetDocument(knowledge_pb2.GetDocumentRequest(id=str(uuid.uuid4()))),
        stub.Search(knowledge_pb2.SearchRequest(query="x")),
    )


async def test_an_ingested_document_is_announced(stub, knowledge) -> None:
    created = await ingest(stub, "Travel policy", "Book trains for trips under four hours.")
    [event] = await testing.published_events(knowledge, "knowledge.document_ingested", created.id)
    assert event["payload"] == {
        "document_id": created.id,
        "title": "Travel policy",
        "chunk_count": 0,
    }
    assert (event["client_id"], event["source_container"]) == (
        testing.tenant_of(TENANT_A),
        "knowledge",
    )
