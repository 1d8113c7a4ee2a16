"""The knowledge service over real gRPC, against embedded PostgreSQL (pgvector), NATS, the tantivy
keyword index and the real reasoning service's embedding model."""

from __future__ import annotations

import uuid

import grpc
import pytest
from edrs_core import testing
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")


@pytest.fixture
def stub(knowledge: testing.RunningService) -> knowledge_pb2_grpc.KnowledgeServiceStub:
    return knowledge_pb2_grpc.KnowledgeServiceStub(knowledge.channel)


async def test_collections_are_created_read_by_id_or_name_listed_and_unique(stub) -> None:
    name = f"handbook-{uuid.uuid4().hex[:8]}"
    created = await stub.CreateCollection(
        pb.CreateCollectionRequest(name=name, description=" HR handbook "), metadata=TENANT_A
    )
    assert (created.name, created.description, created.document_count) == (name, "HR handbook", 0)
    by_name = await stub.GetCollection(pb.GetCollectionRequest(id=name), metadata=TENANT_A)
    by_id = await stub.GetCollection(pb.GetCollectionRequest(id=created.id), metadata=TENANT_A)
    assert by_name == by_id == created
    listed = await testing.collect_pages(
        stub.ListCollections,
        pb.ListCollectionsRequest,
        "collections",
        page_size=1,
        metadata=TENANT_A,
    )
    assert created.id in [c.id for c in listed]
    await testing.expect_rpc_error(
        stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=TENANT_A),
        grpc.StatusCode.ALREADY_EXISTS,
        name,
    )
    # Another tenant neither sees it nor is stopped from using the name.
    await testing.expect_rpc_error(
        stub.GetCollection(pb.GetCollectionRequest(id=created.id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    theirs = await stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=TENANT_B)
    assert theirs.id != created.id


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "name is required"),
        ("Has Spaces", "must be lower-case letters"),
        ("-leading", "must be lower-case letters"),
        (str(uuid.uuid4()), "must not be a UUID"),
        ("x" * 64, "name is 64 characters long"),
    ],
)
async def test_bad_collection_names_are_refused(stub, name, message) -> None:
    await testing.expect_rpc_error(
        stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
    )


async def test_text_is_ingested_then_found_in_every_mode_with_score_parts(stub, kit) -> None:
    collection = await kit.new_collection(stub)
    leave = await kit.ingest(
        stub,
        collection,
        text="# Leave policy\n\nEmployees get 25 days of paid leave each year.",
        external_id="hr-leave",
        source="https://intranet.example.com/hr/leave",
        metadata={"department": "hr", "year": "2025"},
    )
    assert leave.outcome == pb.INGEST_OUTCOME_CREATED
    assert leave.document.state == pb.DOCUMENT_STATE_QUEUED
    await kit.ingest(
        stub, collection, text="Soup and salad are served on Mondays.", title="Lunch menu"
    )
    done = await kit.wait_indexed(stub, leave.document.id)
    assert (done.title, done.format, done.external_id) == ("Leave policy", "markdown", "hr-leave")
    assert dict(done.metadata) == {"department": "hr", "year": "2025"}
    assert done.chunk_count == 1 and done.version == 1

    for mode in (pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_VECTOR, pb.SEARCH_MODE_HYBRID):
        found = await stub.Search(
            pb.SearchRequest(
                query="how many days of paid leave", collections=[collection], mode=mode
            ),
            metadata=TENANT_A,
        )
        assert found.passages[0].document_id == leave.document.id, mode
        best = found.passages[0]
        assert best.title == "Leave policy" and best.external_id == "hr-leave"
        assert "25 days of paid leave" in best.text
        assert list(best.citation.heading_path) == ["Leave policy"]
        if mode == pb.SEARCH_MODE_KEYWORD:
            assert best.score == best.parts.keyword > 0 and best.parts.vector_rank == 0
        elif mode == pb.SEARCH_MODE_VECTOR:
            assert best.score == best.parts.vector > 0 and best.parts.keyword_rank == 0
        else:
            # Both rankings put it first: each normalised score is 1, and the keyword weight
            # and the vector weight add up to 1.
            assert (best.parts.vector_rank, best.parts.keyword_rank) == (1, 1)
            assert best.score == pytest.approx(1.0)
            assert found.mode == pb.SEARCH_MODE_HYBRID


