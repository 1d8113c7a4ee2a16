"""The knowledge graph end to end, on the real service (PostgreSQL, pgvector, tantivy and the
reasoning service's Embed): entities and relations extracted at ingestion and deduplicated, an
entity's neighbourhood with the passages each relation was read from, provenance removed with
its document, supersession, graph expansion in hybrid search, and tenant isolation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from edrs_core import testing
from edrs_knowledge.graph import normalize_name
from edrs_knowledge.search import Mode, Searcher
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc

pytestmark = pytest.mark.integration

PRESS = "Acme Corp acquired Globex in June 2024. The deal closed after a long review."
HQ = "ACME Corporation (ACME) is headquartered in Springfield."
CEO = "Hank Scorpio is the CEO of Globex."
# Passages that share the query's words but know nothing of Acme or Globex.
DISTRACTORS = [
    "Who leads the weekly company meeting? The office manager leads the company meeting.",
    "The finance team leads the company budget review and who signs it every quarter.",
    "Our company acquired new laptops; the design team leads the roll-out.",
    "The company leads the market in parcel tracking, and the sales team leads its pitch.",
    "Leadership training for the company starts in May; team leads who joined recently attend.",
    "The company canteen opens at noon.",
    "Parking at the company garage is free for visitors.",
    "The company newsletter goes out on Fridays.",
    "Parcels are weighed at the depot before dispatch.",
]
QUERY = "Who leads the company Acme acquired?"


def new_tenant() -> list[tuple[str, str]]:
    return testing.tenant_metadata(f"graph-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
async def service(start_knowledge) -> AsyncIterator[SimpleNamespace]:  # type: ignore[no-untyped-def]
    async with start_knowledge("test_knowledge_graph") as svc:
        servicer: Any = svc.servicer("KnowledgeService")
        yield SimpleNamespace(
            stub=knowledge_pb2_grpc.KnowledgeServiceStub(svc.channel),
            searcher=servicer.searcher,
            db=svc.runner.runtime.db,
        )


async def ingest_all(stub, kit, tenant, collection: str, texts: dict[str, str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Ingest each text under its external id, one after the other (an entity's name is the
    first spelling stored), each indexed before the next is sent."""
    indexed = {}
    for name, text in texts.items():
        made = await kit.ingest(stub, collection, external_id=name, text=text, tenant=tenant)
        indexed[name] = await kit.wait_indexed(stub, made.document.id, tenant=tenant)
    return indexed


async def entity(stub, tenant, query: str) -> pb.Entity:  # type: ignore[no-untyped-def]
    listed = await stub.ListEntities(pb.ListEntitiesRequest(query=query), metadata=tenant)
    key = normalize_name(query)
    matches = [
        e for e in listed.entities if key in {normalize_name(n) for n in (e.name, *e.aliases)}
    ]
    assert len(matches) == 1, [(e.name, list(e.aliases)) for e in listed.entities]
    return matches[0]


async def neighbourhood(stub, tenant, entity_id: str, superseded: bool = False):  # type: ignore[no-untyped-def]
    return await stub.ListEntityRelations(
        pb.ListEntityRelationsRequest(entity_id=entity_id, include_superseded=superseded),
        metadata=tenant,
    )


