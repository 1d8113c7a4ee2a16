"""Learning gaps on the running knowledge service (real gRPC, embedded PostgreSQL, pgvector,
tantivy, the reasoning service's embedding model): every search is recorded after it answered,
and ListLearningGaps lists a collection's poorly answered questions, grouped, worst first,
tenant-scoped, over a window, paginated."""

from __future__ import annotations

import uuid

import grpc
import pytest
from edrs_core import testing
from edrs_knowledge.gaps import SearchLog, normalize_query
from edrs_proto.common.v1 import common_pb2
from edrs_proto.knowledge.v1 import knowledge_pb2 as pb
from edrs_proto.knowledge.v1 import knowledge_pb2_grpc

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")

LEAVE = "Employees get 25 days of paid leave each year."
GOOD = "Employees get 25 days of paid leave each year"
VPN = "How do I configure the VPN on Linux?"
VPN_AGAIN = "  how do i CONFIGURE the vpn, on linux  "
EXTINGUISHER = "Where is the nearest fire extinguisher?"
REVENUE = "quarterly revenue forecast"


@pytest.fixture
def stub(knowledge: testing.RunningService) -> knowledge_pb2_grpc.KnowledgeServiceStub:
    return knowledge_pb2_grpc.KnowledgeServiceStub(knowledge.channel)


@pytest.fixture
def search_log(knowledge: testing.RunningService) -> SearchLog:
    log: SearchLog = knowledge.servicer("KnowledgeService").search_log
    return log


def test_queries_are_normalised_for_grouping() -> None:
    assert (
        normalize_query(VPN) == normalize_query(VPN_AGAIN) == "how do i configure the vpn on linux"
    )
    assert normalize_query("\uff21\uff22\uff23  déjà-vu_2!") == "abc déjà vu 2"  # full-width ABC
    assert normalize_query("?!") == ""


async def _search(stub, collection: str, query: str, **fields) -> pb.SearchResponse:  # type: ignore[no-untyped-def]
    return await stub.Search(
        pb.SearchRequest(query=query, collections=[collection], **fields), metadata=TENANT_A
    )


def _best_similarity(found: pb.SearchResponse) -> float:
    # The collection is small enough that every passage comes back: the best vector part of the
    # passages is the vector ranking's best similarity.
    return max(p.parts.vector for p in found.passages)


async def _gaps(stub, collection: str, tenant=TENANT_A, **fields) -> pb.ListLearningGapsResponse:  # type: ignore[no-untyped-def]
    return await stub.ListLearningGaps(
        pb.ListLearningGapsRequest(collection=collection, **fields), metadata=tenant
    )


async def test_poorly_answered_questions_are_listed_grouped_worst_first(
    stub, kit, search_log
) -> None:
    collection = await kit.new_collection(stub)
    leave = await kit.ingest(stub, collection, text=f"# Leave policy\n\n{LEAVE}")
    soup = await kit.ingest(stub, collection, text="Soup and salad are served on Mondays.")
    for document in (leave, soup):
        await kit.wait_indexed(stub, document.document.id)

    good = await _search(stub, collection, GOOD)
    assert good.passages[0].document_id == leave.document.id
    assert _best_similarity(good) >= 0.5
    # The same question once without an answer (a filter no document matches), once answered
    # well: answered well once, it is not a gap.
    missed = await _search(
        stub, collection, GOOD.upper(), filters=[pb.MetadataFilter(key="team", values=["none"])]
    )
    assert not missed.passages
    vpn = [
        await _search(stub, collection, VPN),
        await _search(stub, collection, VPN_AGAIN, mode=pb.SEARCH_MODE_VECTOR),
    ]
    fire = await _search(stub, collection, EXTINGUISHER, origin=pb.SEARCH_ORIGIN_TURN)
    revenue = await _search(
        stub, collection, REVENUE, filters=[pb.MetadataFilter(key="team", values=["none"])]
    )
    assert not revenue.passages
    vpn_best = max(_best_similarity(f) for f in vpn)
    fire_best = _best_similarity(fire)
    assert vpn_best < 0.5 and fire_best < 0.5, (vpn_best, fire_best)
    await search_log.flush()

    listed = await _gaps(stub, collection)
    assert (listed.window_days, listed.max_similarity) == (30, pytest.approx(0.5))
    by_query = {g.normalized_query: g for g in listed.gaps}
    assert set(by_query) == {
        normalize_query(VPN),
        normalize_query(EXTINGUISHER),
        normalize_query(REVENUE),
    }
    # Worst first: no similarity at all, then the lowest.
    expected_order = [normalize_query(REVENUE)] + [
        q
        for _, q in sorted(
            [(vpn_best, normalize_query(VPN)), (fire_best, normalize_query(EXTINGUISHER))]
        )
    ]
    assert [g.normalized_query for g in listed.gaps] == expected_order

    grouped = by_query[normalize_query(VPN)]
    assert (grouped.count, grouped.no_passage_count) == (2, 0)
    assert grouped.query == VPN_AGAIN.strip()  # the latest as asked (validation trims it)
    assert grouped.best_similarity == pytest.approx(vpn_best, abs=1e-6)
    assert grouped.HasField("best_score") and grouped.best_score > 0
    assert list(grouped.origins) == [pb.SEARCH_ORIGIN_API]
    assert grouped.first_ask_time.ToDatetime() <= grouped.last_ask_time.ToDatetime()
    assert list(by_query[normalize_query(EXTINGUISHER)].origins) == [pb.SEARCH_ORIGIN_TURN]
    nothing = by_query[normalize_query(REVENUE)]
    assert (nothing.count, nothing.no_passage_count) == (1, 1)
    assert not nothing.HasField("best_similarity") and not nothing.HasField("best_score")

    # A threshold of 1 makes the good question a gap too; one at the poor questions' lowest
    # similarity leaves only the question that found nothing.
    strict = await _gaps(stub, collection, max_similarity=1.0)
    assert normalize_query(GOOD) in {g.normalized_query for g in strict.gaps}
    loose = await _gaps(stub, collection, max_similarity=min(vpn_best, fire_best))
    assert [g.normalized_query for g in loose.gaps] == [normalize_query(REVENUE)]

    # Pages of one: the same list, in the same order.
    pages = await testing.collect_pages(
        stub.ListLearningGaps,
        lambda page: pb.ListLearningGapsRequest(collection=collection, page=page),
        "gaps",
        page_size=1,
        metadata=TENANT_A,
    )
    assert [g.normalized_query for g in pages] == expected_order


