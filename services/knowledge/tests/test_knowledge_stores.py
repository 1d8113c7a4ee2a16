"""What the knowledge service writes to each of its stores (PostgreSQL, the vector index, the
keyword index), counted: re-ingestion embeds only changed passages, deletion removes everything,
and a tenant never sees another's passages on any vector engine that runs here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from edrs_core import testing
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")


def policy(i: int, rule: str = "") -> str:
    """A document of four sections; each section is one passage of its own."""
    return (
        f"# Policy {i}\n\nPolicy {i} governs the equipment of team {i}.\n\n"
        f"## Scope\n\nIt applies to every laptop, phone and badge team {i} holds.\n\n"
        f"## Rules\n\n{rule or f'Devices of team {i} are returned within {i % 9 + 1} days.'}\n\n"
        f"## Contacts\n\nQuestions go to the desk of team {i} on floor {i % 7}.\n"
    )


@pytest.fixture(scope="module")
async def service(start_knowledge) -> AsyncIterator[SimpleNamespace]:  # type: ignore[no-untyped-def]
    """A knowledge service of its own, so the embeddings it counts are this module's only."""
    async with start_knowledge("test_knowledge_stores") as svc:
        servicer: Any = svc.servicer("KnowledgeService")
        yield SimpleNamespace(
            svc=svc,
            stub=knowledge_pb2_grpc.KnowledgeServiceStub(svc.channel),
            ingestion=servicer.ingestion,
            db=svc.runner.runtime.db,
        )


async def import_all(
    stub, collection: str, documents: list[pb.IngestDocumentRequest]
) -> pb.ImportJob:  # type: ignore[no-untyped-def]
    async def messages():  # type: ignore[no-untyped-def]
        yield pb.ImportDocumentsRequest(header=pb.ImportHeader(collection=collection))
        for d in documents:
            yield pb.ImportDocumentsRequest(document=d)

    job = await stub.ImportDocuments(messages(), metadata=TENANT_A)
    finished = job

    async def done() -> bool:
        nonlocal finished
        finished = await stub.GetImportJob(pb.GetImportJobRequest(id=job.id), metadata=TENANT_A)
        return finished.state == pb.IMPORT_JOB_STATE_DONE

    await testing.wait_until(done, 900, "the import to finish")
    return finished


async def test_updating_one_document_of_200_embeds_only_its_changed_passage(service, kit) -> None:
    stub, embedder = service.stub, service.ingestion.embedder
    collection = await kit.new_collection(stub)
    before = embedder.embedded
    job = await import_all(
        stub,
        collection,
        [pb.IngestDocumentRequest(external_id=f"policy-{i}", text=policy(i)) for i in range(200)],
    )
    assert (job.indexed, job.failed) == (200, 0)
    first = await stub.ListDocuments(
        pb.ListDocumentsRequest(collection=collection, external_id="policy-7"), metadata=TENANT_A
    )
    [document] = first.documents
    assert document.chunk_count == 4
    assert embedder.embedded - before == 200 * 4

    # The same text again: nothing is queued, nothing embedded.
    counted = embedder.embedded
    same = await kit.ingest(stub, collection, external_id="policy-7", text=policy(7))
    assert same.outcome == pb.INGEST_OUTCOME_UNCHANGED and same.document.version == 1

    # One rule changed: one passage of four is embedded again.
    changed = await kit.ingest(
        stub,
        collection,
        external_id="policy-7",
        text=policy(7, rule="Devices of team 7 are returned on the last working day."),
    )
    assert changed.outcome == pb.INGEST_OUTCOME_UPDATED and changed.document.version == 2
    assert changed.document.id == document.id
    await kit.wait_indexed(stub, document.id)
    assert embedder.embedded - counted == 1
    versions = await stub.ListDocumentVersions(
        pb.ListDocumentVersionsRequest(document_id=document.id), metadata=TENANT_A
    )
    assert [(v.version, v.chunks_embedded, v.chunks_reused) for v in versions.versions] == [
        (2, 1, 3),
        (1, 4, 0),
    ]
    # Search answers from the new version, with offsets into its text.
    found = await stub.Search(
        pb.SearchRequest(query="returned on the last working day", collections=[collection], k=1),
        metadata=TENANT_A,
    )
    [best] = found.passages
    assert (best.external_id, best.citation.document_version) == ("policy-7", 2)
    assert await kit.cut(stub, best) == best.text
    vectors = await service.ingestion.vectors.count(
        testing.tenant_of(TENANT_A), document.collection_id, document.id
    )
    assert vectors == 4