async def test_extraction_deduplicates_and_the_neighbourhood_cites_its_passages(
    service, kit
) -> None:  # type: ignore[no-untyped-def]
    stub, tenant = service.stub, new_tenant()
    collection = await kit.new_collection(stub, tenant)
    docs = await ingest_all(stub, kit, tenant, collection, {"press": PRESS, "hq": HQ, "ceo": CEO})

    # "Acme Corp", "ACME Corporation" and "ACME", in two documents: one entity.
    listed = await stub.ListEntities(pb.ListEntitiesRequest(query="acme"), metadata=tenant)
    assert [(e.name, list(e.aliases)) for e in listed.entities] == [
        ("Acme Corp", ["ACME", "ACME Corporation"])
    ]
    [acme] = listed.entities
    assert acme.type == "organization"
    assert acme.mention_count == 2 and list(acme.collection_ids) == [docs["press"].collection_id]
    # Every entity once: no two for one normalised name.
    everything = await stub.ListEntities(pb.ListEntitiesRequest(), metadata=tenant)
    assert sorted((e.name, e.type) for e in everything.entities) == [
        ("Acme Corp", "organization"),
        ("Globex", "organization"),
        ("Hank Scorpio", "person"),
        ("Springfield", "place"),
    ]
    people = await stub.ListEntities(pb.ListEntitiesRequest(type="person"), metadata=tenant)
    assert [e.name for e in people.entities] == ["Hank Scorpio"]

    around = await neighbourhood(stub, tenant, acme.id)
    assert around.entity.id == acme.id
    by_predicate = {r.predicate: r for r in around.relations}
    assert set(by_predicate) == {"acquired", "located_in"}
    names = {e.id: e.name for e in around.neighbours}
    acquired = by_predicate["acquired"]
    assert (acquired.subject_id, names[acquired.object_id]) == (acme.id, "Globex")
    assert acquired.valid_from.ToDatetime().date().isoformat() == "2024-06-01"
    assert not acquired.HasField("valid_to") and acquired.superseded_by == ""
    # The passage it was read from, with a citation that cuts it out of the stored text.
    [source] = acquired.sources
    assert (source.document_id, source.text) == (docs["press"].id, PRESS)
    read = await stub.ReadDocumentText(
        pb.ReadDocumentTextRequest(document_id=source.document_id), metadata=tenant
    )
    assert read.text[source.citation.start : source.citation.end] == PRESS
    [located] = [by_predicate["located_in"]]
    assert names[located.object_id] == "Springfield"
    assert [s.document_id for s in located.sources] == [docs["hq"].id]

    globex = await entity(stub, tenant, "Globex")
    around_globex = await neighbourhood(stub, tenant, globex.id)
    assert sorted((r.predicate, r.subject_id == globex.id) for r in around_globex.relations) == [
        ("acquired", False),
        ("ceo_of", False),
    ]

    # The same document again, as a new version: the graph is the same, not doubled.
    again = await kit.ingest(
        stub, collection, external_id="press", text=PRESS + "\n\nMore soon.", tenant=tenant
    )
    await kit.wait_indexed(stub, again.document.id, tenant=tenant)
    [acquired_again] = [
        r
        for r in (await neighbourhood(stub, tenant, acme.id)).relations
        if r.predicate == "acquired"
    ]
    assert acquired_again.id == acquired.id
    assert [s.document_id for s in acquired_again.sources] == [docs["press"].id]
    assert (await entity(stub, tenant, "acme")).mention_count == 2


async def test_deleting_a_document_removes_its_provenance(service, kit) -> None:  # type: ignore[no-untyped-def]
    stub, tenant, db = service.stub, new_tenant(), service.db
    collection = await kit.new_collection(stub, tenant)
    docs = await ingest_all(
        stub,
        kit,
        tenant,
        collection,
        {"press": PRESS, "ceo": CEO, "again": "Acme Corp acquired Globex, the filing says."},
    )
    acme, globex = await entity(stub, tenant, "acme"), await entity(stub, tenant, "globex")
    [acquired] = [
        r
        for r in (await neighbourhood(stub, tenant, acme.id)).relations
        if r.predicate == "acquired"
    ]
    # One relation, read from two documents.
    assert sorted(s.document_id for s in acquired.sources) == sorted(
        [docs["press"].id, docs["again"].id]
    )

    deleted = await stub.DeleteDocument(
        pb.DeleteDocumentRequest(id=docs["ceo"].id), metadata=tenant
    )
    # Its passage named Hank Scorpio and Globex (two mentions) and stated ceo_of (one source):
    # the relation and Hank Scorpio go; Globex stays, the other documents name it.
    assert (deleted.provenance_deleted, deleted.relations_deleted, deleted.entities_deleted) == (
        3,
        1,
        1,
    )
    listed = await stub.ListEntities(pb.ListEntitiesRequest(query="scorpio"), metadata=tenant)
    assert list(listed.entities) == []
    assert [r.predicate for r in (await neighbourhood(stub, tenant, globex.id)).relations] == [
        "acquired"
    ]

    # Deleting one of the two sources keeps the relation with the other.
    deleted = await stub.DeleteDocument(
        pb.DeleteDocumentRequest(id=docs["press"].id), metadata=tenant
    )
    assert (deleted.relations_deleted, deleted.entities_deleted) == (0, 0)
    [kept] = (await neighbourhood(stub, tenant, acme.id)).relations
    assert (kept.id, [s.document_id for s in kept.sources]) == (acquired.id, [docs["again"].id])

    # And the last one takes everything with it.
    deleted = await stub.DeleteDocument(
        pb.DeleteDocumentRequest(id=docs["again"].id), metadata=tenant
    )
    assert (deleted.provenance_deleted, deleted.relations_deleted, deleted.entities_deleted) == (
        3,
        1,
        2,
    )
    client_id = testing.tenant_of(tenant)
    for table in ("entities", "entity_mentions", "relations"):
        count = await db.fetchval(f"SELECT count(*) FROM {table} WHERE client_id = $1", client_id)
        assert count == 0, table


