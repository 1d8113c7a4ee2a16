"""Unit tests: reciprocal rank fusion, adaptive convex fusion and its query coverage, the
re-embedding plan, and keyword query cleaning."""

from __future__ import annotations

import uuid

import pytest
from edrs_knowledge.chunking import Chunker
from edrs_knowledge.ingestion import plan
from edrs_knowledge.keyword import query_words, terms
from edrs_knowledge.parsing import parse_document
from edrs_knowledge.search import (
    convex_fusion,
    keyword_weight,
    query_coverage,
    reciprocal_rank_fusion,
)
from edrs_knowledge.store import StoredChunk

A, B, C, D = (uuid.UUID(int=i) for i in range(1, 5))


def test_fusion_sums_reciprocal_ranks_with_the_k_constant() -> None:
    fused = dict(reciprocal_rank_fusion([[A, B, C], [B, D]], k=60))
    assert fused[A] == 1 / 61
    assert fused[B] == 1 / 62 + 1 / 61
    assert fused[C] == 1 / 63
    assert fused[D] == 1 / 62
    assert [i for i, _ in reciprocal_rank_fusion([[A, B, C], [B, D]], k=60)] == [B, A, D, C]


def test_fusion_breaks_equal_scores_by_id() -> None:
    assert [i for i, _ in reciprocal_rank_fusion([[B], [A]], k=1)] == [A, B]


def test_the_k_constant_weighs_agreement_against_a_single_first_place() -> None:
    fillers = [uuid.UUID(int=i) for i in range(10, 14)]
    rankings = [[A, fillers[0], fillers[1], C], [D, fillers[2], fillers[3], C]]
    # k = 1: first once (1/2) beats fourth twice (2/5); k = 60: 1/61 loses to 2/64.
    assert reciprocal_rank_fusion(rankings, k=1)[0][0] == A
    assert reciprocal_rank_fusion(rankings, k=60)[0][0] == C


def stored(chunks) -> list[StoredChunk]:  # type: ignore[no-untyped-def]
    return [
        StoredChunk(
            id=uuid.uuid4(),
            document_id=A,
            collection_id=B,
            version=1,
            index=c.index,
            text=c.text,
            start=c.start,
            end=c.end,
            token_count=c.token_count,
            heading_path=c.heading_path,
            page=c.page,
            content_hash=c.content_hash,
        )
        for c in chunks
    ]


def chunks_of(markdown: str):  # type: ignore[no-untyped-def]
    return Chunker().chunk(parse_document(markdown.encode(), filename="d.md"))


DOCUMENT = "# A\n\nFirst part.\n\n# B\n\nSecond part.\n\n# C\n\nThird part.\n"


def test_an_unchanged_document_embeds_nothing_and_keeps_every_id() -> None:
    before = stored(chunks_of(DOCUMENT))
    steps = plan(chunks_of(DOCUMENT), before)
    assert steps.to_embed == [] and steps.stale == []
    assert [c.id for c in steps.chunks] == [c.id for c in before]


def test_a_changed_section_is_the_only_one_embedded() -> None:
    before = stored(chunks_of(DOCUMENT))
    steps = plan(chunks_of(DOCUMENT.replace("Second part.", "Second part, revised.")), before)
    # A section's passage starts with its heading, and what is embedded adds the heading path.
    assert [c.text for c, _ in steps.to_embed] == ["B\n\nSecond part, revised."]
    assert [text for _, text in steps.to_embed] == ["B\n\nB\n\nSecond part, revised."]
    assert steps.stale == [before[1].id]
    assert [c.id for c in steps.chunks][::2] == [before[0].id, before[2].id]


def test_the_same_text_under_another_heading_is_embedded_again() -> None:
    before = stored(chunks_of(DOCUMENT))
    steps = plan(chunks_of(DOCUMENT.replace("# B", "# Bee")), before)
    assert [c.text for c, _ in steps.to_embed] == ["Bee\n\nSecond part."]
    assert steps.stale == [before[1].id]


def test_a_repeated_passage_reuses_each_previous_copy_once() -> None:
    twice = "# A\n\nSame.\n\n# A\n\nSame.\n"
    before = stored(chunks_of(twice))
    steps = plan(chunks_of(twice + "\n# A\n\nSame.\n"), before)
    assert len(steps.to_embed) == 1
    assert {c.id for c in steps.chunks[:2]} == {c.id for c in before}


def test_query_words_drop_the_query_language() -> None:
    assert query_words('tenant:acme AND "exact phrase" (x OR y) -z') == (
        "tenant acme and exact phrase x or y z"
    )
    assert query_words("?!") == ""


def test_convex_fusion_normalises_each_ranking_and_weighs_keyword() -> None:
    keyword = [(A, 12.0), (B, 6.0)]  # BM25 / the best: A 1.0, B 0.5
    vector = [(C, 0.8), (B, 0.6), (A, 0.4)]  # min-max: C 1.0, B 0.5, A 0.0
    fused, graph = convex_fusion(keyword, vector, [], keyword_weight=0.75, graph_weight=0.25)
    scores = dict(fused)
    assert scores[A] == pytest.approx(0.75)
    assert scores[B] == pytest.approx(0.5)
    assert scores[C] == pytest.approx(0.25)
    assert [i for i, _ in fused] == [A, B, C] and graph == {}
    # Keyword's weight moved to vector: the vector ranking's first wins.
    assert convex_fusion(keyword, vector, [], keyword_weight=0.2, graph_weight=0.0)[0][0][0] == C


def test_convex_fusion_adds_the_graph_term_and_breaks_ties_by_id() -> None:
    fused, graph = convex_fusion(
        [(B, 1.0)], [(A, 0.5)], [(D, 4.0), (A, 2.0)], keyword_weight=0.5, graph_weight=0.5
    )
    assert graph == {D: 0.5, A: 0.25}
    assert dict(fused) == pytest.approx({A: 0.5 + 0.25, B: 0.5, D: 0.5})
    assert [i for i, _ in fused] == [A, B, D]  # B and D equal: by id
    # A passage first in both rankings scores 1 whatever the weight.
    assert convex_fusion([(A, 3.0)], [(A, 0.2)], [], keyword_weight=0.3, graph_weight=0.0)[0] == [
        (A, 1.0)
    ]


def test_the_keyword_weight_follows_the_query_coverage() -> None:
    query = terms("How do I unpack the compressed archives?")
    assert query == {"unpack", "compress", "archiv"}
    held = [terms("Archives are unpacked here"), terms("compressing files")]
    assert query_coverage(query, held) == 2 / 3
    assert query_coverage(query, []) == 0.0 and query_coverage(set(), held) == 0.0
    assert keyword_weight(1.0, 0.9, 0.3) == pytest.approx(0.9)
    assert keyword_weight(0.0, 0.9, 0.3) == 0.3
    assert keyword_weight(0.5, 0.9, 0.3) == pytest.approx(0.6)