async def test_deleting_a_document_removes_it_from_every_store(service, kit) -> None:
    stub, ingestion, db = service.stub, service.ingestion, service.db
    tenant = testing.tenant_of(TENANT_A)
    collection = await kit.new_collection(stub)
    # Its rules name two companies: extraction reads two entities from that passage (their two
    # mentions) and one relation (its source), the graph provenance deletion must remove.
    made = await kit.ingest(
        stub,
        collection,
        text=policy(1, rule="Acme Corp acquired Globex; devices go back to Globex."),
        external_id="doomed",
    )
    kept = await kit.ingest(stub, collection, text=policy(2), external_id="kept")
    document = await kit.wait_indexed(stub, made.document.id)
    await kit.wait_indexed(stub, kept.document.id)
    document_id = uuid.UUID(document.id)
    # Two entities (Acme, Globex), their two mentions in one passage, one relation, its source.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM entity_mentions m JOIN chunks c ON c.id = m.chunk_id "
            "WHERE c.document_id = $1",
            document_id,
        )
        == 2
    )
    [relation] = await db.fetch(
        "SELECT r.id FROM relations r JOIN relation_sources s ON s.relation_id = r.id "
        "JOIN chunks c ON c.id = s.chunk_id WHERE c.document_id = $1 AND r.predicate = 'acquired'",
        document_id,
    )
    relation = relation["id"]

    async def counts() -> tuple[int, int, int, int]:
        return (
            await db.fetchval("SELECT count(*) FROM chunks WHERE document_id = $1", document_id),
            await ingestion.vectors.count(tenant, document.collection_id, document.id),
            await ingestion.keywords.count_document(document_id),
            await db.fetchval(
                "SELECT count(*) FROM document_versions WHERE document_id = $1", document_id
            ),
        )

    assert await counts() == (4, 4, 4, 1)
    deleted = await stub.DeleteDocument(pb.DeleteDocumentRequest(id=document.id), metadata=TENANT_A)
    assert (
        deleted.versions_deleted,
        deleted.chunks_deleted,
        deleted.vectors_deleted,
        deleted.keyword_entries_deleted,
        deleted.provenance_deleted,
        deleted.relations_deleted,
        deleted.entities_deleted,
    ) == (1, 4, 4, 4, 3, 1, 2)
    assert await counts() == (0, 0, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM relations WHERE id = $1", relation) == 0
    # The other document keeps all of its own.
    assert await ingestion.vectors.count(tenant, document.collection_id, kept.document.id) == 4
    assert await ingestion.keywords.count_document(uuid.UUID(kept.document.id)) == 4
    [event] = await testing.published_events(service.svc, "knowledge.document_deleted", document.id)
    assert event["payload"] == {
        "document_id": document.id,
        "collection_id": document.collection_id,
        "external_id": "doomed",
    }


@pytest.fixture(scope="module", params=["pgvector", "milvus", "qdrant"])
async def engine_service(
    request, start_knowledge
) -> AsyncIterator[knowledge_pb2_grpc.KnowledgeServiceStub]:  # type: ignore[no-untyped-def]
    engine = request.param
    async with start_knowledge(f"test_knowledge_{engine}", engine=engine) as svc:
        yield knowledge_pb2_grpc.KnowledgeServiceStub(svc.channel)


async def test_a_tenant_never_sees_another_tenants_passages(engine_service, kit) -> None:
    stub = engine_service
    # Both tenants name their collection alike; A's document matches the query best.
    name = f"shared-{uuid.uuid4().hex[:8]}"
    for tenant in (TENANT_A, TENANT_B):
        await stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=tenant)
    secret = await kit.ingest(
        stub,
        name,
        text="The Globex merger closes in March under the code name Bluebird.",
        tenant=TENANT_A,
    )
    own = await kit.ingest(
        stub, name, text="Bluebird is the cafeteria's new coffee blend.", tenant=TENANT_B
    )
    await kit.wait_indexed(stub, secret.document.id, tenant=TENANT_A)
    await kit.wait_indexed(stub, own.document.id, tenant=TENANT_B)
    query = "When does the Globex merger code-named Bluebird close?"
    for mode in (pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_VECTOR, pb.SEARCH_MODE_KEYWORD):
        for collections in ([name], []):
            found = await stub.Search(
                pb.SearchRequest(query=query, collections=collections, mode=mode, k=100),
                metadata=TENANT_B,
            )
            assert [p.document_id for p in found.passages] == [own.document.id], (mode, collections)
        theirs = await stub.Search(
            pb.SearchRequest(query=query, collections=[name], mode=mode), metadata=TENANT_A
        )
        assert [p.document_id for p in theirs.passages] == [secret.document.id], mode