async def test_a_contradicting_document_supersedes_a_relation_and_updates_retract(
    service, kit
) -> None:  # type: ignore[no-untyped-def]
    stub, tenant = service.stub, new_tenant()
    collection = await kit.new_collection(stub, tenant)
    await ingest_all(stub, kit, tenant, collection, {"2023": "Jane Doe works at Acme since 2023."})
    jane = await entity(stub, tenant, "jane doe")
    [first] = (await neighbourhood(stub, tenant, jane.id)).relations
    later = await ingest_all(
        stub, kit, tenant, collection, {"2025": "Jane Doe joined Globex in March 2025."}
    )
    current = (await neighbourhood(stub, tenant, jane.id)).relations
    assert [r.predicate for r in current] == ["works_at"]
    [now] = current
    assert now.id != first.id
    history = {
        r.id: r for r in (await neighbourhood(stub, tenant, jane.id, superseded=True)).relations
    }
    old = history[first.id]
    # Superseded, not deleted: it ends when the new one starts, and says why.
    assert old.superseded_by == now.id
    assert old.valid_to.ToDatetime().date().isoformat() == "2025-03-01"
    assert later["2025"].id in old.supersede_reason
    assert "Jane Doe works_at Globex" in old.supersede_reason
    assert len(old.sources) == 1

    # The newer document, updated to say nothing of Jane: its relation goes, the old one stands.
    updated = await kit.ingest(
        stub, collection, external_id="2025", text="Globex opened an office.", tenant=tenant
    )
    await kit.wait_indexed(stub, updated.document.id, tenant=tenant)
    [restored] = (await neighbourhood(stub, tenant, jane.id, superseded=True)).relations
    assert (restored.id, restored.superseded_by, restored.supersede_reason) == (first.id, "", "")
    assert not restored.HasField("valid_to")


async def test_graph_expansion_ranks_a_passage_reachable_only_through_a_relation(
    service, kit
) -> None:  # type: ignore[no-untyped-def]
    stub, tenant = service.stub, new_tenant()
    collection = await kit.new_collection(stub, tenant)
    texts = {"press": PRESS, "ceo": CEO} | {f"d{i}": t for i, t in enumerate(DISTRACTORS)}
    docs = await ingest_all(stub, kit, tenant, collection, texts)
    answer = docs["ceo"].id  # names neither Acme nor the query's words: only Globex links them

    found = await stub.Search(
        pb.SearchRequest(query=QUERY, collections=[collection], k=20), metadata=tenant
    )
    with_graph = [p.document_id for p in found.passages]
    passage = found.passages[with_graph.index(answer)]
    weight = service.searcher.graph_weight
    assert 0 < passage.parts.graph <= weight and passage.parts.graph_rank >= 1
    # The passage stating the relation ranks first in the graph list: its graph term is the
    # whole graph weight (its graph score over the best graph score, times the weight).
    press = found.passages[with_graph.index(docs["press"].id)]
    assert press.parts.graph_rank == 1
    assert press.parts.graph == pytest.approx(weight)
    # Passages outside the neighbourhood get nothing from the graph.
    for p in found.passages:
        if p.document_id not in (answer, docs["press"].id):
            assert (p.parts.graph, p.parts.graph_rank) == (0, 0)

    # The same search on the same engines without graph expansion.
    plain = Searcher(
        service.searcher.store,
        service.searcher.embedder,
        service.searcher.vectors,
        service.searcher.keywords,
        rrf_k=service.searcher.rrf_k,
        candidates=service.searcher.candidates,
        graph=False,
        fusion=service.searcher.fusion,
        keyword_weight_matched=service.searcher.keyword_weight_matched,
        keyword_weight_unmatched=service.searcher.keyword_weight_unmatched,
        graph_weight=service.searcher.graph_weight,
    )
    results = await plain.search(
        testing.tenant_of(tenant),
        [uuid.UUID(docs["ceo"].collection_id)],
        QUERY,
        20,
        Mode.HYBRID,
        {},
    )
    without_graph = [str(r.passage.chunk.document_id) for r in results]
    assert all(r.parts.graph == 0 for r in results)
    assert with_graph.index(answer) < without_graph.index(answer), (with_graph, without_graph)
    # The graph part is the graph ranking's term of the fused score: the rest of the score is
    # what the same search gives the passage without the graph ranking.
    alone = next(r for r in results if str(r.passage.chunk.id) == passage.chunk_id)
    assert passage.score == pytest.approx(alone.score + passage.parts.graph)

    # Vector and keyword modes never use the graph.
    for mode in (pb.SEARCH_MODE_VECTOR, pb.SEARCH_MODE_KEYWORD):
        other = await stub.Search(
            pb.SearchRequest(query=QUERY, collections=[collection], mode=mode, k=20),
            metadata=tenant,
        )
        assert all(p.parts.graph_rank == 0 for p in other.passages)


