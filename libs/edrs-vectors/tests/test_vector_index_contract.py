"""The contract every vector-index adapter keeps, run against each real engine (see conftest)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

import numpy as np
import pytest
from edrs_vectors import (
    IndexMismatch,
    InvalidVectorInput,
    Metric,
    VectorIndex,
    VectorRecord,
    brute_force_scores,
)

pytestmark = pytest.mark.integration


def records(
    vectors: np.ndarray,
    tenant: str = "acme",
    collection: str = "handbook",
    document_id: str | Sequence[str] = "doc-1",
) -> list[VectorRecord]:
    documents = [document_id] * len(vectors) if isinstance(document_id, str) else document_id
    return [
        VectorRecord(
            id=uuid.uuid4(),
            vector=v.tolist(),
            tenant=tenant,
            collection=collection,
            document_id=documents[i],
            payload={"n": i, "text": f"passage {i}"},
        )
        for i, v in enumerate(vectors)
    ]


@pytest.mark.parametrize("metric", list(Metric))
async def test_search_ranks_like_brute_force(open_index, metric: Metric) -> None:
    index: VectorIndex = await open_index(dimension=24, metric=metric)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 24))
    batch = records(vectors)
    result = await index.upsert(batch)
    assert result.upserted == 300 and result.rejected == ()
    for query in rng.normal(size=(8, 24)):
        hits = await index.search("acme", ["handbook"], query.tolist(), 10)
        expected = brute_force_scores(metric, vectors, query)
        best = np.argsort(-expected, kind="stable")[:10]
        assert [h.id for h in hits] == [batch[i].id for i in best]
        for hit, i in zip(hits, best, strict=True):
            assert hit.score == pytest.approx(expected[i], rel=1e-4, abs=1e-4)
            assert hit.payload == {"n": int(i), "text": f"passage {i}"}
            assert (hit.collection, hit.document_id) == ("handbook", "doc-1")


async def test_a_tenant_never_sees_another_tenants_vectors(open_index) -> None:
    index: VectorIndex = await open_index()
    rng = np.random.default_rng(1)
    query = rng.normal(size=16)
    # Tenant A holds the query itself and near copies: every unfiltered ranking puts A first.
    near = query + rng.normal(scale=0.01, size=(20, 16))
    far = rng.normal(size=(5, 16))
    a = records(near, tenant="tenant-a")
    b = records(far, tenant="tenant-b")
    await index.upsert(a + b)

    # k of 100 also takes the pgvector adapter past its default HNSW candidate list.
    hits = await index.search("tenant-b", ["handbook"], query.tolist(), 100)
    assert {h.id for h in hits} == {r.id for r in b}
    assert len(hits) == 5
    hits_a = await index.search("tenant-a", ["handbook"], query.tolist(), 5)
    assert {h.id for h in hits_a} <= {r.id for r in a}
    assert await index.search("tenant-c", ["handbook"], query.tolist(), 5) == []

    # The same id written by another tenant is another record: it replaces nothing of A's.
    stolen = VectorRecord(a[0].id, far[0].tolist(), "tenant-b", "handbook", "doc-x", {"b": 1})
    await index.upsert([stolen])
    assert await index.count("tenant-a") == 20
    assert await index.count("tenant-b") == 6
    top = await index.search("tenant-a", ["handbook"], near[0].tolist(), 1)
    assert top[0].id == a[0].id and top[0].payload == {"n": 0, "text": "passage 0"}
    # Deleting by that id as B leaves A's record alone.
    await index.delete("tenant-b", [a[0].id])
    assert await index.count("tenant-a") == 20
    assert await index.count("tenant-b") == 5


async def test_search_is_limited_to_the_named_collections(open_index) -> None:
    index: VectorIndex = await open_index()
    rng = np.random.default_rng(2)
    query = rng.normal(size=16)
    in_policies = records(query + rng.normal(scale=0.01, size=(4, 16)), collection="policies")
    in_handbook = records(rng.normal(size=(6, 16)), collection="handbook")
    await index.upsert(in_policies + in_handbook)

    hits = await index.search("acme", ["handbook"], query.tolist(), 10)
    assert {h.id for h in hits} == {r.id for r in in_handbook}
    hits = await index.search("acme", ["handbook", "policies"], query.tolist(), 10)
    assert len(hits) == 10
    assert [h.collection for h in hits[:4]] == ["policies"] * 4
    assert await index.count("acme", "policies") == 4
    assert await index.count("acme", "handbook") == 6
    assert await index.count("acme") == 10


async def test_search_within_documents(open_index) -> None:
    index: VectorIndex = await open_index()
    rng = np.random.default_rng(3)
    batch = records(rng.normal(size=(12, 16)), document_id=[f"doc-{i % 3}" for i in range(12)])
    await index.upsert(batch)
    hits = await index.search(
        "acme", ["handbook"], rng.normal(size=16).tolist(), 12, document_ids=["doc-0", "doc-2"]
    )
    assert sorted(h.document_id for h in hits) == ["doc-0"] * 4 + ["doc-2"] * 4


async def test_delete_by_document_and_by_collection(open_index) -> None:
    index: VectorIndex = await open_index()
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(9, 16))
    batch = records(vectors, document_id=["doc-1"] * 3 + ["doc-2"] * 3 + ["doc-3"] * 3)
    other = records(rng.normal(size=(2, 16)), collection="policies", document_id="doc-1")
    await index.upsert(batch + other)
    assert await index.count("acme", "handbook", "doc-1") == 3

    await index.delete_documents("acme", "handbook", ["doc-1", "doc-3"])
    assert await index.count("acme", "handbook", "doc-1") == 0
    assert await index.count("acme", "handbook", "doc-3") == 0
    assert await index.count("acme", "handbook") == 3
    # doc-1 of another collection is another document.
    assert await index.count("acme", "policies", "doc-1") == 2
    hits = await index.search("acme", ["handbook"], vectors[0].tolist(), 9)
    assert {h.document_id for h in hits} == {"doc-2"}

    await index.delete("acme", [batch[3].id])
    assert await index.count("acme", "handbook") == 2
    await index.delete_collection("acme", "handbook")
    assert await index.count("acme", "handbook") == 0
    assert await index.count("acme") == 2


async def test_an_upsert_of_the_same_id_replaces_vector_and_payload(open_index) -> None:
    index: VectorIndex = await open_index()
    rng = np.random.default_rng(5)
    old, new = rng.normal(size=(2, 16))
    decoys = records(rng.normal(size=(10, 16)))
    record_id = uuid.uuid4()
    await index.upsert(
        [*decoys, VectorRecord(record_id, old.tolist(), "acme", "handbook", "d", {"v": 1})]
    )
    await index.upsert([VectorRecord(record_id, new.tolist(), "acme", "handbook", "d2", {"v": 2})])
    assert await index.count("acme") == 11
    top = await index.search("acme", ["handbook"], new.tolist(), 1)
    assert top[0].id == record_id
    assert top[0].payload == {"v": 2} and top[0].document_id == "d2"
    assert top[0].score == pytest.approx(1.0, abs=1e-5)
    assert await index.count("acme", document_id="d") == 0


async def test_payloads_round_trip(open_index) -> None:
    index: VectorIndex = await open_index()
    payload = {
        "title": "Ünïcode — “quotes” ' \" \\ and 漢字",
        "page": 3,
        "heading_path": ["Policies", "Travel"],
        "offsets": {"start": 10, "end": 42},
        "ratio": 0.25,
        "flag": True,
        "none": None,
    }
    # Names that would break an expression pasted into a query string.
    tenant, collection = 'o\'brien "co"', "c'; DROP TABLE x; --"
    record = VectorRecord(uuid.uuid4(), [1.0] + [0.0] * 15, tenant, collection, "d'1", payload)
    assert (await index.upsert([record])).upserted == 1
    hits = await index.search(tenant, [collection], [1.0] + [0.0] * 15, 3)
    assert [(h.id, h.payload, h.collection, h.document_id) for h in hits] == [
        (record.id, payload, collection, "d'1")
    ]
    await index.delete_documents(tenant, collection, ["d'1"])
    assert await index.count(tenant) == 0


async def test_bad_records_fail_alone_with_their_reason(open_index) -> None:
    index: VectorIndex = await open_index(dimension=4)
    good = VectorRecord(uuid.uuid4(), [1.0, 0.0, 0.0, 0.0], "acme", "c", "d")
    duplicate_id = uuid.uuid4()
    batch = [
        good,
        VectorRecord(uuid.uuid4(), [1.0, 0.0, 0.0], "acme", "c", "d"),
        VectorRecord(uuid.uuid4(), [1.0, math.nan, 0.0, 0.0], "acme", "c", "d"),
        VectorRecord(uuid.uuid4(), [0.0, 0.0, 0.0, 0.0], "acme", "c", "d"),
        VectorRecord(uuid.uuid4(), [1.0, 1.0, math.inf, 0.0], "acme", "c", "d"),
        VectorRecord(uuid.uuid4(), [0.0, 1.0, 0.0, 0.0], "", "c", "d"),
        VectorRecord(uuid.uuid4(), [0.0, 1.0, 0.0, 0.0], "acme", "c", "d", {"x": {1, 2}}),
        VectorRecord(duplicate_id, [0.0, 1.0, 0.0, 0.0], "acme", "c", "d"),
        VectorRecord(duplicate_id, [0.0, 0.0, 1.0, 0.0], "acme", "c", "d"),
        VectorRecord("not-a-uuid", [0.0, 0.0, 1.0, 0.0], "acme", "c", "d"),  # type: ignore[arg-type]
        VectorRecord(uuid.uuid4(), [0.0, 1.0, 0.0, 0.0], "acme", "c", "d", {"x": "y" * 70_000}),
    ]
    result = await index.upsert(batch)
    assert result.upserted == 2
    reasons = {r.index: r.reason for r in result.rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert "has 3 dimensions" in reasons[1] and "holds 4" in reasons[1]
    assert "non-finite value (nan) at position 1" in reasons[2]
    assert "all zeros" in reasons[3]
    assert "non-finite value (inf) at position 2" in reasons[4]
    assert "tenant must be a non-empty string" in reasons[5]
    assert "not JSON" in reasons[6]
    assert "already record 7 of this batch" in reasons[8]
    assert "id must be a UUID" in reasons[9]
    assert "the limit is 65536" in reasons[10]
    assert await index.count("acme") == 2
    hits = await index.search("acme", ["c"], [0.0, 1.0, 0.0, 0.0], 5)
    assert [h.id for h in hits] == [duplicate_id, good.id]


async def test_bad_requests_are_refused_precisely(open_index) -> None:
    index: VectorIndex = await open_index(dimension=4)
    with pytest.raises(InvalidVectorInput, match="the batch is empty"):
        await index.upsert([])
    with pytest.raises(InvalidVectorInput, match="query vector has 5 dimensions"):
        await index.search("acme", ["c"], [1.0] * 5, 3)
    with pytest.raises(InvalidVectorInput, match="non-finite"):
        await index.search("acme", ["c"], [1.0, math.nan, 0, 0], 3)
    with pytest.raises(InvalidVectorInput, match="k must be an integer between 1 and 1000"):
        await index.search("acme", ["c"], [1.0] * 4, 0)
    with pytest.raises(InvalidVectorInput, match="tenant must be a non-empty string"):
        await index.search("", ["c"], [1.0] * 4, 3)
    with pytest.raises(InvalidVectorInput, match="collections must name at least one"):
        await index.search("acme", [], [1.0] * 4, 3)
    with pytest.raises(InvalidVectorInput, match="not the string"):
        await index.search("acme", "c", [1.0] * 4, 3)
    with pytest.raises(InvalidVectorInput, match="document_ids must name at least one"):
        await index.delete_documents("acme", "c", [])


async def test_ensure_is_idempotent_and_refuses_another_shape(open_index) -> None:
    index: VectorIndex = await open_index(dimension=8)
    await index.ensure()
    await index.upsert(records(np.ones((1, 8))))
    await index.ensure()
    assert await index.count("acme") == 1
    with pytest.raises(IndexMismatch, match="dimension 8"):
        await open_index(dimension=12, name=index.spec.name)


async def test_open_vector_index_picks_the_engine_by_name(tmp_path, postgres_engine) -> None:
    from edrs_core.db import ensure_database
    from edrs_vectors import IndexSpec, open_vector_index

    spec = IndexSpec("opened_by_name", 4)
    dsn = str(postgres_engine.url("edrs_vectors_test"))
    await ensure_database(dsn)
    for engine, url in [
        ("pgvector", dsn),
        ("qdrant", f"path:{tmp_path / 'qdrant'}"),
        ("milvus", str(tmp_path / "milvus.db")),
    ]:
        index = await open_vector_index(engine, url, spec)
        try:
            record = VectorRecord(uuid.uuid4(), [0.0, 1.0, 0.0, 0.0], "acme", "c", "d")
            await index.upsert([record])
            assert [h.id for h in await index.search("acme", ["c"], [0, 1, 0, 0], 1)] == [record.id]
            await index.delete_collection("acme", "c")
        finally:
            await index.close()
    with pytest.raises(InvalidVectorInput, match="unknown vector engine 'faiss'"):
        await open_vector_index("faiss", "x", spec)