async def test_a_lost_keyword_index_is_rebuilt_before_the_service_serves(
    start_knowledge, kit
) -> None:  # type: ignore[no-untyped-def]
    async with start_knowledge("test_knowledge_rebuild") as svc:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(svc.channel)
        collection = await kit.new_collection(stub)
        made = await kit.ingest(stub, collection, text=policy(3))
        await kit.wait_indexed(stub, made.document.id)
    # Each start gets a new, empty keyword-index folder: the index is lost, the database is not.
    async with start_knowledge("test_knowledge_rebuild") as svc:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(svc.channel)
        servicer: Any = svc.servicer("KnowledgeService")
        assert servicer.ingestion.keywords.count() == 4
        found = await stub.Search(
            pb.SearchRequest(
                query="returned within days", collections=[collection], mode=pb.SEARCH_MODE_KEYWORD
            ),
            metadata=TENANT_A,
        )
        assert found.passages[0].document_id == made.document.id


async def test_empty_and_oversized_files_fail_alone_with_their_reason(start_knowledge, kit) -> None:  # type: ignore[no-untyped-def]
    async with start_knowledge("test_knowledge_limits", max_document_bytes=20_000) as svc:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(svc.channel)
        collection = await kit.new_collection(stub)
        batch = [
            pb.IngestDocumentRequest(external_id="good", text=policy(1)),
            pb.IngestDocumentRequest(external_id="blank", text="   \n "),
            pb.IngestDocumentRequest(external_id="nothing", content=b"", filename="empty.pdf"),
            pb.IngestDocumentRequest(external_id="huge", text="word " * 5_000),
        ]
        job = await import_all(stub, collection, batch)
        assert (job.indexed, job.failed) == (1, 3)
        items = await stub.ListImportJobItems(
            pb.ListImportJobItemsRequest(job_id=job.id, failed_only=True), metadata=TENANT_A
        )
        assert {(i.external_id, i.failure.code) for i in items.items} == {
            ("blank", "empty"),
            ("nothing", "empty"),
            ("huge", "too_large"),
        }

        # An upload over the limit is counted and recorded as failed, never stored.
        async def messages():  # type: ignore[no-untyped-def]
            yield pb.UploadDocumentRequest(
                document=pb.IngestDocumentRequest(collection=collection, filename="big.md")
            )
            for _ in range(3):
                yield pb.UploadDocumentRequest(data=b"# Big\n\n" + b"x" * 9_993)

        uploaded = await stub.UploadDocument(messages(), metadata=TENANT_A)
        assert uploaded.document.state == pb.DOCUMENT_STATE_FAILED
        assert uploaded.document.failure.code == "too_large"
        assert "30,000 bytes; the limit is 20,000" in uploaded.document.failure.message
        assert uploaded.document.size_bytes == 30_000
        db = svc.runner.runtime.db
        assert (
            await db.fetchval(
                "SELECT input IS NULL FROM document_versions WHERE document_id = $1",
                uuid.UUID(uploaded.document.id),
            )
            is True
        )