async def test_metadata_filters_narrow_the_search_inside_the_index_query(stub, kit) -> None:
    collection = await kit.new_collection(stub)
    hr = await kit.ingest(
        stub, collection, text="Expense claims are filed monthly.", metadata={"team": "hr"}
    )
    ops = await kit.ingest(
        stub,
        collection,
        text="Expense claims for servers are filed yearly.",
        metadata={"team": "ops"},
    )
    await kit.wait_indexed(stub, hr.document.id)
    await kit.wait_indexed(stub, ops.document.id)
    for mode in (pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_VECTOR, pb.SEARCH_MODE_HYBRID):
        found = await stub.Search(
            pb.SearchRequest(
                query="expense claims",
                collections=[collection],
                mode=mode,
                filters=[pb.MetadataFilter(key="team", values=["ops"])],
            ),
            metadata=TENANT_A,
        )
        assert [p.document_id for p in found.passages] == [ops.document.id], mode


async def test_a_sentence_on_page_three_is_cited_with_its_page_and_exact_offsets(
    stub, kit, documents
) -> None:
    collection = await kit.new_collection(stub)
    made = await kit.ingest(stub, collection, content=documents.pdf(), filename="travel.pdf")
    document = await kit.wait_indexed(stub, made.document.id)
    assert (document.format, document.page_count, document.title) == (
        "pdf",
        3,
        "Acme travel policy",
    )
    for mode in (pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_VECTOR):
        found = await stub.Search(
            pb.SearchRequest(
                query="What is the hotel reimbursement limit in Lisbon?",
                collections=[collection],
                mode=mode,
                k=3,
            ),
            metadata=TENANT_A,
        )
        best = found.passages[0]
        assert documents.page_three_sentence in best.text, mode
        assert best.citation.page == 3
        assert list(best.citation.heading_path) == ["Hotels"]
        assert await kit.cut(stub, best) == best.text


async def test_documents_of_every_format_are_ingested_with_their_structure(
    stub, kit, documents
) -> None:
    collection = await kit.new_collection(stub)
    made = {
        "docx": await kit.ingest(
            stub, collection, content=documents.docx(), filename="handbook.docx"
        ),
        "html": await kit.ingest(
            stub, collection, content=documents.html.encode(), filename="rules.html"
        ),
        "markdown": await kit.ingest(
            stub, collection, text=documents.markdown, filename="runbook.md"
        ),
    }
    for fmt, response in made.items():
        document = await kit.wait_indexed(stub, response.document.id)
        assert document.format == fmt
    queries = {
        "docx": ("hardware security keys", ["Onboarding handbook", "Equipment", "Security keys"]),
        "html": ("client dinners reimbursed per person", ["Expense rules", "Meals"]),
        "markdown": ("restore from the latest snapshot", ["Runbook", "Recovery", "Databases"]),
    }
    for fmt, (query, path) in queries.items():
        found = await stub.Search(
            pb.SearchRequest(query=query, collections=[collection], k=1), metadata=TENANT_A
        )
        [best] = found.passages
        assert best.document_id == made[fmt].document.id, fmt
        assert list(best.citation.heading_path) == path
        assert best.citation.page == 0
        assert await kit.cut(stub, best) == best.text


