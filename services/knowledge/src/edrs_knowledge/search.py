"""Passage search: a vector ranking (the query's embedding against the passages'), a keyword
ranking (BM25), a graph ranking (the neighbourhood of the entities the query names), and their
reciprocal rank fusion for hybrid search. Each ranking runs inside the
tenant and its collections in the index's own query (docs/knowledge.md, "Ranking")."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar
from uuid import UUID

from edrs_vectors import VectorIndex

from edrs_knowledge.embeddings import BatchEmbedder
from edrs_knowledge.graph import query_keys
from edrs_knowledge.keyword import KeywordIndex, terms
from edrs_knowledge.store import PassageRow
from edrs_knowledge.store.postgres import PostgresKnowledgeStore


class Mode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    KEYWORD = "keyword"


@dataclass
class Parts:
    """A passage's place in each ranking: score and 1-based rank (0: not in that ranking)."""

    vector: float = 0.0
    vector_rank: int = 0
    keyword: float = 0.0
    keyword_rank: int = 0
    graph: float = 0.0
    graph_rank: int = 0


@dataclass(frozen=True)
class Result:
    passage: PassageRow
    score: float
    parts: Parts = field(default_factory=Parts)


@dataclass(frozen=True)
class Found:
    """A search's passages, and the best cosine similarity of its vector ranking (None when the
    vector ranking did not run or found nothing): what learning gaps judge a search by."""

    results: list[Result]
    best_similarity: float | None


Id = TypeVar("Id", bound=Hashable)

# Adaptive fusion reads this many of the keyword ranking's first passages for the query's
# coverage (docs/knowledge.md, "Ranking").
COVERAGE_PASSAGES = 10


class Fusion(StrEnum):
    ADAPTIVE = "adaptive"
    RRF = "rrf"


def _normalised(hits: Sequence[tuple[Id, float]], how: str) -> dict[Id, float]:
    """`max`: score / the best score (for BM25, whose least possible score is 0); `minmax`:
    (score - the least) / (the best - the least) over the candidates. The best is 1."""
    if not hits:
        return {}
    scores = [score for _, score in hits]
    high, low = max(scores), (min(scores) if how == "minmax" else 0.0)
    if high <= low:
        return {item: 1.0 for item, _ in hits}
    return {item: (score - low) / (high - low) for item, score in hits}


def query_coverage(query_terms: set[str], passages: Iterable[set[str]]) -> float:
    """The largest share of the query's terms one passage holds (0 for a query of stop words
    only, or no passage)."""
    if not query_terms:
        return 0.0
    return max((len(query_terms & p) / len(query_terms) for p in passages), default=0.0)


def keyword_weight(coverage: float, matched: float, unmatched: float) -> float:
    """The keyword ranking's weight for a query: `unmatched` when no passage holds any of its
    terms, `matched` when one holds them all, linear between."""
    return unmatched + (matched - unmatched) * coverage


def convex_fusion(
    keyword: Sequence[tuple[Id, float]],
    vector: Sequence[tuple[Id, float]],
    graph: Sequence[tuple[Id, float]],
    *,
    keyword_weight: float,
    graph_weight: float,
    keyword_norm: str = "max",
    vector_norm: str = "minmax",
) -> tuple[list[tuple[Id, float]], dict[Id, float]]:
    """score(p) = w·keyword(p) + (1 - w)·vector(p) + graph_weight·graph(p), each ranking's
    scores normalised (keyword: BM25 / the best BM25; vector: min-max over the candidates;
    graph: / the best graph score), 0 where a ranking lacks p. Best first, equal scores by id;
    and each passage's graph term."""
    kw = _normalised(keyword, keyword_norm)
    vec = _normalised(vector, vector_norm)
    graph_terms = {item: graph_weight * v for item, v in _normalised(graph, "max").items()}
    scores: dict[Id, float] = {}
    for item in [*kw, *vec, *graph_terms]:
        scores[item] = (
            keyword_weight * kw.get(item, 0.0)
            + (1 - keyword_weight) * vec.get(item, 0.0)
            + graph_terms.get(item, 0.0)
        )
    return sorted(scores.items(), key=lambda s: (-s[1], str(s[0]))), graph_terms


def reciprocal_rank_fusion(rankings: Sequence[Sequence[UUID]], k: int) -> list[tuple[UUID, float]]:
    """score(p) = Σ over the rankings holding p of 1 / (k + rank of p), ranks from 1; best first,
    equal scores by id. `k` damps the weight of the top ranks (60 in Cormack et al., 2009)."""
    scores: dict[UUID, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda s: (-s[1], str(s[0])))