async def test_the_graph_is_tenant_scoped(service, kit) -> None:  # type: ignore[no-untyped-def]
    stub, tenant_a, tenant_b = service.stub, new_tenant(), new_tenant()
    name = f"shared-{uuid.uuid4().hex[:8]}"
    for tenant in (tenant_a, tenant_b):
        await stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=tenant)
    await ingest_all(stub, kit, tenant_a, name, {"press": PRESS, "ceo": CEO})
    theirs = await ingest_all(
        stub, kit, tenant_b, name, {"own": "Acme Corp acquired Initech in 2020."}
    )
    acme_a, acme_b = await entity(stub, tenant_a, "acme"), await entity(stub, tenant_b, "acme")
    # Each tenant has its own Acme, with its own relations and mentions.
    assert acme_a.id != acme_b.id and acme_b.mention_count == 1
    b_names = sorted(
        e.name
        for e in (await stub.ListEntities(pb.ListEntitiesRequest(), metadata=tenant_b)).entities
    )
    assert b_names == ["Acme Corp", "Initech"]
    [b_relation] = (await neighbourhood(stub, tenant_b, acme_b.id)).relations
    assert [s.document_id for s in b_relation.sources] == [theirs["own"].id]
    for call in (
        stub.GetEntity(pb.GetEntityRequest(id=acme_a.id), metadata=tenant_b),
        stub.ListEntityRelations(
            pb.ListEntityRelationsRequest(entity_id=acme_a.id), metadata=tenant_b
        ),
    ):
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND, acme_a.id)
    # B's search reaches only B's passages, graph part included.
    found = await stub.Search(
        pb.SearchRequest(query="Who leads the company Acme acquired?", k=50), metadata=tenant_b
    )
    assert {p.document_id for p in found.passages} == {theirs["own"].id}
    assert found.passages[0].parts.graph_rank == 1


async def test_an_alias_declared_later_merges_two_entities(service, kit) -> None:  # type: ignore[no-untyped-def]
    stub, tenant = service.stub, new_tenant()
    collection = await kit.new_collection(stub, tenant)
    docs = await ingest_all(
        stub,
        kit,
        tenant,
        collection,
        {
            "short": "Jane Doe works at IBM.",
            "long": "Initech acquired International Business Machines in 2020.",
        },
    )
    listed = await stub.ListEntities(pb.ListEntitiesRequest(), metadata=tenant)
    assert sorted(e.name for e in listed.entities) == [
        "IBM",
        "Initech",
        "International Business Machines",
        "Jane Doe",
    ]
    # A third document says the two names are one company.
    docs |= await ingest_all(
        stub,
        kit,
        tenant,
        collection,
        {"both": "International Business Machines (IBM) is headquartered in Armonk."},
    )
    listed = await stub.ListEntities(pb.ListEntitiesRequest(), metadata=tenant)
    assert sorted(e.name for e in listed.entities) == ["Armonk", "IBM", "Initech", "Jane Doe"]
    # The older entity stays, named as before, with the other name as an alias, and everything
    # the two had: three passages, the relations of both and the new one.
    ibm = await entity(stub, tenant, "International Business Machines")
    assert (ibm.name, list(ibm.aliases), ibm.mention_count) == (
        "IBM",
        ["International Business Machines"],
        3,
    )
    around = await neighbourhood(stub, tenant, ibm.id)
    names = {e.id: e.name for e in around.neighbours}
    assert sorted(
        (names[r.subject_id] if r.object_id == ibm.id else "IBM", r.predicate,
         names[r.object_id] if r.subject_id == ibm.id else "IBM",
         [s.document_id for s in r.sources])
        for r in around.relations
    ) == [
        ("IBM", "located_in", "Armonk", [docs["both"].id]),
        ("Initech", "acquired", "IBM", [docs["long"].id]),
        ("Jane Doe", "works_at", "IBM", [docs["short"].id]),
    ]  # fmt: skip