async def test_an_unreadable_file_fails_alone_with_its_reason(stub, kit, documents) -> None:
    collection = await kit.new_collection(stub)
    cases = {
        "encrypted": (documents.pdf(password="secret"), "policy.pdf", "encrypted"),
        "lying": (documents.pdf(), "policy.docx", "format_mismatch"),
        "corrupt": (documents.pdf()[:400], "broken.pdf", "corrupt"),
        "image": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "scan.png", "unsupported_format"),
    }
    made = {
        name: await kit.ingest(stub, collection, content=data, filename=filename)
        for name, (data, filename, _) in cases.items()
    }
    for name, (_, _, code) in cases.items():
        failed = await kit.wait_indexed(
            stub, made[name].document.id, state=pb.DOCUMENT_STATE_FAILED
        )
        assert failed.failure.code == code, name
        assert failed.failure.message
    # Resending a failed document tries again: a new version, not UNCHANGED.
    again = await kit.ingest(stub, collection, content=cases["corrupt"][0], filename="broken.pdf")
    assert again.outcome == pb.INGEST_OUTCOME_CREATED


SENSITIVE_PAGE = [
    ("h", "Payroll contacts"),
    ("p", "Write to payroll.lead@example.com about the SSN 536-22-8726 on file."),
]


async def test_a_pdf_passes_the_tenants_dlp_policy_after_it_is_read(stub, kit, documents) -> None:
    """The gateway cannot read a PDF, so it sends the tenant's policy with it: redact replaces
    each finding in the stored text and passages (counted per kind on the version), block fails
    the document naming the kinds and indexes nothing; without a policy the text is kept."""
    collection = await kit.new_collection(stub)
    data = documents.pdf([SENSITIVE_PAGE])
    redacted = await kit.ingest(
        stub, collection, content=data, filename="payroll.pdf", dlp_policy=pb.DLP_POLICY_REDACT
    )
    document = await kit.wait_indexed(stub, redacted.document.id)
    assert dict(document.redactions) == {"email": 1, "us_ssn": 1}
    text = await stub.ReadDocumentText(
        pb.ReadDocumentTextRequest(document_id=document.id), metadata=TENANT_A
    )
    assert "payroll.lead@example.com" not in text.text and "536-22-8726" not in text.text
    assert "Write to [REDACTED:email] about the SSN [REDACTED:us_ssn] on file." in text.text
    found = await stub.Search(
        pb.SearchRequest(
            query="payroll.lead@example.com 536-22-8726",
            collections=[collection],
            mode=pb.SEARCH_MODE_KEYWORD,
            k=10,
        ),
        metadata=TENANT_A,
    )
    for passage in found.passages:
        assert "example.com" not in passage.text and "8726" not in passage.text
        assert await kit.cut(stub, passage) == passage.text
    versions = await stub.ListDocumentVersions(
        pb.ListDocumentVersionsRequest(document_id=document.id), metadata=TENANT_A
    )
    assert dict(versions.versions[0].redactions) == {"email": 1, "us_ssn": 1}

    blocked = await kit.ingest(
        stub, collection, content=data, filename="again.pdf", dlp_policy=pb.DLP_POLICY_BLOCK
    )
    failed = await kit.wait_indexed(stub, blocked.document.id, state=pb.DOCUMENT_STATE_FAILED)
    assert failed.failure.code == "sensitive_data_blocked"
    assert "(email, us_ssn)" in failed.failure.message
    assert "example.com" not in failed.failure.message
    assert failed.chunk_count == 0

    kept = await kit.ingest(stub, collection, content=data, filename="kept.pdf")
    plain = await kit.wait_indexed(stub, kept.document.id)
    assert dict(plain.redactions) == {}
    read = await stub.ReadDocumentText(
        pb.ReadDocumentTextRequest(document_id=plain.id), metadata=TENANT_A
    )
    assert "payroll.lead@example.com" in read.text