async def test_gaps_are_tenant_scoped_and_bad_requests_are_refused(stub, kit, search_log) -> None:
    name = f"gaps-{uuid.uuid4().hex[:10]}"
    mine = await stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=TENANT_A)
    theirs = await stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=TENANT_B)
    document = await kit.ingest(stub, name, text="Soup and salad are served on Mondays.")
    await kit.wait_indexed(stub, document.document.id)
    await _search(stub, name, VPN)
    await search_log.flush()

    assert [g.normalized_query for g in (await _gaps(stub, name)).gaps] == [normalize_query(VPN)]
    assert [g.normalized_query for g in (await _gaps(stub, mine.id)).gaps] == [normalize_query(VPN)]
    # Tenant B's collection of the same name holds none of A's questions; A's id is not B's.
    assert not (await _gaps(stub, name, tenant=TENANT_B)).gaps
    assert not (await _gaps(stub, theirs.id, tenant=TENANT_B)).gaps
    await testing.expect_rpc_error(_gaps(stub, mine.id, tenant=TENANT_B), grpc.StatusCode.NOT_FOUND)
    await testing.expect_rpc_error(
        _gaps(stub, f"missing-{uuid.uuid4().hex[:8]}"), grpc.StatusCode.NOT_FOUND
    )
    await testing.expect_rpc_error(
        _gaps(stub, ""), grpc.StatusCode.INVALID_ARGUMENT, "collection is required"
    )
    await testing.expect_rpc_error(
        _gaps(stub, name, window_days=366), grpc.StatusCode.INVALID_ARGUMENT, "window_days"
    )
    await testing.expect_rpc_error(
        _gaps(stub, name, window_days=-1), grpc.StatusCode.INVALID_ARGUMENT, "window_days"
    )
    for threshold in (1.5, -1.01):
        await testing.expect_rpc_error(
            _gaps(stub, name, max_similarity=threshold),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_similarity",
        )
    await testing.expect_rpc_error(
        _gaps(stub, name, page=common_pb2.PageRequest(page_token="not-ours")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
    await testing.expect_rpc_error(
        _search(stub, name, VPN, origin=99), grpc.StatusCode.INVALID_ARGUMENT, "origin"
    )


async def test_the_window_and_the_retention_bound_what_is_kept(stub, kit, search_log) -> None:
    collection = await kit.new_collection(stub)
    document = await kit.ingest(stub, collection, text="Soup and salad are served on Mondays.")
    await kit.wait_indexed(stub, document.document.id)
    await _search(stub, collection, VPN)
    await _search(stub, collection, EXTINGUISHER)
    await search_log.flush()
    info = await stub.GetCollection(pb.GetCollectionRequest(id=collection), metadata=TENANT_A)
    # The VPN question was asked ten days ago, as far as the log knows.
    await search_log.db.execute(
        """UPDATE search_log SET created_at = now() - interval '10 days'
           WHERE collection_ids @> ARRAY[$1::uuid] AND normalized_query = $2""",
        uuid.UUID(info.id),
        normalize_query(VPN),
    )
    week = await _gaps(stub, collection, window_days=7)
    assert [g.normalized_query for g in week.gaps] == [normalize_query(EXTINGUISHER)]
    month = await _gaps(stub, collection)
    assert {g.normalized_query for g in month.gaps} == {
        normalize_query(VPN),
        normalize_query(EXTINGUISHER),
    }
    # Pruning with a retention of 5 days removes the ten-day-old record (and only old ones).
    pruned = await SearchLog(search_log.db, retention_days=5).prune()
    assert pruned >= 1
    month = await _gaps(stub, collection)
    assert [g.normalized_query for g in month.gaps] == [normalize_query(EXTINGUISHER)]
    # A page token is bound to the query it was issued for.
    await _search(stub, collection, REVENUE)
    await search_log.flush()
    first = await _gaps(stub, collection, page=common_pb2.PageRequest(page_size=1))
    assert first.page.next_page_token
    await testing.expect_rpc_error(
        _gaps(
            stub,
            collection,
            window_days=7,
            page=common_pb2.PageRequest(page_size=1, page_token=first.page.next_page_token),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "another collection, window or threshold",
    )
