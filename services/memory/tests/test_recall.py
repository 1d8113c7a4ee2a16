"""Recall scoring, as pure functions: relevance, recency, the weighted score and the ranking."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from edrs_memory.embeddings import CachingEmbedder
from edrs_memory.recall import RecallPolicy, RecallWeights, rank, recency, relevance, score
from edrs_memory.store import Episode, RecallCandidate

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def candidate(
    n: int,
    *,
    age: timedelta = timedelta(0),
    importance: float = 0.5,
    similarity: float | None = None,
) -> RecallCandidate:
    episode = Episode(
        id=UUID(int=n),
        persona_id=UUID(int=1000),
        user_id="u",
        text=f"memory {n}",
        importance=importance,
        created_at=NOW - age,
    )
    return RecallCandidate(episode=episode, similarity=similarity)


def test_relevance_is_cosine_similarity_clamped_to_zero_one() -> None:
    assert relevance(0.42) == 0.42
    assert relevance(-0.3) == 0.0
    assert relevance(1.0000001) == 1.0


def test_relevance_without_embedding_is_zero() -> None:
    assert relevance(None) == 0.0


def test_recency_halves_every_half_life() -> None:
    assert recency(timedelta(0), WEEK) == 1.0
    assert recency(WEEK, WEEK) == pytest.approx(0.5)
    assert recency(2 * WEEK, WEEK) == pytest.approx(0.25)
    assert recency(timedelta(days=1), WEEK) == pytest.approx(math.exp(-math.log(2) / 7))


def test_recency_of_a_memory_from_the_future_is_one() -> None:
    assert recency(timedelta(seconds=-5), WEEK) == 1.0


def test_score_is_the_weighted_sum_of_its_parts() -> None:
    parts = score(relevance=0.8, age=WEEK, importance=0.4, policy=RecallPolicy())
    assert parts.relevance == 0.8
    assert parts.recency == pytest.approx(0.5)
    assert parts.importance == 0.4
    assert parts.score == pytest.approx(0.5 * 0.8 + 0.3 * 0.5 + 0.2 * 0.4)


def test_score_uses_the_policy_weights_and_half_life() -> None:
    policy = RecallPolicy(
        weights=RecallWeights(relevance=0, recency=1, importance=0), half_life=timedelta(days=1)
    )
    parts = score(relevance=1.0, age=timedelta(days=1), importance=1.0, policy=policy)
    assert parts.score == pytest.approx(0.5)


def test_a_perfect_memory_scores_one() -> None:
    assert score(
        relevance=1.0, age=timedelta(0), importance=1.0, policy=RecallPolicy()
    ).score == pytest.approx(1.0)


def test_rank_puts_the_relevant_memory_above_a_more_important_one() -> None:
    relevant = candidate(1, similarity=0.6, importance=0.5)
    important = candidate(2, importance=0.9)
    best = rank([important, relevant], now=NOW, limit=10, policy=RecallPolicy())
    assert [s.episode.id for s in best] == [UUID(int=1), UUID(int=2)]


def test_rank_prefers_recent_memories_when_nothing_else_differs() -> None:
    old = candidate(1, age=timedelta(days=30))
    new = candidate(2, age=timedelta(hours=1))
    best = rank([old, new], now=NOW, limit=10, policy=RecallPolicy())
    assert [s.episode.id for s in best] == [UUID(int=2), UUID(int=1)]
    assert best[0].parts.recency > best[1].parts.recency


def test_rank_keeps_only_the_limit_best() -> None:
    candidates = [candidate(n, importance=n / 10) for n in range(1, 10)]
    best = rank(candidates, now=NOW, limit=3, policy=RecallPolicy())
    assert [s.episode.id.int for s in best] == [9, 8, 7]


def test_rank_of_nothing_is_empty() -> None:
    assert rank([], now=NOW, limit=10, policy=RecallPolicy()) == []


class _CountingEmbedder:
    """Stands in for the reasoning service's model in this unit test: it counts what it embeds."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.asked.append(list(texts))
        return [[float(len(t)), 1.0] for t in texts]


async def test_the_embedding_cache_embeds_each_text_once_and_keeps_the_newest() -> None:
    inner = _CountingEmbedder()
    cache = CachingEmbedder(inner, size=2)
    assert await cache.embed(["a", "bb"]) == [[1.0, 1.0], [2.0, 1.0]]
    # A turn's message embedded for recall is free when the turn is stored.
    assert await cache.embed(["bb", "ccc", "ccc"]) == [[2.0, 1.0], [3.0, 1.0], [3.0, 1.0]]
    assert inner.asked == [["a", "bb"], ["ccc"]]
    # "a" was the least recently used of three with room for two.
    await cache.embed(["a"])
    assert inner.asked[-1] == ["a"]