async def test_invalid_ingest_names_the_field(stub, kit) -> None:
    collection = await kit.new_collection(stub)
    for request, message in [
        (pb.IngestDocumentRequest(collection=collection), "text or content is required"),
        (pb.IngestDocumentRequest(text="t"), "collection is required"),
        (
            pb.IngestDocumentRequest(collection=collection, text="t", title="x" * 501),
            "title is 501 characters long",
        ),
        (
            pb.IngestDocumentRequest(
                collection=collection, text="t", metadata={f"k{i}": "v" for i in range(51)}
            ),
            "metadata has 51 keys",
        ),
        (
            pb.IngestDocumentRequest(collection=collection, text="t", metadata={" ": "v"}),
            "metadata key is required",
        ),
        (
            pb.IngestDocumentRequest(collection=collection, text="t", dlp_policy=7),  # type: ignore[arg-type]
            "dlp_policy 7 is not a DLP policy",
        ),
    ]:
        await testing.expect_rpc_error(
            stub.IngestDocument(request, metadata=TENANT_A),
            grpc.StatusCode.INVALID_ARGUMENT,
            message,
        )
    await testing.expect_rpc_error(
        stub.IngestDocument(
            pb.IngestDocumentRequest(collection="no-such-collection", text="t"), metadata=TENANT_A
        ),
        grpc.StatusCode.NOT_FOUND,
        "no-such-collection",
    )