class Searcher:
    def __init__(
        self,
        store: PostgresKnowledgeStore,
        embedder: BatchEmbedder,
        vectors: VectorIndex,
        keywords: KeywordIndex,
        *,
        rrf_k: int,
        candidates: int,
        graph: bool = True,
        fusion: Fusion = Fusion.ADAPTIVE,
        keyword_weight_matched: float = 0.9,
        keyword_weight_unmatched: float = 0.0,
        graph_weight: float = 0.25,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.vectors = vectors
        self.keywords = keywords
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.graph = graph
        self.fusion = fusion
        self.keyword_weight_matched = keyword_weight_matched
        self.keyword_weight_unmatched = keyword_weight_unmatched
        self.graph_weight = graph_weight

    async def _vector(
        self,
        tenant: str,
        collections: Sequence[UUID],
        query: str,
        k: int,
        documents: Sequence[UUID] | None,
    ) -> list[tuple[UUID, float]]:
        [vector] = await self.embedder.embed([query])
        hits = await self.vectors.search(
            tenant,
            [str(c) for c in collections],
            vector,
            k,
            document_ids=None if documents is None else [str(d) for d in documents],
        )
        return [(h.id, h.score) for h in hits]

    async def _keyword(
        self,
        tenant: str,
        collections: Sequence[UUID],
        query: str,
        k: int,
        documents: Sequence[UUID] | None,
    ) -> list[tuple[UUID, float]]:
        hits = await self.keywords.search(tenant, collections, query, k, documents)
        return [(h.chunk_id, h.score) for h in hits]

    async def _graph(
        self,
        tenant: str,
        collections: Sequence[UUID],
        query: str,
        k: int,
        documents: Sequence[UUID] | None,
    ) -> list[tuple[UUID, float]]:
        return await self.store.graph_passages(tenant, query_keys(query), collections, documents, k)

    async def search(
        self,
        tenant: str,
        collections: Sequence[UUID],
        query: str,
        k: int,
        mode: Mode,
        filters: Mapping[str, Sequence[str]],
    ) -> list[Result]:
        """The `k` best passages of `tenant` in `collections` whose documents pass `filters`."""
        return (await self.find(tenant, collections, query, k, mode, filters)).results

    async def find(
        self,
        tenant: str,
        collections: Sequence[UUID],
        query: str,
        k: int,
        mode: Mode,
        filters: Mapping[str, Sequence[str]],
    ) -> Found:
        """`search`, with the best similarity of the vector ranking."""
        if not collections:
            return Found([], None)
        documents: list[UUID] | None = None
        if filters:
            documents = await self.store.documents_matching(tenant, collections, filters)
            if not documents:
                return Found([], None)
        depth = max(k, self.candidates) if mode is Mode.HYBRID else k
        vector_hits: list[tuple[UUID, float]] = []
        keyword_hits: list[tuple[UUID, float]] = []
        graph_hits: list[tuple[UUID, float]] = []
        if mode is Mode.HYBRID and self.graph:
            vector_hits, keyword_hits, graph_hits = await asyncio.gather(
                self._vector(tenant, collections, query, depth, documents),
                self._keyword(tenant, collections, query, depth, documents),
                self._graph(tenant, collections, query, depth, documents),
            )
        elif mode is Mode.HYBRID:
            vector_hits, keyword_hits = await asyncio.gather(
                self._vector(tenant, collections, query, depth, documents),
                self._keyword(tenant, collections, query, depth, documents),
            )
        elif mode is Mode.VECTOR:
            vector_hits = await self._vector(tenant, collections, query, depth, documents)
        else:
            keyword_hits = await self._keyword(tenant, collections, query, depth, documents)
        parts: dict[UUID, Parts] = {}
        for rank, (chunk_id, score) in enumerate(vector_hits, start=1):
            p = parts.setdefault(chunk_id, Parts())
            p.vector, p.vector_rank = score, rank
        for rank, (chunk_id, score) in enumerate(keyword_hits, start=1):
            p = parts.setdefault(chunk_id, Parts())
            p.keyword, p.keyword_rank = score, rank
        fetched: dict[UUID, PassageRow] = {}
        if mode is Mode.HYBRID and self.fusion is Fusion.ADAPTIVE:
            # How much of the query the best keyword passages hold sets keyword's weight.
            fetched = await self.store.passages(
                tenant, [c for c, _ in keyword_hits[:COVERAGE_PASSAGES]]
            )
            coverage = query_coverage(
                terms(query),
                [
                    terms("\n".join([row.title, *row.chunk.heading_path, row.chunk.text]))
                    for row in fetched.values()
                ],
            )
            ranked, graph_terms = convex_fusion(
                keyword_hits,
                vector_hits,
                graph_hits,
                keyword_weight=keyword_weight(
                    coverage, self.keyword_weight_matched, self.keyword_weight_unmatched
                ),
                graph_weight=self.graph_weight,
            )
        elif mode is Mode.HYBRID:
            ranked = reciprocal_rank_fusion(
                [
                    [c for c, _ in vector_hits],
                    [c for c, _ in keyword_hits],
                    [c for c, _ in graph_hits],
                ],
                self.rrf_k,
            )
            graph_terms = {
                c: 1.0 / (self.rrf_k + rank) for rank, (c, _) in enumerate(graph_hits, start=1)
            }
        else:
            ranked, graph_terms = vector_hits or keyword_hits, {}
        for rank, (chunk_id, _) in enumerate(graph_hits, start=1):
            # The graph part is what the graph ranking adds to the fused score.
            p = parts.setdefault(chunk_id, Parts())
            p.graph, p.graph_rank = graph_terms[chunk_id], rank
        # Passages deleted since the index answered (or not yet written by an ingestion that has
        # upserted their vectors) are skipped: the database is the truth. The vector ranking's
        # first few are read too, for the best similarity of a passage that exists.
        wanted = [c for c, _ in ranked[: k * 2]] + [c for c, _ in vector_hits[:5]]
        rows = fetched | await self.store.passages(
            tenant, [c for c in dict.fromkeys(wanted) if c not in fetched]
        )
        results = [
            Result(rows[chunk_id], score, parts[chunk_id])
            for chunk_id, score in ranked
            if chunk_id in rows
        ]
        best = next((score for chunk_id, score in vector_hits if chunk_id in rows), None)
        return Found(results[:k], best)