async def test_an_upload_streams_a_file_in_pieces(stub, kit, documents) -> None:
    collection = await kit.new_collection(stub)
    data = documents.pdf()

    async def messages():  # type: ignore[no-untyped-def]
        yield pb.UploadDocumentRequest(
            document=pb.IngestDocumentRequest(
                collection=collection, filename="travel.pdf", external_id="travel"
            )
        )
        for start in range(0, len(data), 1000):
            yield pb.UploadDocumentRequest(data=data[start : start + 1000])

    uploaded = await stub.UploadDocument(messages(), metadata=TENANT_A)
    assert uploaded.outcome == pb.INGEST_OUTCOME_CREATED
    assert uploaded.document.size_bytes == len(data)
    document = await kit.wait_indexed(stub, uploaded.document.id)
    assert document.page_count == 3
    again = await stub.UploadDocument(messages(), metadata=TENANT_A)
    assert again.outcome == pb.INGEST_OUTCOME_UNCHANGED
    assert again.document.id == uploaded.document.id and again.document.version == 1

    async def no_header():  # type: ignore[no-untyped-def]
        yield pb.UploadDocumentRequest(data=b"%PDF-")

    await testing.expect_rpc_error(
        stub.UploadDocument(no_header(), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the first message of an upload carries document",
    )


async def test_a_corrupt_pdf_in_a_batch_of_ten_fails_alone(stub, kit, documents) -> None:
    collection = await kit.new_collection(stub)
    good = [
        pb.IngestDocumentRequest(
            external_id=f"note-{i}",
            text=f"# Note {i}\n\nMeeting {i} decided to move the offsite to week {i + 10}.",
        )
        for i in range(9)
    ]
    corrupt = pb.IngestDocumentRequest(
        external_id="scan", content=documents.pdf()[:500], filename="scan.pdf"
    )
    batch = [*good[:4], corrupt, *good[4:]]

    async def messages():  # type: ignore[no-untyped-def]
        yield pb.ImportDocumentsRequest(header=pb.ImportHeader(collection=collection))
        for d in batch:
            yield pb.ImportDocumentsRequest(document=d)

    job = await stub.ImportDocuments(messages(), metadata=TENANT_A)
    assert (job.total, job.state) == (10, pb.IMPORT_JOB_STATE_RUNNING)
    finished = job

    async def done() -> bool:
        nonlocal finished
        finished = await stub.GetImportJob(pb.GetImportJobRequest(id=job.id), metadata=TENANT_A)
        return finished.state == pb.IMPORT_JOB_STATE_DONE

    await testing.wait_until(done, 300, "the import to finish")
    assert (finished.indexed, finished.failed, finished.unchanged, finished.pending) == (9, 1, 0, 0)
    assert finished.HasField("finish_time")
    failed = await stub.ListImportJobItems(
        pb.ListImportJobItemsRequest(job_id=job.id, failed_only=True), metadata=TENANT_A
    )
    [item] = failed.items
    assert (item.position, item.external_id, item.failure.code) == (4, "scan", "corrupt")
    everything = await stub.ListImportJobItems(
        pb.ListImportJobItemsRequest(job_id=job.id), metadata=TENANT_A
    )
    assert [i.position for i in everything.items] == list(range(10))
    found = await stub.Search(
        pb.SearchRequest(
            query="offsite week 17", collections=[collection], mode=pb.SEARCH_MODE_KEYWORD, k=1
        ),
        metadata=TENANT_A,
    )
    assert found.passages[0].external_id == "note-7"


async def test_a_bad_document_in_an_import_names_its_position_and_stores_nothing(stub, kit) -> None:
    collection = await kit.new_collection(stub)

    async def messages():  # type: ignore[no-untyped-def]
        yield pb.ImportDocumentsRequest(header=pb.ImportHeader(collection=collection))
        yield pb.ImportDocumentsRequest(document=pb.IngestDocumentRequest(text="fine"))
        yield pb.ImportDocumentsRequest(
            document=pb.IngestDocumentRequest(text="x", title="t" * 501)
        )

    await testing.expect_rpc_error(
        stub.ImportDocuments(messages(), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "documents[1].title is 501 characters long",
    )
    listed = await stub.ListDocuments(
        pb.ListDocumentsRequest(collection=collection), metadata=TENANT_A
    )
    assert list(listed.documents) == []


async def test_deleting_a_collection_removes_its_documents_and_passages(
    stub, kit, knowledge
) -> None:
    collection = await kit.new_collection(stub)
    made = await kit.ingest(stub, collection, text="The vault code rotates every Friday.")
    await kit.wait_indexed(stub, made.document.id)
    deleted = await stub.DeleteCollection(
        pb.DeleteCollectionRequest(id=collection), metadata=TENANT_A
    )
    assert (deleted.documents_deleted, deleted.chunks_deleted, deleted.vectors_deleted) == (1, 1, 1)
    await testing.expect_rpc_error(
        stub.GetDocument(pb.GetDocumentRequest(id=made.document.id), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
    )
    [event] = await testing.published_events(
        knowledge, "knowledge.document_deleted", made.document.id
    )
    assert event["payload"]["document_id"] == made.document.id


async def test_unknown_and_foreign_documents_are_not_found(stub, kit) -> None:
    collection = await kit.new_collection(stub)
    made = await kit.ingest(
        stub, collection, text="Board minutes: confidential merger with Globex."
    )
    await kit.wait_indexed(stub, made.document.id)
    for call in (
        stub.GetDocument(pb.GetDocumentRequest(id=made.document.id), metadata=TENANT_B),
        stub.DeleteDocument(pb.DeleteDocumentRequest(id=made.document.id), metadata=TENANT_B),
        stub.ReadDocumentText(
            pb.ReadDocumentTextRequest(document_id=made.document.id), metadata=TENANT_B
        ),
    ):
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND, made.document.id)
    # Naming another tenant's collection is naming nothing.
    await testing.expect_rpc_error(
        stub.Search(pb.SearchRequest(query="Globex", collections=[collection]), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
        collection,
    )
    found = await stub.Search(pb.SearchRequest(query="Globex merger"), metadata=TENANT_B)
    assert made.document.id not in {p.document_id for p in found.passages}


async def test_read_document_text_returns_ranges(stub, kit) -> None:
    collection = await kit.new_collection(stub)
    made = await kit.ingest(
        stub, collection, text="Alpha beta gamma.\n\nDelta epsilon.", title="Greek"
    )
    document = await kit.wait_indexed(stub, made.document.id)
    whole = await stub.ReadDocumentText(
        pb.ReadDocumentTextRequest(document_id=made.document.id), metadata=TENANT_A
    )
    assert whole.text == "Alpha beta gamma.\n\nDelta epsilon."
    assert (whole.start, whole.end, whole.text_length, whole.version) == (
        0,
        document.text_length,
        document.text_length,
        1,
    )
    part = await stub.ReadDocumentText(
        pb.ReadDocumentTextRequest(document_id=made.document.id, start=6, end=10),
        metadata=TENANT_A,
    )
    assert (part.text, part.start, part.end) == ("beta", 6, 10)
    await testing.expect_rpc_error(
        stub.ReadDocumentText(
            pb.ReadDocumentTextRequest(document_id=made.document.id, start=5, end=2),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "end (2) is before start (5)",
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.SearchRequest(query=""), "query is required"),
        (pb.SearchRequest(query="x", k=-3), "k must be between 1 and 100, got -3"),
        (pb.SearchRequest(query="x", k=101), "k must be between 1 and 100, got 101"),
        (pb.SearchRequest(query="x", mode=9), "mode must be one of"),
        (
            pb.SearchRequest(query="x", filters=[pb.MetadataFilter(key="team")]),
            "filters[0].values needs at least one value",
        ),
    ],
)
async def test_invalid_search_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.Search(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_bad_ids_name_the_field(stub) -> None:
    await testing.expect_rpc_error(
        stub.GetDocument(pb.GetDocumentRequest(id="doc-1"), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "id must be a UUID",
    )
    await testing.expect_rpc_error(
        stub.ListDocumentVersions(
            pb.ListDocumentVersionsRequest(document_id="v"), metadata=TENANT_A
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "document_id must be a UUID",
    )


async def test_call_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(
        stub.CreateCollection(pb.CreateCollectionRequest(name="x")),
        stub.IngestDocument(pb.IngestDocumentRequest(collection="x", text="t")),
        stub.GetDocument(pb.GetDocumentRequest(id=str(uuid.uuid4()))),
        stub.Search(pb.SearchRequest(query="x")),
        stub.ListEntities(pb.ListEntitiesRequest()),
    )


async def test_the_graph_reads_name_what_they_cannot_find(stub) -> None:
    # test_knowledge_graph.py covers what extraction writes; here, what is not there.
    listed = await stub.ListEntities(
        pb.ListEntitiesRequest(query="no entity is named like this"), metadata=TENANT_A
    )
    assert list(listed.entities) == []
    missing = str(uuid.uuid4())
    await testing.expect_rpc_error(
        stub.GetEntity(pb.GetEntityRequest(id=missing), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
        missing,
    )
    await testing.expect_rpc_error(
        stub.ListEntityRelations(
            pb.ListEntityRelationsRequest(entity_id=missing), metadata=TENANT_A
        ),
        grpc.StatusCode.NOT_FOUND,
        missing,
    )


async def test_an_indexed_document_is_announced(stub, kit, knowledge) -> None:
    collection = await kit.new_collection(stub)
    made = await kit.ingest(
        stub, collection, text="Book trains for trips under four hours.", title="Travel policy"
    )
    await kit.wait_indexed(stub, made.document.id)
    [event] = await testing.published_events(
        knowledge, "knowledge.document_ingested", made.document.id
    )
    assert event["payload"] == {
        "document_id": made.document.id,
        "collection_id": made.document.collection_id,
        "version": 1,
        "title": "Travel policy",
        "chunk_count": 1,
        "chunks_embedded": 1,
        "content_type": "text/markdown",
    }
    assert (event["client_id"], event["source_container"]) == (
        testing.tenant_of(TENANT_A),
        "knowledge",
    )
    updates = await testing.published_events(
        knowledge, "knowledge.knowledge_updated", made.document.collection_id
    )
    assert [u["payload"] for u in updates] == [
        {
            "collection_id": made.document.collection_id,
            "reason": "document_indexed",
            "document_ids": [made.document.id],
            "chunks_added": 1,
            "chunks_removed": 0,
        }
    ]
